"""Configs: YAML + key=value overrides, typo and type errors, every shipped config parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from bayespref.config import ConfigError, TrainConfig, apply_overrides, load_config, save_config
from bayespref.config.pairwise import PairwiseTrainConfig, load_pairwise_config

CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")
    # preference-model training configs only: study grids (test_study.py), generator
    # calibration configs (test_calibration.py, test_calibration_study.py), the generator
    # evaluation and the pairwise (reward-model) configs have schemas of their own
    if not p.stem.startswith(
        ("study", "calibrat", "evaluate-generator", "pairwise", "annotate", "dpo")
    )
)
PAIRWISE_CONFIGS = sorted(  # train-pairwise configs; pairwise-study*: test_pairwise_study.py
    p
    for p in (Path(__file__).resolve().parents[1] / "configs").glob("pairwise*.yaml")
    if "-study" not in p.stem
)


def test_defaults_are_the_reference_loss():
    config = load_config()
    assert isinstance(config, TrainConfig)
    assert config.loss.name == "forward-kl"
    assert config.loss.normaliser == "batch" and config.loss.detach_target is False
    assert config.data.alpha == 0.1


def test_overrides_use_dotted_paths_and_yaml_values(tmp_path):
    config = load_config(
        None, ["loss.name=jsd", "optim.lr=3e-5", "loss.detach_target=true", "data.train={n: 10}"]
    )
    assert config.loss.name == "jsd"
    assert config.optim.lr == pytest.approx(3e-5)
    assert config.loss.detach_target is True
    assert config.data.train == {"n": 10}


def test_unknown_key_is_an_error_listing_valid_keys():
    with pytest.raises(ConfigError, match=r"optim\.learning_rate.*valid keys here"):
        load_config(None, ["optim.learning_rate=1e-4"])


def test_wrong_type_and_bad_values_are_errors():
    with pytest.raises(ConfigError, match="optim.batch_size"):
        load_config(None, ["optim.batch_size=big"])
    with pytest.raises(ConfigError, match="loss.name must be one of"):
        load_config(None, ["loss.name=kl"])
    with pytest.raises(ConfigError, match="select_metric"):
        load_config(None, ["select_metric=entropy_floor"])  # a reference value, no direction
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides({}, ["loss.name"])


def test_config_round_trips_through_yaml(tmp_path):
    config = load_config(None, ["name=x", "loss.name=soft", "optim.epochs=0.5"])
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_parses(path):
    config = load_config(path)
    assert config.name == path.stem or config.name.startswith(path.stem.split("-")[0])


@pytest.mark.parametrize("path", PAIRWISE_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_pairwise_config_parses(path):
    config = load_pairwise_config(path)
    assert isinstance(config, PairwiseTrainConfig)
    assert config.name == path.stem


def test_a_pairwise_config_is_found():
    assert PAIRWISE_CONFIGS, "configs/pairwise-*.yaml: the README's pairwise quick start uses one"
