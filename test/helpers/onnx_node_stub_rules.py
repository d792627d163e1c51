"""The ONNX defect node with rule verdicts a test controls exactly.

The stand-in rule core reads its confidence from the red value of pixel (0, 0)
(confidence = red / 255) and always says 'gap', so a test decides frame by frame whether
hybrid mode must ask the model. The environment variable WELD_TEST_MODEL_LOAD_DELAY_S
makes every model load that many seconds slower (a large model on a slow machine), so a
test can watch frames being served while a model loads. Everything else is the real node,
run by its real main().
"""
import os
import time

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.core.frames import RGBDFrame
from weld_vision_ros.core.onnx_classifier import OnnxClassifier, load_classifier
from weld_vision_ros.core.results import BeadMeasurement, Verdict
from weld_vision_ros.core.rules import Inspection
from weld_vision_ros.nodes.onnx_defect_node import main

RULE_CLASS = 'gap'
LOAD_DELAY_ENV = 'WELD_TEST_MODEL_LOAD_DELAY_S'


def stub_rules(frame: RGBDFrame) -> Inspection:
    conf = float(frame.rgb[0, 0, 0]) / 255.0
    rest = (1.0 - conf) / (len(DEFAULT_CLASS_NAMES) - 1)
    probs = tuple(conf if c == RULE_CLASS else rest for c in DEFAULT_CLASS_NAMES)
    return Inspection(BeadMeasurement(valid=True, width_mm=4.0),
                      Verdict(RULE_CLASS, conf, DEFAULT_CLASS_NAMES, probs, 'rule'), None, ())


def slow_loader(*args, **kwargs) -> OnnxClassifier:
    time.sleep(float(os.environ.get(LOAD_DELAY_ENV, '0')))
    return load_classifier(*args, **kwargs)


if __name__ == '__main__':
    main(rule_fn=stub_rules, loader=slow_loader)
