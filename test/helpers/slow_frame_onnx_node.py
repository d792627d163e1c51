"""The real ONNX defect node, each frame callback held 40 ms before it runs (as on a loaded
cell): the node is then nearly always inside a frame callback, so a Ctrl-C lands in one.
Run as `python -m test.helpers.slow_frame_onnx_node --ros-args ...`."""
import time

from weld_vision_ros.nodes import onnx_defect_node

HOLD_S = 0.04
_on_frame = onnx_defect_node.OnnxDefectNode._on_frame


def _held_on_frame(self, frame, header, received_s):
    time.sleep(HOLD_S)
    return _on_frame(self, frame, header, received_s)


onnx_defect_node.OnnxDefectNode._on_frame = _held_on_frame

if __name__ == '__main__':
    onnx_defect_node.main()
