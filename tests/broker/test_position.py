"""Epochs: cheap to make (every append sends one), yet valid in a client's position and never repeated."""

from __future__ import annotations

from gateway.broker.position import EPOCH_LENGTH, Position, new_epoch


def test_new_epochs_are_valid_positions_and_differ() -> None:
    epochs = {new_epoch() for _ in range(10_000)}
    assert len(epochs) == 10_000
    for epoch in epochs:
        assert len(epoch) == EPOCH_LENGTH
        assert Position.parse(f"{epoch}-1-0") == Position(epoch, "1-0")
