"""TOML configs map onto the frozen dataclasses; unknown keys are refused."""
import dataclasses

import pytest

from minitransformer.config import from_dict
from minitransformer.presets import load_run_config, read_config_file


@dataclasses.dataclass(frozen=True)
class Small:
    a: int = 1
    b: tuple = (1, 2)


def test_from_dict_and_unknown_keys():
    assert from_dict(Small, {"a": 3, "b": [4]}, "x") == Small(3, (4,))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['c'\] in here; allowed: \['a', 'b'\]"):
        from_dict(Small, {"c": 1}, "here")


def test_read_toml(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('preset = "tiny"\n[model]\nn_layer = 3\n')
    assert read_config_file(f) == {"preset": "tiny", "model": {"n_layer": 3}}
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        read_config_file(bad)
    with pytest.raises(FileNotFoundError):
        read_config_file(tmp_path / "none.toml")


def test_a_config_file_names_the_family_and_preset(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('family = "seq2seq"\npreset = "tiny"\n[model]\nd_model = 16\n[train]\nsteps = 3\n')
    family, model_cfg, train_cfg = load_run_config(path=f)
    assert family == "seq2seq" and model_cfg.d_model == 16 and train_cfg.steps == 3
    with pytest.raises(ValueError, match="unknown model family 'no-such-family'"):
        load_run_config("no-such-family")
    with pytest.raises(ValueError, match="unknown preset 'huge' for --model gpt"):
        load_run_config("gpt", "huge")
    with pytest.raises(ValueError, match=r"TrainConfig.steps must be an integer >= 1, got '100'"):
        f.write_text('[train]\nsteps = "100"\n')
        load_run_config(path=f)
