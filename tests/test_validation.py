"""ca/validation.py: pydantic's errors worded for the operator, the same for every input."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import pytest
from pydantic import AfterValidator, Field, ValidationError, model_validator

from ca.errors import ConfigurationError, ProfileError
from ca.settings import Settings
from ca.validation import FieldError, InputModel, NonBlank, Where, format_loc, issues


def _no_duplicates(items: list[str]) -> list[str]:
    for i, item in enumerate(items):
        if item in items[:i]:
            raise FieldError(f"{item} listed twice", i)
    return items


class Inner(InputModel):
    key_order: ClassVar[tuple[str, ...]] = ("low", "high")

    high: int = Field(ge=1)
    low: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Inner:
        if self.low > self.high:
            raise FieldError(f"{self.low} exceeds high {self.high}", "low")
        return self


class Outer(InputModel):
    name: NonBlank
    flag: bool = False
    colour: Literal["red", "green"] = "red"
    tags: Annotated[list[NonBlank], AfterValidator(_no_duplicates)] = []
    inner: Inner | None = None
    items: list[Inner] = []


def first(data: object) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    issue = issues(info.value, Outer)[0]
    return issue.path, issue.message


@pytest.mark.parametrize("data,path,message", [
    ({"name": "x", "flag": "yes please"}, "flag",
     "expected true or false, got a string 'yes please'"),
    ({"name": "x", "inner": {"low": "365", "high": 400}}, "inner.low",
     "expected an integer, got a string '365'"),
    ({"name": "x", "inner": {"low": True, "high": 1}}, "inner.low",
     "expected an integer, got a boolean True"),
    ({"name": 5}, "name", "expected a string, got an integer 5"),
    ({"name": "  "}, "name", "must not be empty"),
    ({"name": "x", "colour": "gren"}, "colour",
     "'gren' is not one of red, green (did you mean 'green'?)"),
    ({"name": "x", "colour": 3}, "colour", "expected a string, got an integer 3"),
    ({"name": "x", "tags": ["a", "b", "a"]}, "tags[2]", "a listed twice"),
    ({"name": "x", "items": [{"low": 1, "high": 2}, {"low": 3, "high": 2}]}, "items[1].low",
     "3 exceeds high 2"),
    ({"name": "x", "items": [{"low": 1, "high": 2}, {"lwo": 3, "high": 2}]}, "items[1]",
     "unknown key 'lwo' (did you mean 'low'?); allowed: low, high"),
    ({"name": "x", "inner": {}}, "inner", "missing required key 'low'"),
    ({"name": "x", "inner": []}, "inner", "expected a mapping, got a list []"),
    ({"name": "x", 1: 2}, "", "key 1 is not a string"),
])
def test_messages(data: object, path: str, message: str) -> None:
    assert first(data) == (path, message)


def test_a_mappings_keys_come_before_its_fields() -> None:
    """Pydantic lists unknown keys last; a reader (and tincay before pydantic) checks them first,
    and a nested mapping's errors still come in field order."""
    assert first({"name": 5, "flga": True}) == (
        "", "unknown key 'flga' (did you mean 'flag'?); allowed: name, flag, colour, tags, "
            "inner, items")
    assert first({"name": "x", "inner": {"low": "1"}, "items": [{"x": 1}]}) == (
        "inner", "missing required key 'high'")


def test_format_loc() -> None:
    assert format_loc(("subject", 2, "patterns", 0)) == "subject[2].patterns[0]"
    assert format_loc(()) == ""


def test_where_names_file_and_profile() -> None:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate({"name": "x", "flag": 1})
    error = Where("p/x.yaml", "x").invalid(info.value, Outer)
    assert isinstance(error, ProfileError)
    assert str(error) == "p/x.yaml: profile x: flag: expected true or false, got an integer 1"


def test_models_are_frozen() -> None:
    outer = Outer.model_validate({"name": "x"})
    with pytest.raises(ValidationError):
        outer.name = "y"  # type: ignore[misc]


def test_settings_name_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="^TINCAY_HOME: expected a string, got an "
                                                 "integer 5$"):
        Settings.from_env({"TINCAY_HOME": 5})  # type: ignore[dict-item]
    settings = Settings.from_env({"TINCAY_PKCS11_TOKEN": "", "TINCAY_PUBLIC_URL": "http://x/"})
    assert settings.pkcs11_token == "tincay" and settings.public_url == "http://x"
