"""The continuity rule, case by case (pure: no broker): positions, the chain check, epochs, and where a
stream continues after a reset."""

from __future__ import annotations

import pytest

from gateway.broker.base import Entry, StreamHead
from gateway.broker.continuity import (
    EPOCH_LENGTH,
    ZERO_OFFSET,
    Discontinuity,
    Position,
    chained,
    check_entry,
    check_head,
    check_resume,
    format_position,
    new_epoch,
    offset_key,
)

EPOCH = "abcd2345"
OTHER = "wxyz6789"


def entry(offset: str, prev: str, epoch: str = EPOCH) -> Entry:
    return Entry(
        offset=offset, prev=prev, epoch=epoch, outbox_id=1, change=b"{}", before=None, committed_at=0
    )


def test_new_epochs_are_valid_positions_and_differ() -> None:
    epochs = {new_epoch() for _ in range(10_000)}
    assert len(epochs) == 10_000
    for epoch in epochs:
        assert len(epoch) == EPOCH_LENGTH
        assert Position.parse(f"{epoch}-1-0") == Position(epoch, "1-0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{EPOCH}-0-0", Position(EPOCH, "0-0")),
        (f"{EPOCH}-1796292830575-12", Position(EPOCH, "1796292830575-12")),
        (f" {EPOCH}-5-1\n", Position(EPOCH, "5-1")),  # a header value's whitespace
        (
            f"{EPOCH}-18446744073709551615-18446744073709551615",
            Position(EPOCH, "18446744073709551615-18446744073709551615"),
        ),
    ],
)
def test_positions_parse_and_format_back(text: str, expected: Position) -> None:
    assert Position.parse(text) == expected
    assert str(expected) == format_position(expected.epoch, expected.offset)
    assert Position.parse(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        EPOCH,
        f"{EPOCH}-",
        f"{EPOCH}-1",
        f"{EPOCH}-1-",
        f"{EPOCH}--1-0",
        f"{EPOCH}-1-0-0",
        f"{EPOCH}-+1-0",
        f"{EPOCH}-1_000-0",
        f"{EPOCH}-18446744073709551616-0",  # 2^64: Redis cannot read it
        f"{EPOCH}-0-18446744073709551616",
        f"{EPOCH}-" + "9" * 400 + "-0",
        f"{EPOCH}-\u0661-0",  # an Arabic-Indic digit: str.isdigit() says yes, Redis says no
        f"{EPOCH}-1-\u00b2",
        "ABCD2345-1-0",  # epochs are lower case
        "abcd234-1-0",
        "abcd23456-1-0",
        "abcd-234-1-0",
    ],
)
def test_malformed_positions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a stream"):
        Position.parse(text)


def test_offsets_sort_as_redis_ids() -> None:
    offsets = ["10-0", "9-5", "9-10", "0-0", "18446744073709551615-0"]
    assert sorted(offsets, key=offset_key) == ["0-0", "9-5", "9-10", "10-0", "18446744073709551615-0"]


@pytest.mark.parametrize(
    ("epoch", "cursor", "next_entry", "expected"),
    [
        pytest.param(EPOCH, "5-0", entry("6-0", "5-0"), None, id="same epoch and chained"),
        pytest.param(EPOCH, ZERO_OFFSET, entry("6-0", ZERO_OFFSET), None, id="the first entry"),
        pytest.param(
            EPOCH,
            "5-0",
            entry("9-0", "8-0"),
            Discontinuity("history-expired", Position(EPOCH, "8-0")),
            id="gap: continue just before the oldest retained entry",
        ),
        pytest.param(
            EPOCH,
            "5-0",
            entry("9-0", "8-0", OTHER),
            Discontinuity("epoch-changed", Position(OTHER, ZERO_OFFSET)),
            id="epoch changed: continue from the new epoch's start",
        ),
        pytest.param(
            EPOCH,
            "5-0",
            entry("6-0", "5-0", OTHER),
            Discontinuity("epoch-changed", Position(OTHER, ZERO_OFFSET)),
            id="epoch changed though the offsets happen to chain",
        ),
    ],
)
def test_an_entry_continues_the_stream_only_if_it_points_back_in_the_same_epoch(
    epoch: str, cursor: str, next_entry: Entry, expected: Discontinuity | None
) -> None:
    assert check_entry(epoch, cursor, next_entry) == expected


@pytest.mark.parametrize(
    ("cursor", "head", "expected"),
    [
        pytest.param("5-0", StreamHead(EPOCH, "1-0", "5-0"), None, id="at the head"),
        pytest.param("3-0", StreamHead(EPOCH, "1-0", "5-0"), None, id="behind the head"),
        pytest.param(ZERO_OFFSET, StreamHead(EPOCH, None, ZERO_OFFSET), None, id="an empty stream"),
        pytest.param(
            "9-0",
            StreamHead(EPOCH, "1-0", "5-0"),
            Discontinuity("history-expired", Position(EPOCH, "5-0")),
            id="from the future, or the stream lost its tail: continue at the head",
        ),
        pytest.param(
            "5-0",
            StreamHead(OTHER, None, ZERO_OFFSET),
            Discontinuity("epoch-changed", Position(OTHER, ZERO_OFFSET)),
            id="epoch changed",
        ),
    ],
)
def test_a_read_that_finds_nothing_asks_the_head(
    cursor: str, head: StreamHead, expected: Discontinuity | None
) -> None:
    assert check_head(EPOCH, cursor, head) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(f"{EPOCH}-3-0", Position(EPOCH, "3-0"), id="same epoch"),
        pytest.param(f"{EPOCH}-99-0", Position(EPOCH, "99-0"), id="ahead: for check_head after a read"),
        pytest.param(
            f"{OTHER}-3-0",
            Discontinuity("epoch-changed", Position(EPOCH, ZERO_OFFSET)),
            id="another epoch: from the current epoch's start",
        ),
        pytest.param(
            "garbage",
            Discontinuity("history-expired", Position(EPOCH, "7-0")),
            id="malformed: from the head",
        ),
        pytest.param(
            f"{EPOCH}-18446744073709551616-0",
            Discontinuity("history-expired", Position(EPOCH, "7-0")),
            id="past uint64: from the head",
        ),
    ],
)
def test_where_a_resume_starts(text: str, expected: Position | Discontinuity) -> None:
    assert check_resume(text, EPOCH, "7-0") == expected


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param([entry("2-0", "1-0"), entry("3-0", "2-0")], ["2-0", "3-0"], id="chained"),
        pytest.param(
            [entry("5-0", "4-0"), entry("6-0", "5-0")],
            [Discontinuity("history-expired", Position(EPOCH, "4-0")), "5-0", "6-0"],
            id="trimmed: continues with the oldest retained entry",
        ),
        pytest.param(
            [entry("2-0", "1-0"), entry("9-0", "8-0"), entry("10-0", "9-0")],
            ["2-0", Discontinuity("history-expired", Position(EPOCH, "8-0")), "9-0", "10-0"],
            id="a gap in the middle",
        ),
        pytest.param(
            [entry("7-0", "6-0", OTHER), entry("8-0", "7-0", OTHER)],
            [Discontinuity("epoch-changed", Position(OTHER, ZERO_OFFSET))],
            id="epoch changed mid-way: stops, read on from the new epoch's start",
        ),
        pytest.param(
            [entry("1-0", ZERO_OFFSET, OTHER), entry("2-0", "1-0", OTHER)],
            [Discontinuity("epoch-changed", Position(OTHER, ZERO_OFFSET)), "1-0", "2-0"],
            id="epoch changed at its start: continues",
        ),
        pytest.param([], [], id="nothing read"),
    ],
)
def test_a_batch_continues_the_stream_entry_by_entry(entries: list[Entry], expected: list[object]) -> None:
    items = [i if isinstance(i, Discontinuity) else i.offset for i in chained(EPOCH, "1-0", entries)]
    assert items == expected
