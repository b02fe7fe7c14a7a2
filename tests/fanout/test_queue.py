"""`DeliveryQueue`, pure and synchronous: bounds, stalls, the replay→live merge (as Centrifuge tests its queue)."""

from __future__ import annotations

import pytest

from gateway.fanout.queue import DeliveryQueue, State


class RecordingOutlet:
    """Stands in for the connection: `flush` takes what the queue holds unless the socket is `blocked`."""

    def __init__(self, queue: DeliveryQueue, *, blocked: bool = False) -> None:
        self.queue = queue
        self.blocked = blocked
        self.written: list[bytes] = []
        self.wakes = 0
        self.stalls = 0
        queue.outlet = self

    def flush(self) -> None:
        if self.queue.buffer and not self.queue.writing:
            self.written.append(self.queue.take())
            self.queue.writing = self.blocked

    def wake(self) -> None:
        self.wakes += 1

    def stalled(self) -> None:
        self.stalls += 1

    def tick(self, now: float) -> None:
        return None


def queue(*, replaying: bool = False, max_events: int = 3, max_bytes: int = 100) -> DeliveryQueue:
    return DeliveryQueue(
        max_events=max_events, max_bytes=max_bytes, replaying=replaying, epoch="e", offset="0-0"
    )


def test_frames_wait_until_taken_as_one_write() -> None:
    q = queue()
    assert q.push(b"a;", "1-0")
    assert q.push(b"b;", "2-0")
    assert (q.buffered_bytes, q.last_offset, q.delivered_offset) == (4, "2-0", "0-0")
    assert q.take() == b"a;b;"
    assert (q.buffer, q.buffered_bytes, q.delivered_offset) == ([], 0, "2-0")


def test_a_batch_larger_than_the_bound_goes_out_in_pieces() -> None:
    q = queue()
    outlet = RecordingOutlet(q)
    for n in range(10):
        assert q.push(b"%d;" % n, f"{n + 1}-0")
    outlet.flush()
    assert outlet.written == [b"0;1;2;", b"3;4;5;", b"6;7;8;", b"9;"]
    assert (q.state, q.delivered_offset, q.last_offset) == (State.LIVE, "10-0", "10-0")


@pytest.mark.parametrize("size", [100, 101, 5000])
def test_one_frame_is_always_accepted_into_an_empty_queue(size: int) -> None:
    q = queue()
    assert q.push(b"x" * size, "1-0")
    assert q.take() == b"x" * size


def test_the_byte_bound_counts_what_waits() -> None:
    q = queue(max_events=100, max_bytes=10)
    outlet = RecordingOutlet(q)
    for n in range(4):
        assert q.push(b"1234", f"{n + 1}-0")
    assert outlet.written == [b"12341234"]  # the third frame would have passed 10 bytes
    assert q.buffer == [b"1234", b"1234"]


def test_over_the_bound_while_a_write_is_under_way_it_stalls_from_what_was_written() -> None:
    q = queue()
    outlet = RecordingOutlet(q, blocked=True)
    assert q.push(b"1;", "1-0")
    outlet.flush()  # this write waits for the client
    for n in (2, 3, 4):
        assert q.push(b"%d;" % n, f"{n}-0")
    assert not q.push(b"5;", "5-0")  # one more than the bound, while a write waits
    assert (q.state, q.buffer, q.buffered_bytes, q.last_offset, outlet.stalls) == (
        State.STALLED,
        [],
        0,
        "1-0",
        1,
    )
    assert not q.push(b"6;", "6-0")  # out of live fan-out: nothing is kept
    assert not q.push_control(b": ping\n\n")
    assert q.catch_up() == ("e", "1-0")  # the frames it dropped are read from history
    assert not q.push(b"7;", "7-0")  # held back while it replays
    assert q.go_live("6-0") == 1  # the replay sent up to 6
    assert q.buffer == [b"7;"]


def test_a_queue_without_a_connection_yet_stalls_at_its_bound() -> None:
    q = queue()
    for n in range(3):
        assert q.push(b"%d;" % n, f"{n + 1}-0")
    assert not q.push(b"3;", "4-0")
    assert q.state is State.STALLED


def test_replay_hands_over_without_gap_or_duplicate() -> None:
    q = queue(replaying=True, max_events=10)
    for n in (1, 2, 3, 4):
        assert not q.push(b"%d;" % n, f"{n}-0")  # held back, not counted
    assert q.go_live("2-0") == 2  # the replay sent 1 and 2
    assert q.take() == b"3;4;"
    assert q.state is State.LIVE


def test_after_the_hand_over_live_frames_the_replay_already_sent_are_skipped() -> None:
    q = queue(replaying=True)
    assert q.go_live("5-0") == 0  # the replay read further than the worker's reader
    assert not q.push(b"4;", "4-0")
    assert not q.push(b"5;", "5-0")
    assert q.push(b"6;", "6-0")
    assert q.skip_until is None
    assert q.push(b"7;", "7-0")


def test_offsets_compare_as_numbers_not_strings() -> None:
    q = queue(replaying=True)
    q.go_live("9-0")
    assert q.push(b"10;", "10-0")


def test_pending_over_its_bound_is_dropped_and_the_replay_reads_further() -> None:
    q = queue(replaying=True, max_events=2)
    for n in (1, 2, 3):
        q.push(b"%d;" % n, f"{n}-0")
    assert (q.pending, q.pending_overflowed) == ([], True)
    assert q.go_live("1-0") is None  # try again after reading further
    assert q.state is State.REPLAYING
    q.push(b"4;", "4-0")
    assert q.go_live("3-0") == 1
    assert q.take() == b"4;"


def test_a_reset_moves_the_epoch_and_is_queued() -> None:
    q = queue()
    q.go_live("0-0")
    q.skip_until = (9, 0)
    assert q.push_reset(b"reset;", "f", "0-0")
    assert (q.epoch, q.skip_until, q.last_offset) == ("f", None, "0-0")
    assert q.take() == b"reset;"
    assert q.delivered_epoch == "f"


def test_a_replaying_queue_takes_no_reset_or_control_frame() -> None:
    q = queue(replaying=True)
    assert not q.push_reset(b"reset;", "f", "0-0")
    assert not q.push_control(b": ping\n\n")
    assert q.epoch == "e"


def test_bookmarks_wait_until_live_delivery_passed_what_the_replay_sent() -> None:
    q = queue(replaying=True)
    q.go_live("5-0")
    assert not q.passed((5, 0))
    assert q.passed((6, 0))
    assert q.skip_until is None


def test_sent_records_what_the_connection_wrote_itself() -> None:
    q = queue(replaying=True)
    q.sent("7-0")
    assert (q.last_offset, q.delivered_offset, q.delivered_epoch) == ("7-0", "7-0", "e")
    q.sent("0-0", "f")
    assert (q.epoch, q.delivered_epoch, q.delivered_offset) == ("f", "f", "0-0")


def test_closing_drops_everything_once_and_wakes_the_connection() -> None:
    q = queue(replaying=True)
    outlet = RecordingOutlet(q)
    q.push(b"1;", "1-0")
    q.close("shutdown")
    q.close("gone")
    assert (q.state, q.close_reason, q.pending, outlet.wakes) == (State.CLOSED, "shutdown", [], 1)
    assert not q.push(b"2;", "2-0")
    assert q.go_live("1-0") is None
