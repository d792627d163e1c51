"""Prints a live per-class summary of the verdicts, scored against ground truth when the
synthetic camera publishes it. A console for integrators, and the demo's scoreboard."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

from rclpy.node import Node

from weld_vision_ros.examples.scoreboard import Scoreboard, TruthRecord
from weld_vision_ros.msg import BeadMeasurement, WeldDefect, WeldGroundTruth
from weld_vision_ros.ros.codec import stamp_to_ns
from weld_vision_ros.ros.spin import run_node
from weld_vision_ros.ros.params import LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import results_qos

PARAMS = (
    ParamSpec('summary_period_s', 5.0, 'How often the summary table is logged; 0 disables it',
              unit='s', min_value=0.0, max_value=3600.0),
    ParamSpec('defect_topic', 'weld/defect', 'Verdict topic to score (weld/defect, '
              'weld/defect/rule or weld/defect/ml)', read_only=True),
)


@dataclass(frozen=True)
class MonitorConfig:
    summary_period_s: float
    defect_topic: str

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'MonitorConfig':
        return cls(float(v['summary_period_s']), str(v['defect_topic']))


class DefectMonitorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__('defect_monitor_node', **kwargs)
        self.params = LiveParameters(self, PARAMS, MonitorConfig.from_values)
        self.board = Scoreboard()
        self._t0 = time.monotonic()
        qos = results_qos(depth=50)
        # Ground truth comes with the camera frames: the same QoS as a reliable result stream,
        # deep enough to hold the frames still in flight through the pipeline.
        self.create_subscription(WeldGroundTruth, 'camera/ground_truth', self._on_truth, qos)
        self.create_subscription(WeldDefect, self.params.config.defect_topic, self._on_defect, qos)
        self.create_subscription(BeadMeasurement, 'weld/bead', self._on_bead, qos)
        self.create_timer(1.0, self._maybe_summarize)
        self._last_summary = time.monotonic()

    def _on_truth(self, msg: WeldGroundTruth) -> None:
        self.board.add_truth(stamp_to_ns(msg.header.stamp),
                             TruthRecord(msg.defect_class, msg.width_mm, msg.height_mm))

    def _on_defect(self, msg: WeldDefect) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        latency_ms = (time.time_ns() - stamp) / 1e6
        # In hybrid mode the model decides only where the rules were unsure: count those apart.
        method = msg.method + (':model' if msg.method == 'hybrid' and msg.model_version else '')
        self.board.add_verdict(stamp, msg.defect_class, method, latency_ms, msg.latency_ms)

    def _on_bead(self, msg: BeadMeasurement) -> None:
        self.board.add_bead(stamp_to_ns(msg.header.stamp), msg.valid, msg.reason, msg.width_mm,
                            msg.height_mm)

    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0

    def summary(self) -> str:
        return self.board.table(self.elapsed_s())

    def _maybe_summarize(self) -> None:
        period = self.params.config.summary_period_s
        if period > 0 and time.monotonic() - self._last_summary >= period:
            self._last_summary = time.monotonic()
            self.get_logger().info(f'after {self.elapsed_s():.0f} s:\n{self.summary()}')


def main(args=None) -> None:
    run_node(DefectMonitorNode, args)


if __name__ == '__main__':
    main()
