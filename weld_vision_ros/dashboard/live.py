"""What the live screen shows, kept up to date from plain values (no rclpy here).

The ROS bridge turns each message into a dict (`verdict_fields`, `bead_fields` in
bridge.py) and hands it to `LiveState`; the app reads `snapshot()`. Everything is
computed once per message, under one lock, so a page that polls costs a copy, not a
recomputation.

Latency: `camera_to_verdict_ms` is the time from the frame's header stamp (the camera's
clock) to the verdict's arrival here, so it includes the inspection and both DDS hops;
`node_latency_ms` is what the node reported (frame reception to verdict).
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import cv2
import numpy as np

from weld_vision_ros.core.stats import RateMeter, RollingLatency
from weld_vision_ros.examples.controller_policy import STOP, decide

DROP_PREFIX = 'drop.'          # RgbdInput's per-reason drop counters in /diagnostics
HISTORY_LENGTH = 50


@dataclass(frozen=True)
class LiveConfig:
    """no_frame_after_s: no verdict for longer than this and the page says 'no frames'."""

    no_frame_after_s: float = 2.0
    jpeg_max_fps: float = 5.0
    jpeg_quality: int = 70
    history_length: int = HISTORY_LENGTH

    def __post_init__(self) -> None:
        if not self.no_frame_after_s > 0:
            raise ValueError(f'no_frame_after_s must be > 0 s, got {self.no_frame_after_s}')
        if not 0 < self.jpeg_max_fps <= 60:
            raise ValueError(f'jpeg_max_fps must be in (0, 60], got {self.jpeg_max_fps}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in [1, 100], got {self.jpeg_quality}')


def _finite(x: Any) -> Optional[float]:
    """A JSON-safe float: NaN and infinities become None."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _number(text: str) -> Any:
    """A diagnostics value (always a string on the wire) as int, float or the text."""
    for kind in (int, float):
        try:
            value = kind(text)
            return _finite(value) if kind is float else value
        except (TypeError, ValueError):
            continue
    return text


class JpegThrottle:
    """The newest debug image, encoded as JPEG at most `max_fps` times a second and only
    when someone asks: frames nobody watches cost a reference assignment."""

    def __init__(self, max_fps: float, quality: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._min_period_s = 1.0 / max_fps
        self._quality = int(quality)
        self._clock = clock
        self._lock = threading.Lock()
        self._raw: Optional[np.ndarray] = None
        self._raw_seq = 0
        self._jpeg: Optional[bytes] = None
        self._jpeg_seq = 0
        self._encoded_at = -float('inf')
        self.encoded = 0

    def offer(self, rgb: np.ndarray) -> None:
        """The newest RGB uint8 image (H x W x 3); kept by reference, not copied."""
        with self._lock:
            self._raw = rgb
            self._raw_seq += 1

    @property
    def has_image(self) -> bool:
        return self._raw is not None

    def latest(self) -> tuple[Optional[bytes], int]:
        """(JPEG bytes or None, sequence number of the image it shows)."""
        with self._lock:
            raw, seq = self._raw, self._raw_seq
            due = self._clock() - self._encoded_at >= self._min_period_s
            if raw is None or seq == self._jpeg_seq or not due:
                return self._jpeg, self._jpeg_seq
            self._encoded_at = self._clock()
        ok, buf = cv2.imencode('.jpg', cv2.cvtColor(raw, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self._quality])
        with self._lock:
            if ok and seq > self._jpeg_seq:
                self._jpeg, self._jpeg_seq = buf.tobytes(), seq
                self.encoded += 1
            return self._jpeg, self._jpeg_seq

    @property
    def min_period_s(self) -> float:
        return self._min_period_s


class LiveState:
    """Latest results and running statistics of the cell, fed by the bridge."""

    def __init__(self, config: LiveConfig = LiveConfig(), clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self.image = JpegThrottle(config.jpeg_max_fps, config.jpeg_quality, clock)
        self._verdict: Optional[dict] = None
        self._verdict_at: Optional[float] = None
        self._bead: Optional[dict] = None
        self._history: deque[dict] = deque(maxlen=config.history_length)
        self._counts: Counter[str] = Counter()
        self._not_inspected: Counter[str] = Counter()
        self._verdicts = 0
        self._rate = RateMeter(window_s=5.0, clock=clock)
        self._camera_to_verdict = RollingLatency()
        self._node_latency = RollingLatency()
        self._diagnostics: dict[str, dict[str, Any]] = {}
        self._cell_status: Optional[dict] = None
        self._active_model: Optional[dict] = None
        self._alarm: Optional[dict] = None
        self._anomaly: deque[tuple[float, float]] = deque(maxlen=120)
        self._spec: Optional[dict[str, float]] = None

    # --- inputs ------------------------------------------------------------------------
    def on_verdict(self, v: Mapping[str, Any]) -> None:
        """A WeldDefect as a dict (see bridge.verdict_fields)."""
        now = self._clock()
        stamp_s = v.get('stamp_s')
        with self._lock:
            verdict = dict(v)
            bead = self._bead if self._bead and self._bead.get('stamp_s') == stamp_s else None
            decision = decide(v.get('defect_class', ''), float(v.get('confidence', 0.0)),
                              bead.get('valid') if bead else None,
                              bead.get('within_tolerance') if bead else None,
                              bead.get('score') if bead else None,
                              status=v.get('status', 'inspected'), status_reason=v.get('status_reason', ''))
            verdict['action'], verdict['action_reason'] = decision.action, decision.reason
            self._verdict, self._verdict_at = verdict, now
            self._verdicts += 1
            if v.get('status') == 'not_inspected':
                self._not_inspected[v.get('status_reason') or 'unknown'] += 1
            else:
                self._counts[v.get('defect_class', '')] += 1
            self._rate.tick()
            if stamp_s:
                self._camera_to_verdict.add(1000.0 * (self._wall() - float(stamp_s)))
            if _finite(v.get('latency_ms')) is not None:
                self._node_latency.add(float(v['latency_ms']))
            if decision.action == STOP:
                self._alarm = {'defect_class': v.get('defect_class', ''), 'reason': decision.reason,
                               'stamp_s': stamp_s, 'at_s': self._wall(), 'acknowledged': False}
            if v.get('anomaly_score') is not None:
                self._anomaly.append((float(stamp_s or 0.0), float(v['anomaly_score'])))
            self._history.appendleft({k: verdict.get(k) for k in (
                'stamp_s', 'defect_class', 'confidence', 'method', 'model_version', 'status',
                'status_reason', 'action', 'latency_ms')})

    def on_bead(self, b: Mapping[str, Any]) -> None:
        with self._lock:
            self._bead = dict(b)

    def on_diagnostics(self, name: str, level: int, message: str, values: Mapping[str, str]) -> None:
        """One DiagnosticStatus of /diagnostics (values as the strings they travel as)."""
        with self._lock:
            self._diagnostics[name] = {'level': int(level), 'message': message, 'at': self._clock(),
                                       'values': {k: _number(v) for k, v in values.items()}}

    def on_cell_status(self, status: Mapping[str, Any]) -> None:
        with self._lock:
            self._cell_status = dict(status)

    def on_active_model(self, info: Mapping[str, Any]) -> None:
        with self._lock:
            self._active_model = dict(info)

    def on_spec(self, spec: Mapping[str, float]) -> None:
        """The weld spec the rule node checks beads against (WeldSpec's fields)."""
        with self._lock:
            self._spec = dict(spec)

    def acknowledge_alarm(self) -> bool:
        with self._lock:
            if self._alarm is None:
                return False
            self._alarm['acknowledged'] = True
            return True

    # --- output ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything the live screen shows, JSON-ready."""
        now = self._clock()
        with self._lock:
            age = None if self._verdict_at is None else now - self._verdict_at
            if age is None:
                connection = {'state': 'waiting', 'detail': 'no verdict received yet'}
            elif age > self.config.no_frame_after_s:
                connection = {'state': 'no_frames', 'detail': f'no verdict for {age:.1f} s'}
            else:
                connection = {'state': 'live', 'detail': ''}
            diag = {name: {**d, 'age_s': now - d['at']} for name, d in self._diagnostics.items()}
            for d in diag.values():
                d.pop('at')
            model_version = ''
            if self._cell_status and self._cell_status.get('model_version'):
                model_version = self._cell_status['model_version']
            elif self._active_model:
                model_version = self._active_model.get('version', '')
            return {
                'connection': {**connection, 'seconds_since_verdict': _finite(age)},
                'verdict': dict(self._verdict) if self._verdict else None,
                'bead': dict(self._bead) if self._bead else None,
                'spec': dict(self._spec) if self._spec else None,
                'counts': dict(self._counts),
                'not_inspected': dict(self._not_inspected),
                'verdicts_total': self._verdicts,
                'verdict_rate_hz': self._rate.rate_hz(),
                'camera_to_verdict_ms': {'p50': _finite(self._camera_to_verdict.percentile(50)),
                                         'p99': _finite(self._camera_to_verdict.percentile(99))},
                'node_latency_ms': {'p50': _finite(self._node_latency.percentile(50)),
                                    'p99': _finite(self._node_latency.percentile(99))},
                'drops': drops_by_reason(diag),
                'ml_invocation_ratio': _ml_ratio(diag),
                'model_version': model_version,
                'active_model': dict(self._active_model) if self._active_model else None,
                'cell_status': dict(self._cell_status) if self._cell_status else None,
                'alarm': dict(self._alarm) if self._alarm else None,
                'anomaly_trend': [{'stamp_s': s, 'score': a} for s, a in self._anomaly],
                'history': list(self._history),
                'diagnostics': diag,
                'image_available': self.image.has_image,
            }


def drops_by_reason(diagnostics: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """node status name -> {reason: frames dropped}, from the drop.<reason> counters."""
    out: dict[str, dict[str, int]] = {}
    for name, d in diagnostics.items():
        drops = {k[len(DROP_PREFIX):]: int(v) for k, v in d['values'].items()
                 if k.startswith(DROP_PREFIX) and isinstance(v, int)}
        if drops:
            out[name] = drops
    return out


def _ml_ratio(diagnostics: Mapping[str, Mapping[str, Any]]) -> Optional[float]:
    for d in diagnostics.values():
        ratio = d['values'].get('ml_invocation_ratio')
        if isinstance(ratio, (int, float)):
            return float(ratio)
    return None
