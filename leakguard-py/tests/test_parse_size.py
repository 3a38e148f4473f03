"""parse_size: the core's parser of sizes, and its errors as Python exceptions."""

from __future__ import annotations

import pytest

import leakguard


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * 2**20),
        ("512Mi", 512 * 2**20),
        ("2G", 2 * 2**30),
        ("3584m", 3584 * 2**20),
        ("1.5GiB", 3 * 2**29),
        ("500MB", 500_000_000),
        ("1048576", 2**20),
        (" 256 MiB ", 256 * 2**20),
        ("1TiB", 2**40),
    ],
)
def test_sizes_in_every_documented_spelling(text: str, expected: int) -> None:
    assert leakguard.parse_size(text) == expected


def test_sizes_beyond_32_bits_stay_exact() -> None:
    assert leakguard.parse_size("16383TiB") == 16383 * 2**40


def test_bad_size_raises_config_error_naming_setting_and_value() -> None:
    with pytest.raises(leakguard.ConfigError) as info:
        leakguard.parse_size("12 parsecs", "LEAKGUARD_LIMIT")
    message = str(info.value)
    assert "LEAKGUARD_LIMIT" in message
    assert '"12 parsecs"' in message


def test_default_setting_name_is_size() -> None:
    with pytest.raises(leakguard.ConfigError, match=r'invalid value "lots" for size'):
        leakguard.parse_size("lots")


def test_config_error_is_a_leakguard_error_and_a_value_error() -> None:
    assert issubclass(leakguard.ConfigError, leakguard.LeakguardError)
    assert issubclass(leakguard.ConfigError, ValueError)
    assert issubclass(leakguard.LeakguardError, Exception)
    assert not issubclass(leakguard.LeakguardError, ValueError)
    with pytest.raises(ValueError):
        leakguard.parse_size("-5m")
    with pytest.raises(leakguard.LeakguardError):
        leakguard.parse_size("99999999999999999999")


def test_exceptions_live_in_the_leakguard_namespace() -> None:
    assert leakguard.ConfigError.__module__ == "leakguard"
    assert leakguard.LeakguardError.__module__ == "leakguard"
    assert leakguard.ConfigError.__doc__
    assert leakguard.LeakguardError.__doc__


@pytest.mark.parametrize("bad", [None, 512, b"512MiB"])
def test_non_string_values_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        leakguard.parse_size(bad)  # type: ignore[arg-type]
