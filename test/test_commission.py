"""Commissioning check: a gauge of known size measured through the synthetic camera."""
from __future__ import annotations

import numpy as np
import pytest

from weld_vision_ros.commission import main, synthetic_gauge_frames
from weld_vision_ros.core.commission import Gauge, GaugeError, commission


@pytest.mark.parametrize('depth', ['32FC1', '16UC1'])
def test_a_rendered_gauge_is_measured_to_within_a_pixel(depth: str) -> None:
    gauge = Gauge(10.0, 3.0)
    report = commission(synthetic_gauge_frames(gauge, 4, depth, seed=3), gauge)
    assert report.frames_measured == 4 and report.frames_failed == 0
    # the renderer's pixels are 0.25-0.5 mm on the plate: the half-height width of a
    # square-edged bar is found to about half a pixel, its top height far better
    assert abs(report.width_bias_mm) < 0.25
    assert abs(report.height_bias_mm) < 0.1
    assert report.width_std_mm < 0.3 and report.height_std_mm < 0.3
    assert ('1.00 mm depth steps' in report.depth_resolution) == (depth == '16UC1')


def test_a_misstated_gauge_shows_as_its_error() -> None:
    # the same frames against a gauge stated 1 mm wider and 0.5 mm lower: the report says so
    true, stated = Gauge(8.0, 2.5), Gauge(9.0, 2.0)
    frames = list(synthetic_gauge_frames(true, 3, '32FC1', seed=4))
    right, wrong = commission(frames, true), commission(frames, stated)
    assert wrong.width_bias_mm == pytest.approx(right.width_bias_mm - 1.0, abs=1e-9)
    assert wrong.height_bias_mm == pytest.approx(right.height_bias_mm + 0.5, abs=1e-9)


def test_frames_without_a_gauge_are_counted_as_failed() -> None:
    gauge = Gauge(8.0, 2.5)
    frame = next(synthetic_gauge_frames(gauge, 1, '32FC1', seed=5))
    flat = np.where(np.isfinite(frame.depth_m), np.float32(np.nanmedian(frame.depth_m)), np.float32(np.nan))
    bare = type(frame)(frame.rgb, flat.astype(np.float32), frame.intrinsics)
    report = commission([bare], gauge)
    assert report.frames_measured == 0 and report.frames_failed == 1
    assert report.failures[0].startswith('no bead in view')


def test_command_passes_fails_and_refuses_bad_sizes(capsys) -> None:
    assert main(['--width-mm', '10', '--height-mm', '3', '--synthetic', '2']) == 0
    assert 'PASS' in capsys.readouterr().out
    # a tolerance below what the camera achieves fails (exit status 1)
    assert main(['--width-mm', '10', '--height-mm', '3', '--synthetic', '2', '--tolerance-mm', '0.001']) == 1
    assert 'FAIL' in capsys.readouterr().out
    with pytest.raises(GaugeError, match='must be > 0'):
        Gauge(0.0, 3.0)
    with pytest.raises(SystemExit):
        main(['--width-mm', '-1', '--height-mm', '3'])
