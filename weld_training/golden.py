"""Safe promotion: a candidate model against the serving one on a golden set, paired.

Before the cell switches to a new model, both models classify the same labelled frames of
a fixed golden recording (one or more bags, as the cell recorded them). The gate is a
paired non-inferiority test on those frames, not a comparison of two accuracies measured
apart: with b frames only the serving model gets right and c frames only the candidate
gets right, out of n, the accuracy difference is d = (c - b) / n with the paired standard
error se = sqrt(b + c - (c - b)^2 / n) / n (McNemar's set-up). The candidate passes when the
one-sided 95 % lower bound d - 1.645 se is above -margin: it has been shown to be at most
`margin` worse. With fewer than `min_frames` frames the gate refuses: a small golden set
cannot show anything (at n = 100 one disagreement moves d by 0.01).

The models run exactly as on the cell: the edge's ONNX classifier (`load_classifier`:
validated, with its own preprocessing preset), on frames decoded by the training reader.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

MIN_GOLDEN_FRAMES = 100
DEFAULT_MARGIN = 0.02
Z_ONE_SIDED_95 = 1.645


class GoldenGateError(RuntimeError):
    """The gate could not be run (no frames, unreadable model or bag, too few frames)."""


@dataclass(frozen=True)
class GateResult:
    frames: int
    candidate_accuracy: float
    serving_accuracy: float
    only_candidate_right: int        # c
    only_serving_right: int          # b
    difference: float                # candidate - serving, paired
    lower_bound: float               # one-sided 95 %
    margin: float
    passed: bool
    serving: str = ''
    candidate: str = ''

    def describe(self) -> str:
        verdict = 'passes' if self.passed else 'REFUSED'
        return (f'golden set, {self.frames} frames: candidate {self.candidate_accuracy:.3f} vs serving '
                f'{self.serving_accuracy:.3f} accuracy; only the candidate right on {self.only_candidate_right}, '
                f'only the serving model on {self.only_serving_right}; paired difference '
                f'{self.difference:+.3f}, 95 % lower bound {self.lower_bound:+.3f} against the margin '
                f'-{self.margin:.3f}: {verdict}')


def paired_gate(candidate_correct: Sequence[bool], serving_correct: Sequence[bool],
                margin: float = DEFAULT_MARGIN, min_frames: int = MIN_GOLDEN_FRAMES) -> GateResult:
    """The non-inferiority decision from per-frame correctness of both models (same frames)."""
    cand = np.asarray(candidate_correct, dtype=bool)
    serv = np.asarray(serving_correct, dtype=bool)
    if cand.shape != serv.shape or cand.ndim != 1:
        raise GoldenGateError(f'the two models must be scored on the same frames; got {cand.shape} and {serv.shape}')
    n = int(cand.size)
    if n < min_frames:
        raise GoldenGateError(f'the golden set has {n} labelled frames; the gate needs at least {min_frames}')
    if not (0 <= margin < 1):
        raise GoldenGateError(f'margin must be in [0, 1), got {margin}')
    b = int(np.count_nonzero(serv & ~cand))
    c = int(np.count_nonzero(cand & ~serv))
    d = (c - b) / n
    se = math.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n
    lower = d - Z_ONE_SIDED_95 * se
    return GateResult(n, float(cand.mean()), float(serv.mean()), c, b, d, lower, float(margin),
                      lower > -margin - 1e-12)


def golden_frames(bags: Sequence[str | Path], class_names: Optional[Sequence[str]] = None) -> list:
    """The labelled frames of the golden bags (the training reader: sidecar or label topic)."""
    from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES

    from .bags import BagError, find_bags, iter_bag_frames
    try:
        found = find_bags(bags)
    except BagError as exc:
        raise GoldenGateError(str(exc)) from None
    frames = []
    for bag in found:
        try:
            frames.extend(iter_bag_frames(bag, class_names=class_names or DEFAULT_CLASS_NAMES))
        except BagError as exc:
            raise GoldenGateError(str(exc)) from None
    if not frames:
        raise GoldenGateError(f'no labelled frames in {", ".join(map(str, bags))}')
    return frames


def model_correct(model_path: str | Path, frames: Sequence) -> np.ndarray:
    """Per-frame correctness of a model as the cell runs it; a not-inspected verdict is wrong."""
    from weld_vision_ros.core.frames import RGBDFrame
    from weld_vision_ros.core.onnx_classifier import ModelValidationError, load_classifier

    path = Path(model_path)
    try:
        clf = load_classifier(path.name, models_dir=str(path.parent.resolve()))
    except ModelValidationError as exc:
        raise GoldenGateError(f'{path}: {exc}') from None
    out = np.zeros(len(frames), dtype=bool)
    for i, f in enumerate(frames):
        if f.intrinsics is None:
            continue
        verdict = clf.classify(RGBDFrame(f.rgb, f.depth_m, f.intrinsics, stamp_ns=f.stamp_ns))
        out[i] = verdict.inspected and verdict.defect_class == f.label
    return out


def golden_gate(candidate: str | Path, serving: str | Path, bags: Sequence[str | Path],
                margin: float = DEFAULT_MARGIN, min_frames: int = MIN_GOLDEN_FRAMES) -> GateResult:
    frames = golden_frames(bags)
    if len(frames) < min_frames:
        raise GoldenGateError(f'the golden set has {len(frames)} labelled frames; the gate needs at '
                              f'least {min_frames}')
    result = paired_gate(model_correct(candidate, frames), model_correct(serving, frames), margin, min_frames)
    return GateResult(**{**result.__dict__, 'candidate': str(candidate), 'serving': str(serving)})
