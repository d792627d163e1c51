"""Rolling latency percentiles and rates for diagnostics and benchmarks."""
from __future__ import annotations

import time
from collections import deque

import numpy as np


class RollingLatency:
    """The last `window` latencies [ms], with percentiles."""

    def __init__(self, window: int = 300) -> None:
        self._values: deque[float] = deque(maxlen=window)

    def add(self, latency_ms: float) -> None:
        self._values.append(float(latency_ms))

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, q: float) -> float:
        """q-th percentile [ms] of the window; NaN when empty."""
        if not self._values:
            return float('nan')
        return float(np.percentile(np.fromiter(self._values, float), q))


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()

    def tick(self) -> None:
        now = self._clock()
        self._times.append(now)
        self._trim(now)

    def rate_hz(self) -> float:
        now = self._clock()
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()
