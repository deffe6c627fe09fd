"""The prompting task generators and their evaluations (tasks/prompting): the prompts are what they
claim, the reference estimators match their closed forms, a perfect predictor scores 1, and a
model that always answers the same scores the chance level computed here from the data."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.models.gpt_vector import VectorGPT, VectorGPTConfig
from minitransformer.models.model import IGNORE_INDEX, Model
from minitransformer.nn.module import Parameter
from minitransformer.tasks.prompting import make_prompt_task, model_family_of, prompt_task_names
from minitransformer.tasks.prompting import fewshot, icl_regression, induction, roles, scratchpad
from minitransformer.tasks.prompting.text import (STOP, Segment, encode_examples, greedy_completions,
                                                  model_predictor, teacher_forced_exact_match)


class ConstantModel(Model):
    """Always predicts the token `token`, whatever the input: a model that always answers the same."""

    can_generate = True

    def __init__(self, vocab_size: int, token: int, block_size: int = 128):
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab_size, block_size=block_size)
        self.dummy = Parameter(np.zeros(1, np.float32))
        self.token, self.cache = token, None

    def forward(self, idx, targets=None, kv_caches=None):
        xp = backend.get_array_module(idx)
        logits = xp.zeros((*idx.shape, self.config.vocab_size), np.float32)   # (B, T, V)
        logits[..., self.token] = 1.0
        return logits, None


# -- text prompts ---------------------------------------------------------------------------
def test_only_answers_are_targets():
    task = make_prompt_task("roles")
    tok = task.tokenizer
    x, y = encode_examples([[Segment("[terse]ab?", False), Segment("2;", True)],
                            [Segment("[list]abc?", False), Segment("a,b,c;", True)]], tok, 64)
    assert x.shape == y.shape == (2, len("[list]abc?a,b,c;") - 1)
    assert tok.decode(y[0][y[0] != IGNORE_INDEX]) == "2;"
    assert tok.decode(y[1][y[1] != IGNORE_INDEX]) == "a,b,c;"
    assert tok.decode(x[0][:11]) == "[terse]ab?2"                       # input t predicts target t
    assert y[0][9] == tok.encode("2")[0] and y[0][8] == IGNORE_INDEX
    with pytest.raises(ValueError, match="does not fit"):
        encode_examples([[Segment("a" * 70, True)]], tok, 64)


def test_greedy_completions_equal_generate(device):
    from minitransformer.generate import generate
    task = make_prompt_task("roles")
    model = GPT(task.adapt(GPTConfig(n_layer=1, n_head=2, d_model=16, block_size=40)), seed=3).to(device)
    prompts = ["[terse]abc?", "[verbose]ab?"]                           # two lengths in one batch
    got = greedy_completions(model, task.tokenizer, prompts, 8, stop=None)
    for prompt, text in zip(prompts, got):
        ids = backend.to_device(task.tokenizer.encode(prompt)[None].astype(np.int64), device)
        want = task.tokenizer.decode(backend.to_numpy(generate(model, ids, 8, greedy=True))[0][len(prompt):])
        assert text == want


def test_teacher_forced_exact_match_of_a_constant_model():
    task = make_prompt_task("roles")
    tok = task.tokenizer
    examples = [[Segment("[terse]ab?", False), Segment("2;", True)],
                [Segment("[terse]abc?", False), Segment("3;", True)],
                [Segment("[list]a?", False), Segment(";", True)]]
    x, y = encode_examples(examples, tok, 40)
    semicolon = ConstantModel(tok.vocab_size, int(tok.encode(";")[0]))
    assert teacher_forced_exact_match(semicolon, x, y) == pytest.approx(1 / 3)   # only the empty answer
    assert greedy_completions(semicolon, tok, ["[terse]ab?"], 5) == [""]
    two = ConstantModel(tok.vocab_size, int(tok.encode("2")[0]))
    assert teacher_forced_exact_match(two, x, y) == 0.0                  # "2" then not ";"
    assert greedy_completions(two, tok, ["[terse]ab?"], 5) == ["22222"]


def test_task_names_resolve_and_unknown_names_list_the_known():
    assert set(prompt_task_names()) == {"icl-linear", "induction", "fewshot", "addition",
                                        "addition-scratchpad", "roles"}
    assert model_family_of("icl-linear") == "gpt-vector" and model_family_of("roles") == "gpt"
    with pytest.raises(ValueError, match="unknown task 'sorting'; known tasks: addition, "):
        make_prompt_task("sorting")
    with pytest.raises(ValueError, match="trains --model gpt-vector, not --model gpt"):
        make_prompt_task("icl-linear", "gpt")
    with pytest.raises(ValueError, match="needs block_size >= 90"):
        make_prompt_task("fewshot").adapt(GPTConfig(block_size=32))


# -- in-context regression ------------------------------------------------------------------
def test_icl_prompt_layout():
    fam = icl_regression.ICLRegressionFamily(dim=3, n_points=5)
    xs, ys = fam.sample(np.random.default_rng(0), 2)
    inputs, targets, weights = fam.encode(xs, ys)
    assert inputs.shape == (2, 10, 4) and targets.shape == (2, 10, 1) and weights.shape == (2, 10)
    np.testing.assert_array_equal(inputs[:, 0::2, :3], xs)
    np.testing.assert_array_equal(inputs[:, 1::2, 3], ys)
    assert not inputs[:, 0::2, 3].any() and not inputs[:, 1::2, :3].any()
    np.testing.assert_array_equal(targets[:, 0::2, 0], ys)
    np.testing.assert_array_equal(weights, np.tile([1.0, 0.0], (2, 5)))


def test_icl_baselines_match_their_closed_forms():
    d = 4
    fam = icl_regression.ICLRegressionFamily(dim=d, n_points=10)
    for name, predictor, expected in (("least squares", icl_regression.least_squares_predictor,
                                       icl_regression.least_squares_expected),
                                      ("averaging", icl_regression.averaging_predictor,
                                       icl_regression.averaging_expected)):
        mean, se = icl_regression.errors_by_k(predictor, fam, n_prompts=3000, seed=1)
        for k in range(10):
            assert abs(mean[k] - expected(k, d)) < 5 * se[k] + 1e-9, (name, k, mean[k], expected(k, d))
    mean, _ = icl_regression.errors_by_k(icl_regression.least_squares_predictor, fam, n_prompts=50, seed=2)
    assert mean[d:].max() < 1e-20                                        # exact once k >= d


def test_icl_constant_predictor_scores_the_mean_square():
    fam = icl_regression.ICLRegressionFamily(dim=3, n_points=6)
    mean, _ = icl_regression.errors_by_k(lambda xs, ys, f: np.zeros_like(ys), fam, n_prompts=500, seed=4)
    _, ys = fam.sample(np.random.default_rng(4), 500)                    # the same prompts
    np.testing.assert_allclose(mean, (ys ** 2).mean(0) / 3)


def test_icl_model_prediction_never_sees_its_own_answer(device):
    fam = icl_regression.ICLRegressionFamily(dim=3, n_points=5)
    model = VectorGPT(VectorGPTConfig(n_in=4, block_size=10, n_layer=1, d_model=16), seed=0).to(device)
    xs, ys = fam.sample(np.random.default_rng(5), 3)
    predict = icl_regression.model_icl_predictor(model)
    before = predict(xs, ys, fam)
    changed = ys.copy()
    changed[:, 2] += 10.0                                                # y_2 changes ...
    after = predict(xs, changed, fam)
    np.testing.assert_allclose(after[:, :3], before[:, :3], rtol=1e-5)   # ... not the predictions up to it
    assert np.abs(after[:, 3:] - before[:, 3:]).max() > 1e-4             # but those after it


# -- induction ------------------------------------------------------------------------------
def test_induction_sequences_repeat_and_scored_positions():
    fam = induction.InductionFamily(seq_len=32, min_repeat=6, max_repeat=10)
    rng = np.random.default_rng(0)
    lengths, prefixes = set(), set()
    for _ in range(200):
        text, k, m = fam.sequence(rng)
        row = np.array([induction.LETTERS.index(c) for c in text])
        lengths.add(k)
        prefixes.add(m)
        np.testing.assert_array_equal(row[m + k:m + 2 * k], row[m:m + k])        # the repeat
        mask = fam.scored_targets(row, k, m)
        for t in range(len(row) - 1):                                          # target t is row[t + 1]
            in_copy = m + k <= t <= m + 2 * k - 2
            once = (row[:m + k] == row[t]).sum() == 1                         # earlier occurrence unambiguous
            assert mask[t] == (in_copy and once)
    assert lengths == set(range(6, 11)) and len(prefixes) > 5                  # both vary
    ids, n, scored = fam.batch(np.random.default_rng(1), 300)
    assert len(set(ids.ravel())) == 26                                          # letters repeat freely
    assert 0 < scored.sum(1).mean() < 9
    rng = np.random.default_rng(2)
    segments = fam.sample(rng, "train")
    text, k, m = fam.sequence(np.random.default_rng(2))                    # the same draws
    assert [s.scored for s in segments] == [False, True, False]
    assert "".join(s.text for s in segments) == text and segments[1].text == text[m + k + 1:m + 2 * k]


def test_induction_task_defeats_position_only_strategies():
    ids, n, scored = induction.InductionFamily().batch(np.random.default_rng(3), 2000)
    best = induction.best_position_only_accuracy(ids, scored)
    assert best < 0.22                      # ~0.19: about 1 / (the spread of n) plus 1/26, chosen in hindsight
    # a generator that fixes the repeat length leaks the answer's position: the same strategy wins
    fixed = induction.InductionFamily(seq_len=40, min_repeat=10, max_repeat=10)
    ids_f, _, scored_f = fixed.batch(np.random.default_rng(3), 300)
    assert induction.best_position_only_accuracy(ids_f, scored_f) == 1.0


def test_induction_task_defeats_seen_once_strategies():
    """The old generator drew all letters before the second copy distinct, so "a letter seen only
    once" found the answer often; with letters drawn freely, it is close to chance."""
    ids, _, scored = induction.InductionFamily().batch(np.random.default_rng(4), 300)
    hits = []
    for row, mask in zip(ids, scored):
        for t in np.nonzero(mask)[0]:
            seen, answer = row[:t + 1], row[t + 1]
            once = [c for c in set(seen.tolist()) if (seen == c).sum() == 1]
            hits.append((answer in once) / max(len(once), 1))
    assert np.mean(hits) < 0.15                       # ~0.11 (the old generator: 0.20)


def test_induction_constant_and_perfect_predictors():
    fam = induction.InductionFamily()
    ids, n, scored = fam.batch(np.random.default_rng(1), 300)
    for token in (0, 7):
        chance = float((ids[:, 1:][scored] == token).mean())              # computed from the data
        model = ConstantModel(len(fam.chars), token, block_size=fam.seq_len)
        assert induction.induction_accuracy(induction.model_next_tokens(model), ids, scored) == chance
    assert 0 < chance < 0.1

    def copier(inputs):                                                  # look back n - 1 positions
        out = np.zeros_like(inputs)
        for b, k in enumerate(n):
            out[b, k - 1:] = inputs[b, :len(inputs[b]) - k + 1]
        return out
    assert induction.induction_accuracy(copier, ids, scored) == 1.0


def test_head_scores_find_previous_token_and_induction_patterns():
    T, n = 12, np.array([4, 5])
    scored = np.zeros((2, T), bool)
    scored[0, 6:9] = True                                                # queries of a_1..a_3
    scored[1, 4:8] = True
    prev = np.zeros((2, 1, T, T))
    prev[:, 0, 0, 0] = 1.0
    prev[:, 0, np.arange(1, T), np.arange(T - 1)] = 1.0
    ind = np.zeros((2, 1, T, T))
    for b, k in enumerate(n):
        ind[b, 0, np.arange(T), np.arange(T)] = 1.0
        q = np.nonzero(scored[b])[0]
        ind[b, 0, q, :] = 0.0
        ind[b, 0, q, q - k + 1] = 1.0
    s_prev, s_ind = induction.head_scores(prev, n, scored), induction.head_scores(ind, n, scored)
    assert s_prev["previous_token"] == [1.0] and s_prev["induction"][0] < 0.5
    assert s_ind["induction"] == [1.0] and s_ind["previous_token"][0] < 0.5
    none = scored.copy()
    none[1] = False                                                      # a sequence with no scored target
    assert induction.head_scores(ind, n, none)["induction"] == [1.0]     # is left out, not averaged in
    with pytest.raises(ValueError, match="no scored query"):
        induction.head_scores(ind, n, np.zeros_like(scored))


def test_weight_back_reads_a_fixed_offset_and_skips_missing_keys():
    T = 12
    scored = np.zeros((2, T), bool)
    scored[0, [2, 6]] = True
    scored[1, 8] = True
    back5 = np.zeros((2, 2, T, T))
    back5[:, 0, np.arange(T), np.arange(T)] = 1.0                        # head 0 on itself
    back5[:, 1, np.arange(5, T), np.arange(T - 5)] = 1.0                 # head 1 five back, where it can
    back5[:, 1, 1:5, 0] = 1.0                                            # (and on the first before)
    back5[:, 1, 0, 0] = 1.0
    # query 2 has no key 5 back and is left out; queries 6 and 8 put head 1's weight there
    assert induction.weight_back(back5, scored, 5).tolist() == [0.0, 1.0]
    assert induction.weight_back(back5, scored, 0).tolist() == [1.0, 0.0]
    assert induction.weight_back(back5, scored, np.array([5, 0])).tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="no scored query has a key 9"):
        induction.weight_back(back5, scored, 9)


# -- few-shot -------------------------------------------------------------------------------
def _solve_fewshot(prompt: str) -> str:
    """A perfect few-shot learner: the first function that fits every demonstration."""
    *demos, query = prompt.split(";")
    functions = {**fewshot.TRAINING_FUNCTIONS, fewshot.HELD_OUT_FUNCTION[0]: fewshot.HELD_OUT_FUNCTION[1]}
    pairs = [d.split(">") for d in demos]
    for f in functions.values():
        if all(f(a) == b for a, b in pairs):
            return f(query.rstrip(">"))
    return ""


def test_fewshot_functions_and_held_out_queries():
    fam = fewshot.FewShotFamily()
    assert fewshot.TRAINING_FUNCTIONS["shift"]("aij") == "bja"
    assert fewshot.TRAINING_FUNCTIONS["count"]("abcd") == "4"
    assert fewshot.HELD_OUT_FUNCTION[1]("abcd") == "bcd"
    rng = np.random.default_rng(0)
    for _ in range(300):
        segments = fam.sample(rng, "train")
        strings = [s.text[:-1] for s in segments if not s.scored]
        assert not any(fewshot.is_held_out(s) for s in strings)          # training never sees them
    pairs = fam.eval_set(fewshot.TRAINING_FUNCTIONS["reverse"], 3, 50, seed=1)
    for prompt, answer in pairs:
        query = prompt.split(";")[-1][:-1]
        assert prompt.count(";") == 3 and fewshot.is_held_out(query) and answer == query[::-1]
    assert 0.2 < np.mean([fewshot.is_held_out(fam.random_string(rng, None)) for _ in range(2000)]) < 0.3


def test_fewshot_evaluation_perfect_and_constant():
    fam = fewshot.FewShotFamily()
    table = fewshot.evaluate_fewshot(lambda ps: [_solve_fewshot(p) for p in ps], fam, ks=(8,), n=40)
    assert all(row[8] >= 0.9 for row in table.values())              # 8 demos almost always decide
    table = fewshot.evaluate_fewshot(lambda ps: ["3"] * len(ps), fam, ks=(0, 2), n=100, seed=5)
    for f_index, (name, function) in enumerate([*fewshot.TRAINING_FUNCTIONS.items(), fewshot.HELD_OUT_FUNCTION]):
        for k in (0, 2):
            answers = [a for _, a in fam.eval_set(function, k, 100, seed=5 + 1000 * f_index + k)]
            assert table[name][k] == np.mean([a == "3" for a in answers])   # chance: how often "3" is right
    assert table["count"][0] > 0.2 and table["copy"][0] == 0.0


# -- addition with and without a scratchpad --------------------------------------------------
def test_scratchpad_steps_and_answers():
    assert scratchpad.scratchpad("357", "486") == "7+6+0=13,5+8+1=14,3+4+1=08"
    assert scratchpad.total("357", "486") == "0843" and scratchpad.total("99", "01") == "100"
    with_steps, direct = scratchpad.AdditionFamily(True), scratchpad.AdditionFamily(False)
    assert with_steps.completion("357", "486") == "7+6+0=13,5+8+1=14,3+4+1=08>0843;"
    assert direct.completion("357", "486") == "0843;"
    assert scratchpad.final_answer("7+6+0=13>0843") == "0843" == scratchpad.final_answer("0843")
    seg = with_steps.sample(np.random.default_rng(0), "train")
    assert not seg[0].scored and seg[0].text.endswith("=") and seg[1].scored and seg[1].text.endswith(STOP)


def test_addition_evaluation_perfect_and_constant():
    fam = scratchpad.AdditionFamily(scratch=True)

    def oracle(prompts):
        return [fam.completion(*p[:-1].split("+"))[:-1] for p in prompts]
    assert scratchpad.evaluate_addition(oracle, fam, [1, 4], n=50) == {1: 1.0, 4: 1.0}
    table = scratchpad.evaluate_addition(lambda ps: ["10"] * len(ps), fam, [1, 2], n=400, seed=3)
    rng = np.random.default_rng(3 + 1)                                  # the 1-digit prompts, again
    sums = [int(a) + int(b) for a, b in (fam.operands(rng, 1) for _ in range(400))]
    assert table[1] == np.mean([s == 10 for s in sums]) > 0              # chance of "10": P(a+b=10)
    assert table[2] == 0.0                                               # 2-digit sums have 3 digits


# -- role prompts ---------------------------------------------------------------------------
def test_role_formats():
    for role, answer in roles.ROLES.items():
        assert roles.answer_format(answer("badge"[:4])) == role
    assert roles.answer_format("bad has 3") is None and roles.answer_format("") is None


def test_role_evaluation_perfect_and_constant():
    fam = roles.RolesFamily()
    pairs = fam.eval_set(80, seed=0)

    def oracle(prompts):
        return [roles.ROLES[p[1:p.index("]")]](p[p.index("]") + 1:-1]) if p.startswith("[") else "2"
                for p in prompts]
    result = roles.evaluate_roles(oracle, pairs)
    assert result["follow_rate"] == result["correct_rate"] == 1.0 and result["no_role_forms"] == {"terse": 20}
    result = roles.evaluate_roles(lambda ps: ["4"] * len(ps), pairs)
    with_role = [(r, w) for r, w in pairs if r is not None]
    assert result["follow_rate"] == np.mean([r == "terse" for r, _ in with_role]) == 1 / 3   # chance
    assert result["correct_rate"] == np.mean([r == "terse" and len(w) == 4 for r, w in with_role])
    model = ConstantModel(len(fam.chars), fam.chars.index(";"))
    predict = model_predictor(model, make_prompt_task("roles").tokenizer, fam.max_new_tokens())
    assert roles.evaluate_roles(predict, pairs)["follow_rate"] == 0.0   # "" has no role's form
