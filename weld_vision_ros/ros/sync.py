"""Pairing color and depth frames by stamp, with drop counting.

message_filters is not a dependency: this is the exact / approximate time policy the
nodes need, as plain Python, so that it is tested without ROS.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Generic, Optional, TypeVar

T = TypeVar('T')
U = TypeVar('U')

DROP_UNMATCHED = 'unmatched'
DROP_STAMP_BACKWARDS = 'stamp_backwards'
# Not a drop: a pair whose stamp jumped more than `clock_jump_ns` from the last one emitted
# (either way) is taken as a camera clock jump; the pair is emitted and counted under this key.
CLOCK_JUMP = 'clock_jump'
DEFAULT_CLOCK_JUMP_NS = 10_000_000_000  # 10 s: far beyond any late frame, far below a jump


@dataclass(frozen=True)
class MatchedPair(Generic[T, U]):
    stamp_ns: int
    color: T
    depth: U
    skew_ns: int


class StampSynchronizer(Generic[T, U]):
    """Pairs color and depth by stamp.

    tolerance_ns = 0 asks for identical stamps (RealSense aligned depth); a positive
    tolerance pairs the nearest frames at most that far apart. Frames that find no partner
    before `queue_size` newer ones arrive are dropped and counted as 'unmatched'; a pair
    older than the last one emitted is dropped as 'stamp_backwards' (a late frame).

    Clock jump vs late frame: a pair stamped more than `clock_jump_ns` before or after the
    last pair emitted is not a late frame but a jump of the camera's clock (a reset, a bad
    frame from the future, a bag loop): the synchroniser restarts its time line from it,
    emits it and counts it in `events['clock_jump']` (not a drop). So one frame stamped an hour (or
    years) ahead costs at most the frames around it, never every later frame.
    """

    def __init__(self, tolerance_ns: int = 0, queue_size: int = 5,
                 clock_jump_ns: int = DEFAULT_CLOCK_JUMP_NS) -> None:
        if tolerance_ns < 0:
            raise ValueError(f'tolerance_ns must be >= 0, got {tolerance_ns}')
        if queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        if clock_jump_ns <= 0:
            raise ValueError(f'clock_jump_ns must be > 0, got {clock_jump_ns}')
        self.tolerance_ns = int(tolerance_ns)
        self.clock_jump_ns = int(clock_jump_ns)
        self.queue_size = int(queue_size)
        self._queues: dict[str, deque] = {'color': deque(), 'depth': deque()}
        self._last_emitted_ns: Optional[int] = None
        self.drops: Counter[str] = Counter()
        # Not drops: clock jumps seen (the pair is emitted), and the unmatched drops split by
        # the stream that lost the frame (a dead depth stream shows as unmatched color frames).
        self.events: Counter[str] = Counter()
        self.unmatched_by_stream: Counter[str] = Counter()

    def add_color(self, stamp_ns: int, item: T) -> Optional[MatchedPair[T, U]]:
        return self._add('color', 'depth', stamp_ns, item)

    def add_depth(self, stamp_ns: int, item: U) -> Optional[MatchedPair[T, U]]:
        return self._add('depth', 'color', stamp_ns, item)

    def carry_counts_from(self, old: 'StampSynchronizer') -> None:
        """Keep `old`'s counters (drops, events, unmatched by stream) when replacing it."""
        self.drops.update(old.drops)
        self.events.update(old.events)
        self.unmatched_by_stream.update(old.unmatched_by_stream)

    def reset(self) -> None:
        """Forget queued frames and the last stamp (e.g. after a bag loop restarts time)."""
        for q in self._queues.values():
            q.clear()
        self._last_emitted_ns = None

    def _unmatched(self, stream: str, n: int = 1) -> None:
        if n:
            self.drops[DROP_UNMATCHED] += n
            self.unmatched_by_stream[stream] += n

    def _add(self, own: str, other: str, stamp_ns: int, item: Any) -> Optional[MatchedPair]:
        partners = self._queues[other]
        best_i, best_dt = -1, None
        for i, (s, _) in enumerate(partners):
            dt = abs(s - stamp_ns)
            if dt <= self.tolerance_ns and (best_dt is None or dt < best_dt):
                best_i, best_dt = i, dt
        if best_i < 0:
            q = self._queues[own]
            q.append((stamp_ns, item))
            while len(q) > self.queue_size:
                q.popleft()
                self._unmatched(own)
            return None
        for _ in range(best_i):  # partners older than the match will never pair now
            partners.popleft()
            self._unmatched(other)
        partner_stamp, partner = partners.popleft()
        pair_stamp = stamp_ns if own == 'color' else partner_stamp
        last = self._last_emitted_ns
        if last is not None and abs(pair_stamp - last) > self.clock_jump_ns:
            self.events[CLOCK_JUMP] += 1
            # frames still queued belong to the old time line
            for stream, q in self._queues.items():
                self._unmatched(stream, len(q))
                q.clear()
        elif last is not None and pair_stamp < last:
            self.drops[DROP_STAMP_BACKWARDS] += 1
            return None
        self._last_emitted_ns = pair_stamp
        color, depth = (item, partner) if own == 'color' else (partner, item)
        return MatchedPair(stamp_ns=pair_stamp, color=color, depth=depth, skew_ns=int(best_dt))
