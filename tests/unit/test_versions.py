"""Version parsing is strict and ordering is numeric."""

from __future__ import annotations

import pytest

from upgrader import errors
from upgrader.core.versions import Minor, Version, parse_target


@pytest.mark.parametrize(
    ("text", "expected"), [("1.30.6", (1, 30, 6)), ("v1.30.6", (1, 30, 6)), (" 1.9.0 ", (1, 9, 0))]
)
def test_parse_full(text: str, expected: tuple[int, int, int]) -> None:
    assert Version.parse(text) == Version(*expected)


@pytest.mark.parametrize(
    "text", ["1.30", "1.30.6-rc.1", "1.30.x", "01.30.6", "1.30.6; rm -rf /", "", "v", "1..3", "1.30.6.1"]
)
def test_malformed_versions_are_refused_with_the_string_named(text: str) -> None:
    with pytest.raises(errors.InputError, match="malformed version") as caught:
        Version.parse(text)
    assert caught.value.exit_code == errors.ExitCode.USAGE


def test_ordering_is_numeric() -> None:
    assert Version(1, 9, 0) < Version(1, 10, 0) < Version(1, 10, 1)
    assert Minor(1, 9) < Minor(1, 10)
    assert Minor(1, 30) + 2 == Minor(1, 32) and Minor(1, 32) - 3 == Minor(1, 29)
    assert Minor(1, 30).distance(Minor(1, 33)) == 3


@pytest.mark.parametrize(("text", "expected"), [("1.33", Minor(1, 33)), ("v1.33.4", Version(1, 33, 4))])
def test_parse_target(text: str, expected: object) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["1", "latest", "1.33.4.5", "1.33-x"])
def test_bad_targets(text: str) -> None:
    with pytest.raises(errors.InputError, match="malformed target version"):
        parse_target(text)
