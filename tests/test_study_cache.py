"""The cached-run rule shared by the studies (bayespref.studies.common.run_status)."""

from __future__ import annotations

import pytest
import yaml

from bayespref.config import TrainConfig, to_dict
from bayespref.studies.common import StudyError, run_status


def _saved(tmp_path, **changes) -> TrainConfig:
    """A finished run of the default config in tmp_path/run, its config.yaml edited."""
    config = TrainConfig(output_dir=str(tmp_path), name="run")
    config.run_dir.mkdir(parents=True)
    saved = to_dict(config)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        if value is None:
            del saved[section][key]
        else:
            saved[section][key] = value
    (config.run_dir / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    (config.run_dir / "summary.json").write_text("{}", encoding="utf-8")
    return config


def test_a_key_added_since_the_run_keeps_it_cached(tmp_path):
    """A run written before an option existed matches when the option is at its default."""
    config = _saved(tmp_path, data__prior=None)  # the saved file lacks data.prior
    assert run_status(config) == "done"


def test_a_new_key_away_from_its_default_is_a_different_config(tmp_path):
    config = _saved(tmp_path, data__prior=None)
    config.data.prior = "dawid-skene"
    with pytest.raises(StudyError, match=r"different config \(keys \['data.prior'\]\)"):
        run_status(config)


def test_a_changed_value_is_a_different_config(tmp_path):
    config = _saved(tmp_path, optim__lr=0.5)
    with pytest.raises(StudyError, match="optim.lr"):
        run_status(config)


def test_a_saved_key_this_version_does_not_know_is_a_different_config(tmp_path):
    config = _saved(tmp_path, optim__retired_option=3)
    with pytest.raises(StudyError, match="optim.retired_option"):
        run_status(config)
