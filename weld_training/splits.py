"""Stratified train/val/test splits, grouped so that the frames of one weld stay together.

Consecutive frames of one weld are near-duplicates: a split that put some in train and
some in test would measure memory, not generalisation. Groups (welds) are therefore
assigned whole, class by class (a group counts for its most frequent label), each to
the split furthest below its share of that class's frames. Seeded.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Mapping, Sequence

import numpy as np

SPLIT_NAMES = ('train', 'val', 'test')
DEFAULT_FRACTIONS = {'train': 0.70, 'val': 0.15, 'test': 0.15}


class SplitError(ValueError):
    """Split fractions or data that cannot be split as asked."""


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validate {train, val, test} fractions: non-negative, train positive, summing to 1."""
    unknown = set(fractions) - set(SPLIT_NAMES)
    if unknown:
        raise SplitError(f'unknown split(s) {sorted(unknown)}; valid splits are {", ".join(SPLIT_NAMES)}')
    fr = {name: float(fractions.get(name, 0.0)) for name in SPLIT_NAMES}
    if any(v < 0 for v in fr.values()) or fr['train'] <= 0:
        raise SplitError(f'split fractions must be >= 0 with train > 0, got {fr}')
    if abs(sum(fr.values()) - 1.0) > 1e-6:
        raise SplitError(f'split fractions must sum to 1, got {fr} (sum {sum(fr.values()):.4f})')
    return fr


def grouped_stratified_split(labels: Sequence[str], groups: Sequence[str],
                             fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                             seed: int = 0) -> list[str]:
    """Assign each sample a split name; samples of one group always share a split.

    labels, groups: one entry per sample. For every class, its groups are shuffled
    (seeded); when the class has at least as many groups as there are non-empty splits,
    each of those splits first receives one group, so that val and test see every such
    class; the remaining groups go, largest first, to the split with the largest
    shortfall against its fraction of the class's frames.
    """
    if len(labels) != len(groups):
        raise SplitError(f'labels and groups differ in length: {len(labels)} vs {len(groups)}')
    fr = check_fractions(fractions)
    active = [s for s in SPLIT_NAMES if fr[s] > 0]
    group_labels: dict[str, Counter] = defaultdict(Counter)
    for lab, g in zip(labels, groups):
        group_labels[g][lab] += 1
    by_class: dict[str, list[str]] = defaultdict(list)
    for g in sorted(group_labels):
        major = max(sorted(group_labels[g]), key=lambda lab: group_labels[g][lab])
        by_class[major].append(g)

    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for cls in sorted(by_class):
        gs = list(by_class[cls])
        rng.shuffle(gs)
        size = {g: sum(group_labels[g].values()) for g in gs}
        total = sum(size.values())
        filled = {s: 0 for s in active}
        rest = gs
        if len(gs) >= len(active):
            # Smallest splits first so the rare ones are guaranteed a group.
            for s, g in zip(sorted(active, key=lambda s: fr[s]), gs):
                assignment[g] = s
                filled[s] += size[g]
            rest = gs[len(active):]
        for g in sorted(rest, key=lambda g: -size[g]):
            s = max(active, key=lambda s: (fr[s] * total - filled[s]) / fr[s])
            assignment[g] = s
            filled[s] += size[g]
    return [assignment[g] for g in groups]


def split_summary(labels: Sequence[str], splits: Sequence[str], class_names: Sequence[str]) -> dict:
    """Frames per class per split: {split: {class: count}}."""
    out = {s: {c: 0 for c in class_names} for s in SPLIT_NAMES}
    for lab, s in zip(labels, splits):
        out[s][lab] += 1
    return out
