"""Config loading: unknown keys, wrong types and ranges, env substitution, secrets kept out."""

from __future__ import annotations

import pytest

from configs.loader import ConfigError, load_config, parse_config

ROOT_CONFIG = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def _write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_default_config_is_valid(monkeypatch):
    monkeypatch.setenv("EMP_HOME", "/tmp/emp-home-x")
    cfg = load_config(ROOT_CONFIG)
    assert str(cfg.home) == "/tmp/emp-home-x"
    assert cfg.data.symbols["SP500"].calendar == "nyse"
    assert cfg.store_root().name == "history"


def test_unknown_key_names_file_and_dotted_path(tmp_path):
    path = _write(tmp_path, "data:\n  quality:\n    max_abs_log_retrun: 0.2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: data.quality.max_abs_log_retrun: unknown key" in str(err.value)


def test_wrong_type_and_range_name_the_key(tmp_path):
    path = _write(tmp_path, "data:\n  symbols:\n    X:\n      asset_class: fx\n"
                            "      tick_size: -1\n      min_lot: lots\n      calendar: fx\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "data.symbols.X.tick_size: Input should be greater than 0 (got -1)" in msg
    assert "data.symbols.X.min_lot:" in msg and "'lots'" in msg


def test_cross_field_rule_is_reported(tmp_path):
    path = _write(tmp_path, "data:\n  symbols:\n    X:\n      asset_class: fx\n      tick_size: 1e-5\n"
                            "      min_lot: 1000\n      calendar: fx\n      costs: {unit: pips}\n")
    with pytest.raises(ConfigError, match=r"data\.symbols\.X\.costs: .*pip_size is required"):
        load_config(path)


def test_unknown_quality_rule_and_bare_yaml_off(tmp_path):
    path = _write(tmp_path, "data:\n  quality:\n    severity: {gaps: off}\n")
    with pytest.raises(ConfigError, match=r"data\.quality: .*unknown quality rule"):
        load_config(path)
    cfg = load_config(_write(tmp_path, "data:\n  quality:\n    severity: {gap: off}\n"))
    assert cfg.data.quality.level("gap") == "off"
    assert cfg.data.quality.level("non_finite") == "error"


def test_env_substitution_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("EMP_TEST_STORE", "/data/store")
    monkeypatch.delenv("EMP_TEST_UNSET", raising=False)
    path = _write(tmp_path, "home: ${EMP_TEST_UNSET:-/srv/emp}\ndata:\n  store: ${EMP_TEST_STORE}/h\n")
    cfg = load_config(path)
    assert str(cfg.home) == "/srv/emp" and str(cfg.data.store) == "/data/store/h"


def test_missing_env_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("EMP_NOT_SET_ANYWHERE", raising=False)
    path = _write(tmp_path, "data:\n  store: ${EMP_NOT_SET_ANYWHERE}/x\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "data.store: environment variable EMP_NOT_SET_ANYWHERE is not set" in str(err.value)


def test_secret_values_never_appear_in_errors():
    with pytest.raises(ConfigError) as err:
        parse_config({"data": {"api_password": "hunter2"}}, "x.yaml")
    assert "hunter2" not in str(err.value)
    assert "data.api_password: unknown key" in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    path = _write(tmp_path, "data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: not valid YAML"):
        load_config(path)
