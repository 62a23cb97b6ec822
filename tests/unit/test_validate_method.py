"""Method names and params checked before a job exists: the error names every method the caller may use."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.services import validate_method


def test_an_unknown_method_where_auto_is_allowed_lists_auto_among_the_valid_names():
    with pytest.raises(InvalidInput) as raised:
        validate_method("fine_tune", None, allow_auto=True)
    valid = str(raised.value).split("valid: ", 1)[1].split(", ")
    assert raised.value.field == "method" and "auto" in valid and "finetune" in valid
    assert valid == sorted(valid)


def test_where_auto_is_not_allowed_it_is_neither_accepted_nor_listed():
    with pytest.raises(InvalidInput) as raised:
        validate_method("auto", None)
    assert "unknown method 'auto'" in str(raised.value)
    assert "auto" not in str(raised.value).split("valid: ", 1)[1].split(", ")


def test_auto_params_are_filled_with_their_defaults():
    params = validate_method("auto", {"budget": 0.05}, allow_auto=True)
    assert params["budget"] == 0.05 and "trials" in params
