"""Prompting experiments on models trained here: task generators and their evaluations.

Each family makes prompts and scores a predictor (prompts -> answers), so a model and a trivial
baseline are scored by the same code:

* ``icl-linear``: in-context linear regression for the vector GPT (`icl_regression.py`);
* ``induction``: repeated random letters, copied by induction heads (`induction.py`);
* ``fewshot``: string functions to be read off demonstrations (`fewshot.py`);
* ``addition`` / ``addition-scratchpad``: addition with and without written steps (`scratchpad.py`);
* ``roles``: a role prefix selects the answer's form (`roles.py`).

`make_prompt_task(name)` builds the training task of a family by name (what
``minitransformer train --task NAME`` calls); an unknown name raises ValueError listing the known ones.
"""
from __future__ import annotations

from .fewshot import FewShotFamily
from .icl_regression import ICLRegressionFamily, ICLRegressionTask
from .induction import InductionFamily
from .roles import RolesFamily
from .scratchpad import AdditionFamily
from .text import TextPromptTask

# --8<-- [start:prompt_tasks]
PROMPT_TASKS = {        # name -> (model family it trains, the task's family of prompts)
    "icl-linear": ("gpt-vector", ICLRegressionFamily),
    "induction": ("gpt", InductionFamily),
    "fewshot": ("gpt", FewShotFamily),
    "addition": ("gpt", lambda: AdditionFamily(scratch=False)),
    "addition-scratchpad": ("gpt", lambda: AdditionFamily(scratch=True)),
    "roles": ("gpt", RolesFamily),
}
# --8<-- [end:prompt_tasks]


def prompt_task_names() -> list[str]:
    return sorted(PROMPT_TASKS)


def model_family_of(name: str) -> str:
    """The model family (`--model`) that task `name` trains."""
    _check_name(name)
    return PROMPT_TASKS[name][0]


def make_prompt_task(name: str, model_family: str | None = None, seed: int = 0):
    """The training task `name`; model_family (if given) must be the one the task trains."""
    _check_name(name)
    needs, make_family = PROMPT_TASKS[name]
    if model_family is not None and model_family != needs:
        raise ValueError(f"task {name!r} trains --model {needs}, not --model {model_family}")
    family = make_family()
    if name == "icl-linear":
        return ICLRegressionTask(family, seed=seed)
    return TextPromptTask(family, seed=seed)


def _check_name(name: str) -> None:
    if name not in PROMPT_TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(prompt_task_names())}")


__all__ = ["PROMPT_TASKS", "make_prompt_task", "model_family_of", "prompt_task_names"]
