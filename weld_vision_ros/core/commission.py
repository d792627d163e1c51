"""Commissioning check: measure a gauge of known geometry and report the camera's error.

Before a cell trusts its millimetres, an integrator places a machined gauge in view: a bar
(a raised step of known width and height, flat on top with square edges) lying along the
seam's place on the plate. The rule core measures it like a bead (`core.measure`: plate,
seam, cross-sections); a bar's width is taken at half its height (square edges: the
half-height width is the bar's width, whatever the edge blur) and its height as the mean
elevation of its flat top. Over several frames and every cross-section along the bar the
errors against the gauge's stated size give the bias and the spread the camera achieves,
with its depth resolution (core.resolution) beside them.

Nothing here knows about ROS; `weld_vision_ros.commission` is the command around it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from .frames import RGBDFrame
from .measure import MeasureConfig, MeasurementError, level_crossings, measure_bead


class GaugeError(ValueError):
    """A gauge description that cannot be measured against (sizes not positive)."""


@dataclass(frozen=True)
class Gauge:
    """The machined bar: width across the seam and height above the plate [mm]."""

    width_mm: float
    height_mm: float

    def __post_init__(self) -> None:
        if not (self.width_mm > 0 and self.height_mm > 0):
            raise GaugeError(f'gauge width and height must be > 0 mm, got {self.width_mm} and {self.height_mm}')


@dataclass(frozen=True)
class GaugeReading:
    """One frame's measurement of the gauge: per cross-section widths and heights [mm]."""

    widths_mm: np.ndarray
    heights_mm: np.ndarray
    depth_resolution: str


@dataclass(frozen=True)
class CommissionReport:
    """Errors (measured - gauge) over all frames' cross-sections [mm]: bias, spread (std),
    95th percentile of the absolute error; frame_width_std_mm: spread of the per-frame means."""

    frames_measured: int
    frames_failed: int
    width_bias_mm: float
    width_std_mm: float
    width_p95_mm: float
    height_bias_mm: float
    height_std_mm: float
    height_p95_mm: float
    frame_width_std_mm: float
    frame_height_std_mm: float
    depth_resolution: str
    failures: tuple[str, ...] = ()

    def lines(self, gauge: Gauge) -> list[str]:
        """The report for people."""
        return [f'gauge {gauge.width_mm:.3f} x {gauge.height_mm:.3f} mm: {self.frames_measured} frames measured, '
                f'{self.frames_failed} failed',
                f'width  error: bias {self.width_bias_mm:+.3f} mm, spread {self.width_std_mm:.3f} mm '
                f'(per frame {self.frame_width_std_mm:.3f} mm), |error| p95 {self.width_p95_mm:.3f} mm',
                f'height error: bias {self.height_bias_mm:+.3f} mm, spread {self.height_std_mm:.3f} mm '
                f'(per frame {self.frame_height_std_mm:.3f} mm), |error| p95 {self.height_p95_mm:.3f} mm',
                f'depth: {self.depth_resolution}'] + [f'failed: {text}' for text in self.failures[:5]]


def measure_gauge(frame: RGBDFrame, cfg: MeasureConfig = MeasureConfig()) -> GaugeReading:
    """Half-height width and top height [mm] of the bar on every measured cross-section.

    Raises MeasurementError when no bar can be found (as for a bead).
    """
    geom = measure_bead(frame, cfg)
    use = geom.chunk_ok
    prof = geom.profiles[:, use]
    if prof.shape[1] == 0:
        raise MeasurementError('no cross-section of the gauge could be measured')
    sf = geom.frame
    crown = geom.chunk_crown_mm[use].astype(np.float32)
    rows = prof.shape[0]
    peak = np.clip(((geom.chunk_centre_mm[use] - sf.t0) / sf.dt).round().astype(np.intp), 1, rows - 2)
    # top height: the mean of the top's middle half, then the half-height crossings of it
    centre_row = (geom.chunk_centre_mm[use] - sf.t0) / sf.dt
    half_rows = 0.25 * geom.chunk_width_mm[use] / sf.dt
    r = np.arange(rows)[:, None]
    top = np.abs(r - centre_row[None, :]) <= half_rows[None, :]
    on_top = top & np.isfinite(prof)
    counts = on_top.sum(axis=0)
    heights = np.where(counts > 0, np.where(on_top, prof, 0.0).sum(axis=0) / np.maximum(counts, 1), crown)
    left, right, found = level_crossings(prof, peak, (0.5 * heights)[None, :].astype(np.float32))
    widths = ((right - left)[0] * sf.dt)[found[0]]
    res = geom.resolution
    return GaugeReading(widths_mm=widths.astype(np.float64), heights_mm=heights[found[0]].astype(np.float64),
                        depth_resolution=res.describe() if res is not None else '')


def commission(frames: Iterable[RGBDFrame], gauge: Gauge,
               cfg: MeasureConfig = MeasureConfig()) -> CommissionReport:
    """Measure the gauge on every frame and report the errors against its stated size."""
    widths, heights, frame_w, frame_h, failures = [], [], [], [], []
    resolution: Optional[str] = None
    for frame in frames:
        try:
            reading = measure_gauge(frame, cfg)
        except MeasurementError as exc:
            failures.append(str(exc))
            continue
        if reading.widths_mm.size == 0:
            failures.append('no cross-section crossed half the gauge height on both sides')
            continue
        widths.append(reading.widths_mm - gauge.width_mm)
        heights.append(reading.heights_mm - gauge.height_mm)
        frame_w.append(float(np.mean(widths[-1])))
        frame_h.append(float(np.mean(heights[-1])))
        resolution = resolution or reading.depth_resolution
    if not widths:
        nan = float('nan')
        return CommissionReport(0, len(failures), nan, nan, nan, nan, nan, nan, nan, nan, '',
                                tuple(failures))
    w, h = np.concatenate(widths), np.concatenate(heights)
    return CommissionReport(
        frames_measured=len(widths), frames_failed=len(failures),
        width_bias_mm=float(w.mean()), width_std_mm=float(w.std()),
        width_p95_mm=float(np.percentile(np.abs(w), 95)),
        height_bias_mm=float(h.mean()), height_std_mm=float(h.std()),
        height_p95_mm=float(np.percentile(np.abs(h), 95)),
        frame_width_std_mm=float(np.std(frame_w)), frame_height_std_mm=float(np.std(frame_h)),
        depth_resolution=resolution or '', failures=tuple(failures))
