"""Epochs: cheap to make (every append sends one), yet valid in a client's position and never repeated."""

from __future__ import annotations

import pytest

from gateway.broker.position import EPOCH_LENGTH, Position, new_epoch, offset_key


def test_new_epochs_are_valid_positions_and_differ() -> None:
    epochs = {new_epoch() for _ in range(10_000)}
    assert len(epochs) == 10_000
    for epoch in epochs:
        assert len(epoch) == EPOCH_LENGTH
        assert Position.parse(f"{epoch}-1-0") == Position(epoch, "1-0")


@pytest.mark.parametrize(
    "offset",
    ["1-0", "0-0", f"{2**64 - 1}-{2**64 - 1}", "00000000000000000001-0"],
)
def test_offsets_redis_can_read_are_accepted(offset: str) -> None:
    ms, _, seq = offset.partition("-")
    assert offset_key(offset) == (int(ms), int(seq))


@pytest.mark.parametrize(
    "offset",
    ["", "1", "1-", "-1", "a-0", f"{2**64}-0", f"0-{2**64}", "١٢٣-0", "1²-0", "1-٣", "+1-0", " 1-0", "1-0-0"],
)
def test_offsets_redis_cannot_read_are_refused(offset: str) -> None:
    with pytest.raises(ValueError, match="not a stream offset"):
        offset_key(offset)
