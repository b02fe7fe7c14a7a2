"""The JSON form of stored values: what `GET` returns and what change objects carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.models.rows import format_date, json_number, parse_date


@pytest.mark.parametrize(
    ("stored", "text"),
    [
        (datetime(2026, 11, 28, 0, 1, 1, 123456), "2026-11-28T00:01:01.123Z"),
        (datetime(5, 1, 2, 3, 4, 5), "0005-01-02T03:04:05.000Z"),
        (datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "2026-01-01T00:00:00.000Z"),
    ],
)
def test_dates_print_like_javascript_and_read_back(stored: datetime, text: str) -> None:
    assert format_date(stored) == text
    assert format_date(parse_date(text)) == text


def test_dates_from_milliseconds_and_offsets() -> None:
    assert parse_date(0) == datetime(1970, 1, 1)
    assert parse_date("2026-11-28T01:00:00+01:00") == datetime(2026, 11, 28, 0, 0)
    assert parse_date("2026-11-28T00:00:00.123456Z").microsecond == 123000
    assert parse_date(datetime.now(UTC).timestamp() * 1000).tzinfo is None
    for bad in (True, "yesterday", None, float("nan")):
        with pytest.raises((ValueError, TypeError)):
            parse_date(bad)


def test_numbers_without_a_fraction_print_as_integers() -> None:
    assert (json_number(3.0), json_number(2.5), json_number(2.0**60)) == (3, 2.5, 2.0**60)
    assert isinstance(json_number(3.0), int)
