"""The cell's state as a controller needs it, from the frames seen and the model served.

States (`CellState.state`), in order of precedence:
  waiting_for_camera  no frame pair has arrived since start;
  camera_stalled      no frame pair for longer than `stall_timeout_s` (a dead driver, a
                      cable, a stream that stopped: colour without depth counts too, since
                      no pair completes);
  not_inspectable     the last `not_inspectable_after` frames were all published as not
                      inspected (no bead in view, no depth, unusable images);
  inspecting          frames arrive and are inspected.
The model's side travels beside it (`model_state` serving / none / refused), so one
latched message tells a controller whether it can trust the verdicts that follow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

WAITING, STALLED, NOT_INSPECTABLE, INSPECTING = (
    'waiting_for_camera', 'camera_stalled', 'not_inspectable', 'inspecting')
MODEL_SERVING, MODEL_NONE, MODEL_REFUSED = 'serving', 'none', 'refused'


@dataclass(frozen=True)
class CellState:
    state: str
    detail: str
    seconds_since_frame: float  # -1 before the first frame


class CellStatusTracker:
    """Pure state machine: `frame(...)` on every frame pair, `state(now_s)` when asked."""

    def __init__(self, stall_timeout_s: float = 0.6, not_inspectable_after: int = 5) -> None:
        if not stall_timeout_s > 0:
            raise ValueError(f'stall_timeout_s must be > 0, got {stall_timeout_s}')
        if not_inspectable_after < 1:
            raise ValueError(f'not_inspectable_after must be >= 1, got {not_inspectable_after}')
        self.stall_timeout_s = float(stall_timeout_s)
        self.not_inspectable_after = int(not_inspectable_after)
        self._last_frame_s: Optional[float] = None
        self._not_inspected_run = 0
        self._last_reason = ''

    def frame(self, now_s: float, inspected: bool, reason: str = '') -> None:
        self._last_frame_s = now_s
        if inspected:
            self._not_inspected_run = 0
        else:
            self._not_inspected_run += 1
            self._last_reason = reason

    def state(self, now_s: float) -> CellState:
        if self._last_frame_s is None:
            return CellState(WAITING, 'no camera frame pair received yet', -1.0)
        age = max(0.0, now_s - self._last_frame_s)
        if age > self.stall_timeout_s:
            return CellState(STALLED, f'no camera frame pair for {age:.1f} s '
                                      f'(stall_timeout_s {self.stall_timeout_s:g})', age)
        if self._not_inspected_run >= self.not_inspectable_after:
            return CellState(NOT_INSPECTABLE, f'the last {self._not_inspected_run} frames were not '
                                              f'inspected ({self._last_reason or "no reason"})', age)
        return CellState(INSPECTING, '', age)
