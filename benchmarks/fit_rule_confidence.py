#!/usr/bin/env python3
"""Fit the rule inspector's confidence calibration (Platt scaling) on synthetic validation frames.

    python benchmarks/fit_rule_confidence.py            # prints the rules.confidence_* values

The rule verdict's confidence is P(verdict right) = 1 / (1 + exp(-(b + w . f))) over the
decision's features f (core.rules.CONFIDENCE_FEATURES). This script renders validation
frames from seeds that the benchmark never reads: in range (seeds 20_000 on) and with the
benchmark's pushed renderer ranges (seeds 40_000 on), each in 32FC1 and as 16UC1
millimetres from a D4xx-like camera, runs the rules with the uncalibrated confidence,
and fits b and w by logistic regression (Newton's method, a small L2 penalty) to whether
each inspected verdict was right. The values go into core.rules.RuleConfig's defaults
(and so into config/weld_cell.yaml).
"""
from __future__ import annotations

import os

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_rules import CLASSES, D4XX_SUBPIXEL_RANGE, pushed_scene  # noqa: E402
from weld_vision_ros.core.frames import RGBDFrame  # noqa: E402
from weld_vision_ros.core.rules import CONFIDENCE_FEATURES, RuleConfig, inspect_frame  # noqa: E402
from weld_vision_ros.simulator.renderer import d4xx_16uc1, default_intrinsics, render, sample_scene  # noqa: E402

IN_RANGE_SEEDS = 20_000
PUSHED_SEEDS = 40_000
# The uncalibrated confidence: the winner's probability itself (logit weight 1, nothing else).
UNCALIBRATED = dict(confidence_bias=0.0, confidence_w_logit=1.0, confidence_w_margin=0.0,
                    confidence_w_competing=0.0, confidence_w_good=0.0, confidence_w_image_noise=0.0,
                    confidence_w_depth_bias=0.0, confidence_w_unchecked=0.0, confidence_w_brightness=0.0,
                    confidence_w_strength=0.0, confidence_w_depth_noise=0.0, confidence_w_width_uncertainty=0.0)
FIELDS = ('confidence_w_logit', 'confidence_w_margin', 'confidence_w_competing', 'confidence_w_good',
          'confidence_w_image_noise', 'confidence_w_depth_bias', 'confidence_w_unchecked',
          'confidence_w_brightness', 'confidence_w_strength', 'confidence_w_depth_noise',
          'confidence_w_width_uncertainty')


def frame_rows(job: tuple[int, bool]) -> list[tuple[tuple[float, ...], bool]]:
    """(features, right) of one scene's inspected verdicts in both depth formats."""
    seed, pushed = job
    cv2.setNumThreads(1)
    cls = CLASSES[seed % len(CLASSES)]
    if pushed:
        scene, rng = pushed_scene(seed, cls)
    else:
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, cls)
    intr = default_intrinsics(640, 480)
    cfg = RuleConfig(**UNCALIBRATED)
    state = rng.bit_generator.state
    out = []
    for fmt in ('32FC1', '16UC1'):
        rng.bit_generator.state = state
        s = scene
        if fmt == '16UC1':
            s = d4xx_16uc1(scene, float(np.random.default_rng([seed, 16]).uniform(*D4XX_SUBPIXEL_RANGE)))
        f = render(s, intr, rng)
        result = inspect_frame(RGBDFrame(f.rgb, f.depth_m, intr, depth_unit_m=s.depth_unit_m), cfg)
        if result.verdict is not None and result.verdict.inspected:
            out.append((result.confidence_features, result.verdict.defect_class == cls))
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iterations: int = 50) -> np.ndarray:
    """Weights (intercept first) of a logistic regression of y on x, by Newton's method."""
    a = np.hstack([np.ones((x.shape[0], 1)), x])
    w = np.zeros(a.shape[1])
    penalty = np.full(a.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -50, 50)))
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(a.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--frames', type=int, default=600, help='scenes per set (in range, pushed)')
    p.add_argument('--workers', type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument('--save', type=Path, help='also write the features and outcomes (npz)')
    args = p.parse_args(argv)
    jobs = [(IN_RANGE_SEEDS + i, False) for i in range(args.frames)]
    jobs += [(PUSHED_SEEDS + i, True) for i in range(args.frames)]
    with mp.get_context('fork').Pool(args.workers) as pool:
        rows = [r for part in pool.map(frame_rows, jobs, chunksize=8) for r in part]
    x = np.array([f for f, _ in rows], dtype=np.float64)
    y = np.array([ok for _, ok in rows], dtype=np.float64)
    if args.save:
        np.savez(args.save, x=x, y=y)
    w = fit_logistic(x, y)
    print(f'{len(rows)} inspected verdicts, {int(len(y) - y.sum())} wrong; features {CONFIDENCE_FEATURES}')
    print(f'confidence_bias: {w[0]:.4f}')
    for name, value in zip(FIELDS, w[1:]):
        print(f'{name}: {value:.4f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
