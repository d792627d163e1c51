"""The real ONNX defect node whose model validation takes WELD_TEST_LOAD_DELAY_S seconds longer
after its first load: a stand-in for a big model on a slow cell, to test what a deploy client
does when the node answers after its timeout. Run as `python -m test.helpers.slow_onnx_node`."""
import os
import time

from weld_vision_ros.core.onnx_classifier import load_classifier
from weld_vision_ros.nodes import onnx_defect_node

_loads = []


def slow_loader(*args, **kwargs):
    if _loads:
        time.sleep(float(os.environ.get('WELD_TEST_LOAD_DELAY_S', '0')))
    _loads.append(args)
    return load_classifier(*args, **kwargs)


if __name__ == '__main__':
    onnx_defect_node.main(loader=slow_loader)
