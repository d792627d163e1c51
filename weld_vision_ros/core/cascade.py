"""Rule / ML / hybrid arbitration of defect verdicts, with the counts diagnostics report.

Modes:
  rule    the rule verdict, as it is (method 'rule').
  ml      the model's verdict on every frame (method 'ml').
  hybrid  the rules run first; the model runs only on frames whose rule confidence is
          below `hybrid_threshold`. Combination rule: when the rules are sure
          (confidence >= threshold) their verdict stands; when they are unsure the model
          decides the class, the confidence and the probabilities, and the rule's regions
          of that class are kept (the model classifies whole frames and localises nothing).
          The result carries method 'hybrid', and the model's version when it decided.

Not inspectable, never good: a frame on which the rules cannot measure a bead (no bead in
view, too little valid depth, an unusable image) gets a *not inspected* verdict
(`Verdict.not_inspected`, status_reason no_bead / no_depth / bad_frame, the rules' reason
in status_detail) in every mode, and the model is not asked: a classifier trained on welds
answers some weld class for any image (a black frame, noise, a bare plate), and 'good'
would pass a seam nobody inspected. In 'ml' mode the rules therefore run first on every
frame, as the inspectability check (their seam location then feeds the model's strip).

Fallback: in 'ml' and 'hybrid' mode, when no model is loaded or the model fails on a
frame (InferenceError), the frame gets the rule verdict unchanged (method 'rule', so a
consumer sees that no model took part) and the reason is recorded for diagnostics.

The model is a reference swapped in one assignment (`swap_classifier`); `run` reads it
once per frame, so a frame is served entirely by one model, never by a half-swapped one.

One pass per frame: the rule stage's Inspection carries the seam it located; when the
model then runs on the frame, its seam strip is cut from that location (if the rules found
it with the model's own seam-finder settings, see core.preprocess) instead of locating
the seam again.

Timings: a Verdict's latency_ms is frame reception to verdict, which only the node knows
(it fills it in); the cascade reports its own compute times in CascadeResult (rule_ms,
ml_ms).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Optional, Protocol

from .classes import DEFAULT_CLASS_NAMES
from .frames import RGBDFrame
from .onnx_classifier import InferenceError
from .measure import SeamLocation
from .results import (METHOD_HYBRID, METHOD_ML, METHOD_RULE, REASON_BAD_FRAME, REASON_DEPTH_UNRESOLVED,
                      REASON_NO_BEAD, REASON_NO_DEPTH, BeadMeasurement, Verdict)
from .rules import Inspection

MODE_RULE, MODE_ML, MODE_HYBRID = METHOD_RULE, METHOD_ML, METHOD_HYBRID
MODES = (MODE_RULE, MODE_ML, MODE_HYBRID)
DEFAULT_HYBRID_THRESHOLD = 0.70

FALLBACK_NO_MODEL = 'no_model'
FALLBACK_ML_ERROR = 'ml_error'

RuleFn = Callable[[RGBDFrame], Inspection]


class Classifier(Protocol):
    """What the cascade needs of a model (OnnxClassifier, or a stand-in in tests)."""

    @property
    def version(self) -> str: ...

    def classify(self, frame: RGBDFrame, seam: Optional[SeamLocation] = None) -> Verdict: ...


@dataclass(frozen=True)
class CascadeConfig:
    """mode: 'rule', 'ml' or 'hybrid'. hybrid_threshold: rule confidence [0, 1] below which
    hybrid mode asks the model."""

    mode: str = MODE_HYBRID
    hybrid_threshold: float = DEFAULT_HYBRID_THRESHOLD

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f'mode must be one of {", ".join(MODES)}; got {self.mode!r}')
        if not 0.0 <= self.hybrid_threshold <= 1.0:
            raise ValueError(f'hybrid_threshold must be in [0, 1]; got {self.hybrid_threshold}')


@dataclass(frozen=True)
class CascadeResult:
    """One frame's outcome.

    final: the verdict to publish (not inspected when the rules measured no bead, see above).
    ml: the model's own verdict when it ran and succeeded. rule, bead: the rule core's
    outputs when the rules ran (rule is None when no bead was measured). fallback: why the
    rule result stands in for the model ('' when it does not), e.g. 'no model loaded'.
    rule_ms, ml_ms: compute time of the rule stage and of the model (preprocessing and
    inference) on this frame [ms], 0 for a stage that did not run.
    """

    final: Optional[Verdict]
    ml: Optional[Verdict] = None
    rule: Optional[Verdict] = None
    bead: Optional[BeadMeasurement] = None
    ml_invoked: bool = False
    fallback: str = ''
    rule_ms: float = 0.0
    ml_ms: float = 0.0


@dataclass
class CascadeStats:
    """Counts since start. by_method counts final verdicts; fallbacks counts frames that got
    the rule verdict in place of the model's, by kind (FALLBACK_*); not_inspected counts the
    frames published as not inspected, by reason; no_verdict counts frames that got no
    verdict at all."""

    frames: int = 0
    ml_invocations: int = 0
    ml_errors: int = 0
    no_verdict: int = 0
    by_method: Counter = None  # type: ignore[assignment]
    fallbacks: Counter = None  # type: ignore[assignment]
    not_inspected: Counter = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.not_inspected = Counter() if self.not_inspected is None else self.not_inspected
        self.by_method = Counter() if self.by_method is None else self.by_method
        self.fallbacks = Counter() if self.fallbacks is None else self.fallbacks

    @property
    def ml_invocation_ratio(self) -> float:
        """Share of frames on which the model ran (0 before the first frame)."""
        return self.ml_invocations / self.frames if self.frames else 0.0


def combine(rule: Optional[Verdict], ml: Verdict) -> Verdict:
    """Hybrid verdict for a frame the rules were unsure about (or had no verdict on): the
    model decides; the rule's regions of the decided class are kept."""
    regions = () if rule is None else tuple(r for r in rule.regions if r.defect_class == ml.defect_class)
    return Verdict(defect_class=ml.defect_class, confidence=ml.confidence,
                   class_names=ml.class_names, probabilities=ml.probabilities,
                   method=METHOD_HYBRID, model_version=ml.model_version, regions=regions)


def not_inspected_reason(measurement_reason: str) -> str:
    """The verdict vocabulary's reason for a bead the rules could not measure, from the
    measurement's own reason (core.measure's MeasurementError texts)."""
    text = measurement_reason.lower()
    if text.startswith(REASON_DEPTH_UNRESOLVED):
        return REASON_DEPTH_UNRESOLVED
    if text.startswith('no bead'):
        return REASON_NO_BEAD
    if 'valid depth samples' in text or 'depth valid on only' in text:
        return REASON_NO_DEPTH
    return REASON_BAD_FRAME


def not_inspected_verdict(bead: BeadMeasurement, method: str) -> Verdict:
    """The verdict published for a frame whose bead the rules could not measure."""
    return Verdict.not_inspected(not_inspected_reason(bead.reason), bead.reason or 'no bead measured',
                                 DEFAULT_CLASS_NAMES, method)


class HybridCascade:
    """Runs the rules and/or the model on each frame according to the current config.

    `config` and the classifier may be replaced from another thread while `run` is
    working: each is read once per frame.
    """

    def __init__(self, rule_fn: RuleFn, config: CascadeConfig = CascadeConfig(),
                 classifier: Optional[Classifier] = None) -> None:
        self._rule_fn = rule_fn
        self.config = config
        self._classifier = classifier
        self.stats = CascadeStats()
        self.last_ml_error = ''

    @property
    def classifier(self) -> Optional[Classifier]:
        return self._classifier

    def swap_classifier(self, classifier: Optional[Classifier]) -> Optional[Classifier]:
        """Serve later frames with `classifier` (None unloads); returns the previous one."""
        old, self._classifier = self._classifier, classifier
        self.last_ml_error = ''
        return old

    def fallback_state(self) -> tuple[bool, str]:
        """(whether frames now get the rule verdict in place of the model's, why)."""
        config, classifier = self.config, self._classifier
        if config.mode == MODE_RULE:
            return False, ''
        if classifier is None:
            return True, 'no model loaded'
        if self.last_ml_error:
            return True, f'the model failed on the last frame it ran on: {self.last_ml_error}'
        return False, ''

    def run(self, frame: RGBDFrame) -> CascadeResult:
        config, classifier = self.config, self._classifier
        timing = _Timing()
        rule = self._rules(frame, timing)
        verdict, bead = rule.verdict, rule.measurement
        seam = rule.geometry.location if rule.geometry is not None else None
        if verdict is None:  # not inspectable: nobody classifies it, in any mode
            result = CascadeResult(final=not_inspected_verdict(bead, config.mode), bead=bead)
        elif config.mode == MODE_RULE:
            result = CascadeResult(final=verdict, rule=verdict, bead=bead)
        elif config.mode == MODE_ML:
            ml, error = self._try_ml(classifier, frame, seam, timing)
            if ml is not None:
                result = CascadeResult(final=ml, ml=ml, rule=verdict, bead=bead, ml_invoked=True)
            else:
                result = CascadeResult(final=verdict, rule=verdict, bead=bead,
                                       ml_invoked=classifier is not None, fallback=error)
        else:
            if classifier is None:
                result = CascadeResult(final=verdict, rule=verdict, bead=bead, fallback='no model loaded')
            elif verdict.confidence >= config.hybrid_threshold:
                result = CascadeResult(final=replace(verdict, method=METHOD_HYBRID), rule=verdict, bead=bead)
            else:
                ml, error = self._try_ml(classifier, frame, seam, timing)
                if ml is None:
                    result = CascadeResult(final=verdict, rule=verdict, bead=bead, ml_invoked=True,
                                           fallback=error)
                else:
                    result = CascadeResult(final=combine(verdict, ml), ml=ml, rule=verdict, bead=bead,
                                           ml_invoked=True)
        result = replace(result, rule_ms=timing.rule_ms, ml_ms=timing.ml_ms)
        self._count(result)
        return result

    def _rules(self, frame: RGBDFrame, timing: '_Timing') -> Inspection:
        t0 = time.perf_counter()
        try:
            return self._rule_fn(frame)
        finally:
            timing.rule_ms = (time.perf_counter() - t0) * 1000.0

    def _try_ml(self, classifier: Optional[Classifier], frame: RGBDFrame, seam: Optional[SeamLocation],
                timing: '_Timing') -> tuple[Optional[Verdict], str]:
        if classifier is None:
            return None, 'no model loaded'
        t0 = time.perf_counter()
        try:
            verdict = classifier.classify(frame, seam=seam)
        except InferenceError as exc:
            self.last_ml_error = str(exc)
            return None, f'the model failed: {exc}'
        finally:
            timing.ml_ms = (time.perf_counter() - t0) * 1000.0
        self.last_ml_error = ''
        return verdict, ''

    def _count(self, result: CascadeResult) -> None:
        s = self.stats
        s.frames += 1
        if result.final is None:
            s.no_verdict += 1
        else:
            s.by_method[result.final.method] += 1
            if not result.final.inspected:
                s.not_inspected[result.final.status_reason] += 1
        if result.ml_invoked:
            s.ml_invocations += 1
        if result.ml_invoked and result.ml is None:
            s.ml_errors += 1
        if result.fallback:
            s.fallbacks[FALLBACK_ML_ERROR if result.ml_invoked else FALLBACK_NO_MODEL] += 1


@dataclass
class _Timing:
    rule_ms: float = 0.0
    ml_ms: float = 0.0
