"""Stream positions and the one rule for whether a stream continues from one (pure; no I/O).

A position is an entry offset within a stream, qualified by the stream's epoch. The offset is a Redis stream
entry id (`<ms>-<seq>`, each part an unsigned 64-bit integer); the memory broker makes the same kind. The
epoch is a short random string that changes whenever a stream's history is lost (Redis flushed, restarted
empty, or the embedded broker restarted), so a position from before the loss is recognised as stale instead
of being silently resumed from. Clients see positions as opaque strings: `<epoch>-<ms>-<seq>`. Only this
module parses or formats them.

**Honest history.** Each entry records the offset of the entry before it (`prev`) and its epoch. A reader
at `cursor` in epoch `epoch` may hand an entry on only if the entry has that epoch and points back at the
cursor; anything else is a discontinuity, told in-band as a reset (DESIGN §3.5), never a silent gap.

**Where a stream continues after a reset** (the same answer for SSE, catch-up and the Python streams): at
the earliest position the broker still vouches for, and the reset names it:
- the epoch changed: at the start of the new epoch (every change since the loss follows; a read that began
  at an offset of the old epoch may have skipped the new epoch's first entries, so nothing later will do);
- entries were trimmed: just before the oldest entry retained after the position (it and all later follow);
- the position is malformed, or lies beyond the newest entry: at the stream's head (nothing known follows).
The client lists again after a reset, then applies what follows; changes it already listed are repeated,
never missed.
"""

from __future__ import annotations

import base64
import os
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

from gateway.broker.base import Entry, StreamHead

ZERO_OFFSET = "0-0"
"""The offset before the first entry of any stream (and of any epoch)."""

EPOCH_LENGTH = 8
_EPOCH_ALPHABET = frozenset(string.ascii_lowercase + string.digits)
_ASCII_DIGITS = frozenset(string.digits)
_UINT64_LIMIT = 2**64  # Redis stream ids are two unsigned 64-bit integers; XRANGE refuses anything larger

ResetReason: TypeAlias = Literal["history-expired", "epoch-changed"]


def new_epoch() -> str:
    """40 random bits as 8 characters of `_EPOCH_ALPHABET` (base32's letters and digits are a subset). Every
    append sends one, so it is made in ~2 us: eight `secrets.choice` calls took a twentieth of the relay's
    CPU."""
    return base64.b32encode(os.urandom(5)).decode("ascii").lower()


def _uint64(text: str) -> int:
    if not text or len(text) > 20 or not _ASCII_DIGITS.issuperset(text):
        raise ValueError
    value = int(text)
    if value >= _UINT64_LIMIT:
        raise ValueError
    return value


def offset_key(offset: str) -> tuple[int, int]:
    """Sort key of an offset; raises ValueError unless it is `<ms>-<seq>`, two ASCII-decimal uint64s."""
    ms, _, seq = offset.partition("-")
    try:
        return _uint64(ms), _uint64(seq)
    except ValueError:
        raise ValueError(f"not a stream offset: {offset[:64]!r}") from None


def format_position(epoch: str, offset: str) -> str:
    """The position string clients see (the SSE `id:`) for the entry at `offset` of epoch `epoch`."""
    return f"{epoch}-{offset}"


@dataclass(frozen=True, slots=True, order=False)
class Position:
    """Where a subscriber is in one stream: after the entry `offset` of epoch `epoch`."""

    epoch: str
    offset: str

    def __str__(self) -> str:
        return format_position(self.epoch, self.offset)

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse a position a client sent back; raises ValueError for anything malformed (a position Redis
        could not read, such as an offset past 2^64 or with non-ASCII digits, included)."""
        epoch, sep, offset = text.strip().partition("-")
        if not sep or len(epoch) != EPOCH_LENGTH or not _EPOCH_ALPHABET.issuperset(epoch):
            raise ValueError(f"not a stream position: {text[:64]!r}")
        offset_key(offset)
        return cls(epoch, offset)


@dataclass(frozen=True, slots=True)
class Discontinuity:
    """The stream cannot continue from where a reader is: tell `reason`, then continue after `resume`."""

    reason: ResetReason
    resume: Position


def check_entry(epoch: str, cursor: str, entry: Entry) -> Discontinuity | None:
    """Whether `entry`, the next one read after `cursor` in `epoch`, continues the stream (None) or not."""
    if entry.epoch != epoch:
        return Discontinuity("epoch-changed", Position(entry.epoch, ZERO_OFFSET))
    if entry.prev != cursor:
        return Discontinuity("history-expired", Position(entry.epoch, entry.prev))
    return None


def chained(epoch: str, cursor: str, entries: Iterable[Entry]) -> Iterator[Entry | Discontinuity]:
    """`entries`, read after `cursor` of `epoch`, as the stream continues: each entry that continues it, and
    a `Discontinuity` where it does not. After one the entries go on when the stream continues with that
    very entry (its history was trimmed before it); else they stop (a new epoch's start comes before it),
    and the caller reads on from the discontinuity's resume position."""
    for entry in entries:
        discontinuity = check_entry(epoch, cursor, entry)
        if discontinuity is not None:
            yield discontinuity
            if discontinuity.resume.offset != entry.prev:
                return
            epoch = discontinuity.resume.epoch
        yield entry
        cursor = entry.offset


def check_head(epoch: str, cursor: str, head: StreamHead) -> Discontinuity | None:
    """When a read after `cursor` found nothing: whether the stream still holds that place (None), or lost
    its epoch, or never reached the cursor (its history was lost, or the position is from the future)."""
    if head.epoch != epoch:
        return Discontinuity("epoch-changed", Position(head.epoch, ZERO_OFFSET))
    if offset_key(cursor) > offset_key(head.last):
        return Discontinuity("history-expired", Position(head.epoch, head.last))
    return None


def check_resume(text: str, epoch: str, head: str) -> Position | Discontinuity:
    """Where a client's resume position `text` starts in a stream now in `epoch` with its newest entry at
    `head`: the position itself, or the discontinuity to tell first (malformed, of another epoch). Whether
    the position is beyond the newest entry is `check_head`'s to say when a read after it finds nothing, and
    whether its history was trimmed is `check_entry`'s on the first entry read."""
    try:
        position = Position.parse(text)
    except ValueError:
        return Discontinuity("history-expired", Position(epoch, head))
    if position.epoch != epoch:
        return Discontinuity("epoch-changed", Position(epoch, ZERO_OFFSET))
    return position
