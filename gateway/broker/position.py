"""Stream positions: an entry offset within a stream, qualified by the stream's epoch.

The offset is a Redis stream entry id (`<ms>-<seq>`); the memory broker makes the same kind. The epoch is a
short random string that changes whenever a stream's history is lost (Redis flushed, restarted empty, or the
embedded broker restarted), so a position from before the loss is recognised as stale instead of being
silently resumed from. Clients see positions as opaque strings: `<epoch>-<ms>-<seq>`.
"""

from __future__ import annotations

import base64
import os
import string
from dataclasses import dataclass

ZERO_OFFSET = "0-0"
"""The offset before the first entry of any stream."""

_EPOCH_ALPHABET = string.ascii_lowercase + string.digits
EPOCH_LENGTH = 8
MAX_PART = 2**64 - 1
"""Largest `<ms>` or `<seq>` of a Redis stream id (each is an unsigned 64-bit number)."""
_MAX_DIGITS = len(str(MAX_PART))


def new_epoch() -> str:
    """40 random bits as 8 characters of `_EPOCH_ALPHABET` (base32's letters and digits are a subset). Every
    append sends one, so it is made in ~2 us: eight `secrets.choice` calls took a twentieth of the relay's
    CPU."""
    return base64.b32encode(os.urandom(5)).decode("ascii").lower()


def offset_key(offset: str) -> tuple[int, int]:
    """Sort key of an offset; raises ValueError unless it is `<ms>-<seq>` as Redis can read it: ASCII digits
    only (`str.isdigit` also accepts `١٢٣` and `²`), each part below 2^64."""
    ms, _, seq = offset.partition("-")
    key = _part(ms), _part(seq)
    if key[0] is None or key[1] is None:
        raise ValueError(f"not a stream offset: {offset[:64]!r}")
    return key[0], key[1]


def _part(text: str) -> int | None:
    if not (0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_PART else None


@dataclass(frozen=True, slots=True, order=False)
class Position:
    """Where a subscriber is in one stream: after the entry `offset` of epoch `epoch`."""

    epoch: str
    offset: str

    def __str__(self) -> str:
        return f"{self.epoch}-{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse a position a client sent back; raises ValueError for anything malformed."""
        epoch, sep, offset = text.strip().partition("-")
        if not sep or len(epoch) != EPOCH_LENGTH or not all(c in _EPOCH_ALPHABET for c in epoch):
            raise ValueError(f"not a stream position: {text[:64]!r}")
        offset_key(offset)
        return cls(epoch, offset)
