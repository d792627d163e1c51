#!/usr/bin/env python3
"""Render one synthetic frame per defect class and save them as a PNG grid.

Columns: RGB with the truth boxes, an RGB close-up (x2) of the first defect (or of the
seam), depth (colour-mapped over the frame's range, dropouts black) and the relief above
the plate fitted to the depth (colour-mapped -1.5 .. 4 mm), which shows what the depth
carries at bead scale. Usage: scripts/make_sample_grid.py [--out docs/synthetic_samples.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES  # noqa: E402
from weld_vision_ros.simulator.renderer import default_intrinsics, render, sample_scene  # noqa: E402

RELIEF_RANGE_MM = (-1.5, 4.0)


def relief_mm(depth_m: np.ndarray, intrinsics) -> np.ndarray:
    """Height above a least-squares plane through the depth's back-projected points [mm]."""
    points = intrinsics.backproject(depth_m).reshape(-1, 3).astype(np.float64)
    valid = np.isfinite(points[:, 2])
    fit = points[valid][::7]
    a = np.c_[fit[:, 0], fit[:, 1], np.ones(len(fit))]
    # Two passes: the second ignores the bead and spatter that the first plane sits below.
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a, fit[:, 2], rcond=None)
        resid = fit[:, 2] - a @ coef
        keep = np.abs(resid) < 0.0005
        a, fit = a[keep], fit[keep]
    z_plane = points[:, 0] * coef[0] + points[:, 1] * coef[1] + coef[2]
    normal_z = 1.0 / np.sqrt(1.0 + coef[0] ** 2 + coef[1] ** 2)
    relief = (z_plane - points[:, 2]) * normal_z * 1000.0
    return relief.reshape(depth_m.shape)


def colorize(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    bgr[~np.isfinite(values)] = 0
    return bgr


def close_up(frame) -> np.ndarray:
    """The RGB around the first defect region (or the seam's middle), enlarged x2."""
    h, w = frame.rgb.shape[:2]
    if frame.truth.regions:
        r = frame.truth.regions[0]
        cx, cy = r.x_px + r.width_px // 2, r.y_px + r.height_px // 2
    else:
        (x0, y0), (x1, y1) = frame.seam_line_px
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
    cw, ch = w // 4, h // 4
    cx, cy = min(max(cx, cw), w - cw), min(max(cy, ch), h - ch)
    crop = cv2.cvtColor(frame.rgb[cy - ch:cy + ch, cx - cw:cx + cw], cv2.COLOR_RGB2BGR)
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_NEAREST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='docs/synthetic_samples.png')
    parser.add_argument('--seed', type=int, default=3)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--scale', type=float, default=0.4, help='tile scale in the grid')
    args = parser.parse_args(argv)
    intrinsics = default_intrinsics(args.width, args.height)
    rng = np.random.default_rng(args.seed)
    rows = []
    for name in DEFAULT_CLASS_NAMES:
        frame = render(sample_scene(rng, name), intrinsics, rng)
        bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
        for region in frame.truth.regions:
            cv2.rectangle(bgr, (region.x_px, region.y_px),
                          (region.x_px + region.width_px - 1, region.y_px + region.height_px - 1),
                          (0, 255, 255), 1)
        depth = frame.depth_m
        lo, hi = np.nanpercentile(depth, 1), np.nanpercentile(depth, 99)
        tiles = [bgr, close_up(frame), colorize(depth, lo, hi),
                 colorize(relief_mm(depth, intrinsics), *RELIEF_RANGE_MM)]
        t = frame.truth
        label = (f'{name}: W {t.width_mm:.2f} mm  H {t.height_mm:.2f} mm  '
                 f'UC {t.undercut_depth_mm:.2f} mm  D {t.plate_distance_m * 1000:.0f} mm')
        row = np.concatenate(tiles, axis=1)
        row = cv2.resize(row, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA)
        cv2.putText(row, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(row, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(rows, axis=0), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
