"""whole_number: the one parser of numbers that come from outside (object names, headers,
URLs, settings), which must never raise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vault.units import whole_number


@given(st.text(max_size=30))
def test_any_text_is_a_number_or_none_never_an_exception(text: str) -> None:
    value = whole_number(text)
    plain = text != "" and all(c in "0123456789" for c in text) and len(text) <= 18
    assert value == (int(text) if plain else None)


@given(st.integers(min_value=0, max_value=10**18 - 1))
def test_a_number_written_plainly_reads_back(number: int) -> None:
    assert whole_number(str(number)) == number


def test_unicode_digits_signs_spaces_and_huge_numbers_are_refused() -> None:
    for text in ("²", "٣", "１２", " 1", "1 ", "+1", "-1", "1_000", "9" * 5000, "9" * 19):
        assert whole_number(text) is None, text
    assert whole_number("12345", 4) is None and whole_number("1234", 4) == 1234
