"""The ONNX defect node with rule verdicts a test controls exactly.

The stand-in rule core reads its confidence from the red value of pixel (0, 0)
(confidence = red / 255) and always says 'gap', so a test decides frame by frame whether
hybrid mode must ask the model. Everything else is the real node, run by its real main().
"""
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.core.frames import RGBDFrame
from weld_vision_ros.core.results import BeadMeasurement, Verdict
from weld_vision_ros.onnx_defect_node import main

RULE_CLASS = 'gap'


def rule_confidence_of(rgb) -> float:
    return float(rgb[0, 0, 0]) / 255.0


def stub_rules(frame: RGBDFrame) -> tuple[BeadMeasurement, Verdict]:
    conf = rule_confidence_of(frame.rgb)
    rest = (1.0 - conf) / (len(DEFAULT_CLASS_NAMES) - 1)
    probs = tuple(conf if c == RULE_CLASS else rest for c in DEFAULT_CLASS_NAMES)
    return (BeadMeasurement(valid=True, width_mm=4.0),
            Verdict(RULE_CLASS, conf, DEFAULT_CLASS_NAMES, probs, 'rule'))


if __name__ == '__main__':
    main(rule_fn=stub_rules)
