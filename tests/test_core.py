"""core/: the shared JSON helpers and the user-facing error type."""

from __future__ import annotations

import math

import pytest

from core.errors import EmpError
from core.jsonio import json_float, read_json, write_json


def test_json_round_trip_and_clear_errors(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json(path, {"a": [1, 2.5, "s"]}, indent=1)
    assert read_json(path) == {"a": [1, 2.5, "s"]}
    assert not list(path.parent.glob("*.tmp-*"))
    path.write_text('{"a": ')
    with pytest.raises(EmpError, match=r"x\.json: unreadable"):
        read_json(path)

    class Mine(EmpError):
        pass

    with pytest.raises(Mine, match=r"missing\.json"):
        read_json(tmp_path / "missing.json", Mine)


def test_json_float_writes_non_finite_values_as_text():
    assert json_float(1.5) == 1.5 and isinstance(json_float(1), float)
    assert [json_float(v) for v in (math.nan, math.inf, -math.inf)] == ["nan", "inf", "-inf"]


def test_emp_error_exit_code():
    assert EmpError("x").exit_code == 2 and EmpError("x", exit_code=3).exit_code == 3
