"""`weld-vision commission`: measure a gauge of known size and report the camera's error.

    weld-vision commission --width-mm 10 --height-mm 3 --synthetic 20 --depth 16UC1

    weld-vision commission --width-mm 10 --height-mm 3 --live 30 [--timeout 60] [--ros-args ...]

measures the gauge (a machined bar, core.commission) on frames of the synthetic camera
(rendered gauges: `simulator.renderer.gauge_scene`, depth as rendered, 32FC1, or as a
D4xx sends it, 16UC1 millimetres), or with --live on the next N frames of the cell's camera
topics (the synchronised RGB-D input every node uses: its parameters, such as
depth_scale_m or remaps, after --ros-args), and prints the width and height error with its spread
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


def live_frames(count: int, timeout_s: float, ros_args: Sequence[str] = ()) -> list[RGBDFrame]:
    """The next `count` synchronised RGB-D frames of the camera topics (fewer on timeout)."""
    import time

    import rclpy
    from rclpy.node import Node

    from weld_vision_ros.ros.rgbd_input import RgbdInput
    frames: list[RGBDFrame] = []
    rclpy.init(args=['commission', '--ros-args', *ros_args] if ros_args else None)
    node = None
    try:
        node = Node('weld_commission')
        node.input = RgbdInput(node, lambda frame, header, received_s: frames.append(frame))
        deadline = time.monotonic() + timeout_s
        while len(frames) < count and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        drops = node.input.diagnostic_values().get('drops_total', 0)
        if drops:
            print(f'{drops} camera frame(s) dropped as unusable while collecting (see the rule node\'s drop reasons)')
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return frames[:count]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='weld-vision commission', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--width-mm', type=float, required=True, help='gauge width across the seam [mm]')
    p.add_argument('--height-mm', type=float, required=True, help='gauge height above the plate [mm]')
    p.add_argument('--synthetic', type=int, default=20, metavar='N',
                   help='frames of the synthetic camera to measure (default 20)')
    p.add_argument('--live', type=int, default=0, metavar='N',
                   help='measure the next N frames of the live camera topics instead of the synthetic camera')
    p.add_argument('--timeout', type=float, default=60.0, help='with --live: seconds to wait for the frames')
    p.add_argument('--depth', choices=DEPTH_FORMATS, default='32FC1',
                   help='depth format of the synthetic camera')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--tolerance-mm', type=float, default=0.5,
                   help='largest |bias| + 2 spread accepted for width and height (default 0.5 mm)')
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args: list[str] = []
    if '--ros-args' in argv:
        i = argv.index('--ros-args')
        argv, ros_args = argv[:i], argv[i + 1:]
    args = p.parse_args(argv)
    if args.live < 0:
        p.error('--live must be >= 1')
    if args.synthetic < 1:
        p.error('--synthetic must be >= 1')
    try:
        gauge = Gauge(args.width_mm, args.height_mm)
    except ValueError as exc:
        p.error(str(exc))
    if args.live:
        frames = live_frames(args.live, args.timeout, ros_args)
        print(f'{len(frames)} of {args.live} live frame(s) received')
        if not frames:
            print('no frame arrived: is the camera publishing (and on this ROS_DOMAIN_ID)?')
            return 2
        report = commission(frames, gauge)
    else:
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
