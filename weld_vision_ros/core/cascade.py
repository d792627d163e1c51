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
          A frame on which the rules measured no bead (no rule verdict) counts as unsure.

No bead, no model: like the rule node, a frame whose bead cannot be measured gets no
verdict from the rules (a 'good' would pass an uninspected seam); when the model does not
decide it either, `final` is None and nothing is published for that frame.

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

from .frames import RGBDFrame
from .onnx_classifier import InferenceError
from .measure import SeamLocation
from .results import METHOD_HYBRID, METHOD_ML, METHOD_RULE, BeadMeasurement, Verdict
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

    final: the verdict to publish (None: nobody could classify the frame, see above).
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
    the rule verdict in place of the model's, by kind (FALLBACK_*); no_verdict counts frames
    that got no verdict at all."""

    frames: int = 0
    ml_invocations: int = 0
    ml_errors: int = 0
    no_verdict: int = 0
    by_method: Counter = None  # type: ignore[assignment]
    fallbacks: Counter = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
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
        if config.mode == MODE_RULE:
            rule = self._rules(frame, timing)
            result = CascadeResult(final=rule.verdict, rule=rule.verdict, bead=rule.measurement)
        elif config.mode == MODE_ML:
            ml, error = self._try_ml(classifier, frame, None, timing)
            if ml is not None:
                result = CascadeResult(final=ml, ml=ml, ml_invoked=True)
            else:
                rule = self._rules(frame, timing)
                result = CascadeResult(final=rule.verdict, rule=rule.verdict, bead=rule.measurement,
                                       ml_invoked=classifier is not None, fallback=error)
        else:
            rule = self._rules(frame, timing)
            verdict, bead = rule.verdict, rule.measurement
            if classifier is None:
                result = CascadeResult(final=verdict, rule=verdict, bead=bead, fallback='no model loaded')
            elif verdict is not None and verdict.confidence >= config.hybrid_threshold:
                result = CascadeResult(final=replace(verdict, method=METHOD_HYBRID), rule=verdict, bead=bead)
            else:
                seam = rule.geometry.location if rule.geometry is not None else None
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
