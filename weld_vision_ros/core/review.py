"""Which frames are worth labelling: the review recorder's rule, from a frame's verdicts."""
from __future__ import annotations

from .results import REASON_UNKNOWN_APPEARANCE, STATUS_INSPECTED

DISAGREEMENT, LOW_CONFIDENCE, UNKNOWN = 'disagreement', 'low_confidence', 'unknown_appearance'


def review_reasons(rule, ml, final, low_confidence: float, disagreement: bool = True,
                   unknown: bool = True) -> list[str]:
    """Why a frame is worth labelling, from its verdicts (WeldDefect messages or core Verdicts; any may be None)."""
    reasons = []
    if (disagreement and rule is not None and ml is not None and rule.status == STATUS_INSPECTED
            and ml.status == STATUS_INSPECTED and rule.defect_class != ml.defect_class):
        reasons.append(DISAGREEMENT)
    if final is not None and final.status == STATUS_INSPECTED and final.confidence < low_confidence:
        reasons.append(LOW_CONFIDENCE)
    if unknown and any(m is not None and m.status_reason == REASON_UNKNOWN_APPEARANCE for m in (rule, ml, final)):
        reasons.append(UNKNOWN)
    return reasons
