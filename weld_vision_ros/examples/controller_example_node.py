"""Example robot-controller side: consumes /weld/defect and /weld/bead as a controller
would, pairs them by stamp, and decides per frame to continue, rework or stop.

Integrators copy this into their cell controller; it publishes the decision on
`weld/decision` (std_msgs/String, JSON) and logs every change of decision.
"""
from __future__ import annotations

import json
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node
from std_msgs.msg import String

from weld_vision_ros.examples.controller_policy import PolicyConfig, decide
from weld_vision_ros.msg import BeadMeasurement, WeldDefect
from weld_vision_ros.ros.codec import stamp_to_ns
from weld_vision_ros.ros.spin import run_node
from weld_vision_ros.ros.params import LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import results_qos

PARAMS = (
    ParamSpec('min_confidence', 0.6, 'Confidence from which a crack/porosity verdict stops the line',
              min_value=0.0, max_value=1.0),
    ParamSpec('min_score', 50.0, 'Bead score under which a good weld is sent to rework',
              min_value=0.0, max_value=100.0),
)


@dataclass(frozen=True)
class _Pending:
    defect: Any = None
    bead: Any = None


class ControllerExampleNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__('controller_example_node', **kwargs)
        self.params = LiveParameters(
            self, PARAMS, lambda v: PolicyConfig(float(v['min_confidence']), float(v['min_score'])))
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self.decisions: Counter[str] = Counter()
        self._last_action = ''
        qos = results_qos()
        self.create_subscription(WeldDefect, 'weld/defect', self._on_defect, qos)
        self.create_subscription(BeadMeasurement, 'weld/bead', self._on_bead, qos)
        # Decisions are results: reliable, so that the cell PLC bridge sees each one.
        self._pub = self.create_publisher(String, 'weld/decision', qos)

    def _on_defect(self, msg: WeldDefect) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        entry = self._pending.pop(stamp, _Pending())
        self._decide(stamp, msg, entry.bead)

    def _on_bead(self, msg: BeadMeasurement) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        # The verdict may come before or after the bead: keep a short memory of beads.
        self._pending[stamp] = _Pending(bead=msg)
        while len(self._pending) > 100:
            self._pending.popitem(last=False)

    def _decide(self, stamp: int, defect: WeldDefect, bead) -> None:
        d = decide(defect.defect_class, defect.confidence,
                   bead.valid if bead else None, bead.within_tolerance if bead else None,
                   bead.score if bead else None, self.params.config,
                   status=defect.status, status_reason=defect.status_reason)
        self.decisions[d.action] += 1
        self._pub.publish(String(data=json.dumps({'stamp_ns': stamp, 'action': d.action,
                                                  'reason': d.reason})))
        if d.action != self._last_action:
            self.get_logger().info(f'decision {d.action}: {d.reason}')
            self._last_action = d.action


def main(args=None) -> None:
    run_node(ControllerExampleNode, args)


if __name__ == '__main__':
    main()
