"""Live tally of verdicts against ground truth, for the demo and the end-to-end checks."""
from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.core.stats import RollingLatency


@dataclass(frozen=True)
class TruthRecord:
    defect_class: str
    width_mm: float
    height_mm: float


class Scoreboard:
    """Pairs verdicts and bead measurements with ground truth by stamp and keeps score."""

    def __init__(self, class_names: Sequence[str] = DEFAULT_CLASS_NAMES, max_pending: int = 600) -> None:
        self.class_names = tuple(class_names)
        self._truth: OrderedDict[int, TruthRecord] = OrderedDict()
        self._max_pending = max_pending
        self.confusion: dict[str, Counter] = defaultdict(Counter)
        self.methods: Counter[str] = Counter()
        self.verdicts = 0
        self.unmatched_verdicts = 0
        self.width_err_mm: list[float] = []
        self.height_err_mm: list[float] = []
        self.invalid_beads: Counter[str] = Counter()
        self.latency_ms = RollingLatency(window=2000)
        self.node_latency_ms = RollingLatency(window=2000)

    def add_truth(self, stamp_ns: int, truth: TruthRecord) -> None:
        self._truth[stamp_ns] = truth
        while len(self._truth) > self._max_pending:
            self._truth.popitem(last=False)

    def add_verdict(self, stamp_ns: int, defect_class: str, method: str,
                    latency_ms: Optional[float] = None, node_latency_ms: Optional[float] = None) -> None:
        self.verdicts += 1
        self.methods[method] += 1
        if latency_ms is not None:
            self.latency_ms.add(latency_ms)
        if node_latency_ms is not None:
            self.node_latency_ms.add(node_latency_ms)
        truth = self._truth.get(stamp_ns)
        if truth is None:
            self.unmatched_verdicts += 1
            return
        self.confusion[truth.defect_class][defect_class] += 1

    def add_bead(self, stamp_ns: int, valid: bool, reason: str, width_mm: float, height_mm: float) -> None:
        if not valid:
            self.invalid_beads[reason] += 1
            return
        truth = self._truth.get(stamp_ns)
        if truth is None or truth.defect_class == 'gap':
            return  # a gap's bead is not continuous: its mean width is not comparable
        self.width_err_mm.append(abs(width_mm - truth.width_mm))
        self.height_err_mm.append(abs(height_mm - truth.height_mm))

    @property
    def scored(self) -> int:
        return sum(sum(c.values()) for c in self.confusion.values())

    def accuracy(self) -> float:
        n = self.scored
        return sum(self.confusion[c][c] for c in self.confusion) / n if n else float('nan')

    def per_class(self) -> dict[str, tuple[int, float, float]]:
        """class -> (frames of that class, recall, precision)."""
        out = {}
        for c in self.class_names:
            support = sum(self.confusion[c].values())
            predicted = sum(self.confusion[t][c] for t in self.confusion)
            tp = self.confusion[c][c]
            out[c] = (support, tp / support if support else float('nan'),
                      tp / predicted if predicted else float('nan'))
        return out

    def table(self, elapsed_s: float) -> str:
        lines = [f'{"class":<10} {"frames":>6} {"recall":>7} {"precision":>9}']
        for c, (n, r, p) in self.per_class().items():
            lines.append(f'{c:<10} {n:>6} {r:>7.2f} {p:>9.2f}')
        rate = self.verdicts / elapsed_s if elapsed_s > 0 else 0.0
        w = np.mean(self.width_err_mm) if self.width_err_mm else float('nan')
        h = np.mean(self.height_err_mm) if self.height_err_mm else float('nan')
        lines.append(f'accuracy {self.accuracy():.3f} on {self.scored} frames | verdicts {rate:.1f}/s '
                     f'| methods {dict(self.methods)}')
        lines.append(f'bead width MAE {w:.3f} mm, height MAE {h:.3f} mm on {len(self.width_err_mm)} frames'
                     + (f' | not measured: {dict(self.invalid_beads)}' if self.invalid_beads else ''))
        lines.append(f'latency camera->verdict p50 {self.latency_ms.percentile(50):.1f} ms '
                     f'p99 {self.latency_ms.percentile(99):.1f} ms | in node p50 '
                     f'{self.node_latency_ms.percentile(50):.1f} ms')
        return '\n'.join(lines)
