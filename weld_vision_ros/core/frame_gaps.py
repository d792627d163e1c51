"""Frames a camera stamped that never reached the node, estimated from the gaps between the
stamps that did, without ROS.

ROS 2 image headers carry no sequence number, so a burst of frames lost in transport, or
overwritten in a full subscription queue before the node took them, leaves only one trace:
a gap between two stamps that arrived. `StampGapCounter` learns the stream's frame period
(the median of its recent intervals) and counts a gap of more than `gap_factor` periods as
round(gap / period) - 1 frames missed. What it cannot see, it does not count: frames lost
before the first few intervals, a camera that changes its rate (the median follows it), and
gaps longer than `max_gap_ns`, which are clock jumps or a camera restart (the synchroniser
and the cell status report those), not losses.
"""
from __future__ import annotations

from collections import deque
from statistics import median
from typing import Optional

DEFAULT_GAP_FACTOR = 1.5
# Longer gaps are not counted: a camera restart or a clock jump. Longer than the
# synchroniser's clock-jump bound (10 s, ros/sync.py), so that a burst of 300 frames at
# 30 Hz still counts; a forward jump between the two is reported by both.
DEFAULT_MAX_GAP_NS = 30_000_000_000
MIN_INTERVALS = 4                       # intervals seen before a period is trusted


class StampGapCounter:
    """Counts frames missing between consecutive stamps of one stream.

    history: intervals kept for the period estimate. gap_factor: an interval longer than this
    many periods is a gap. max_gap_ns: a longer interval is not a loss; the period is learnt
    again after it.
    """

    def __init__(self, history: int = 32, gap_factor: float = DEFAULT_GAP_FACTOR,
                 max_gap_ns: int = DEFAULT_MAX_GAP_NS) -> None:
        if history < MIN_INTERVALS:
            raise ValueError(f'history must be >= {MIN_INTERVALS}, got {history}')
        if not gap_factor > 1.0:
            raise ValueError(f'gap_factor must be > 1, got {gap_factor}')
        self.gap_factor = gap_factor
        self.max_gap_ns = int(max_gap_ns)
        self._intervals: deque[int] = deque(maxlen=history)
        self._last: Optional[int] = None
        self.missed = 0          # frames estimated missing [frames]
        self.gaps = 0            # gaps with at least one frame missing
        self.largest_gap = 0     # most frames missing in one gap [frames]

    @property
    def period_ns(self) -> Optional[int]:
        """The stream's frame period estimate [ns] (None until MIN_INTERVALS were seen)."""
        if len(self._intervals) < MIN_INTERVALS:
            return None
        return int(median(self._intervals))

    def add(self, stamp_ns: int) -> int:
        """Note a frame's stamp [ns]; returns the frames estimated missing just before it."""
        stamp_ns = int(stamp_ns)
        last, self._last = self._last, stamp_ns if self._last is None or stamp_ns > self._last else self._last
        if last is None or stamp_ns <= last:
            return 0                 # the first, a duplicate or a late frame: no interval
        interval = stamp_ns - last
        if interval > self.max_gap_ns:
            self._intervals.clear()  # a clock jump or a restart: learn the period again
            return 0
        period = self.period_ns
        if period is None or interval <= self.gap_factor * period:
            self._intervals.append(interval)
            return 0
        missing = max(1, round(interval / period) - 1)
        self.missed += missing
        self.gaps += 1
        self.largest_gap = max(self.largest_gap, missing)
        return missing
