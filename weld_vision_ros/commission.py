"""`weld-vision commission`: measure a gauge of known size and report the camera's error.

    weld-vision commission --width-mm 10 --height-mm 3 --synthetic 20 --depth 16UC1

measures the gauge (a machined bar, core.commission) on frames of the synthetic camera
(rendered gauges: `simulator.renderer.gauge_scene`, depth as rendered, 32FC1, or as a
D4xx sends it, 16UC1 millimetres) and prints the width and height error with its spread
and the depth resolution seen. Exit status 0 when the width and height errors (|bias| +
2 spread) are within --tolerance-mm, 1 when not, 2 when nothing could be measured.
"""
from __future__ import annotations

import argparse
import sys
from typing import Iterator, Optional, Sequence

import numpy as np

from weld_vision_ros.core.commission import Gauge, commission
from weld_vision_ros.core.frames import RGBDFrame
from weld_vision_ros.simulator.renderer import d4xx_16uc1, default_intrinsics, gauge_scene, render

DEPTH_FORMATS = ('32FC1', '16UC1')


def synthetic_gauge_frames(gauge: Gauge, count: int, depth: str, seed: int,
                           width: int = 640, height: int = 480) -> Iterator[RGBDFrame]:
    """`count` frames of the gauge through the synthetic camera (random views and light)."""
    intr = default_intrinsics(width, height)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        scene = gauge_scene(rng, gauge.width_mm, gauge.height_mm)
        if depth == '16UC1':
            scene = d4xx_16uc1(scene)
        f = render(scene, intr, rng)
        yield RGBDFrame(f.rgb, f.depth_m, intr, stamp_ns=i, depth_unit_m=scene.depth_unit_m)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='weld-vision commission', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--width-mm', type=float, required=True, help='gauge width across the seam [mm]')
    p.add_argument('--height-mm', type=float, required=True, help='gauge height above the plate [mm]')
    p.add_argument('--synthetic', type=int, default=20, metavar='N',
                   help='frames of the synthetic camera to measure (default 20)')
    p.add_argument('--depth', choices=DEPTH_FORMATS, default='32FC1',
                   help='depth format of the synthetic camera')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--tolerance-mm', type=float, default=0.5,
                   help='largest |bias| + 2 spread accepted for width and height (default 0.5 mm)')
    args = p.parse_args(argv)
    if args.synthetic < 1:
        p.error('--synthetic must be >= 1')
    try:
        gauge = Gauge(args.width_mm, args.height_mm)
    except ValueError as exc:
        p.error(str(exc))
    report = commission(synthetic_gauge_frames(gauge, args.synthetic, args.depth, args.seed), gauge)
    print('\n'.join(report.lines(gauge)))
    if report.frames_measured == 0:
        return 2
    worst = max(abs(report.width_bias_mm) + 2 * report.width_std_mm,
                abs(report.height_bias_mm) + 2 * report.height_std_mm)
    print(f'{"PASS" if worst <= args.tolerance_mm else "FAIL"}: worst |bias| + 2 spread {worst:.3f} mm '
          f'(tolerance {args.tolerance_mm:.3f} mm)')
    return 0 if worst <= args.tolerance_mm else 1


if __name__ == '__main__':
    sys.exit(main())
