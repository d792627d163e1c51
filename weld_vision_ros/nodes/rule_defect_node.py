"""Rule-based weld inspection node: bead measurement in millimetres and defect rules.

Subscribes to the synchronized RGB-D camera (`ros.rgbd_input.RgbdInput`: color, aligned
depth 16UC1/32FC1 and camera_info, paired by stamp), runs the pure core inspector
(`core.rules.inspect_frame`) on every frame and publishes, with the header of the frame:

    weld/bead          weld_vision_ros/BeadMeasurement   every frame (valid=false + reason
                                                         when no bead can be measured)
    weld/defect/rule   weld_vision_ros/WeldDefect        every frame with a measured bead
                                                         (method 'rule')
    weld/debug_image   sensor_msgs/Image rgb8            when publish_debug_image is true
    /diagnostics       diagnostic_msgs/DiagnosticArray   once per diagnostics_period_s

A frame with no measurable bead gets no WeldDefect: there is nothing to classify, and a
'good' verdict would tell a controller that an uninspected seam passed. The
BeadMeasurement with valid=false (and its reason) is the answer for that stamp.

Every threshold of the core is a parameter (`measure.*`, `rules.*`, `spec.*`) with a
description, unit and range, re-tunable while running: a set is validated as a whole
and the frozen config the core reads is swapped atomically, or refused with a reason.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Mapping

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from weld_vision_ros.core.debug_view import draw_inspection
from weld_vision_ros.core.rules import RuleConfig, inspect_frame
from weld_vision_ros.core.stats import RateMeter, RollingLatency
from weld_vision_ros.msg import BeadMeasurement, WeldDefect
from weld_vision_ros.ros.conversions import array_to_image, bead_to_msg, verdict_to_msg
from weld_vision_ros.ros.diagnostics import OK, WARN, make_array, make_status
from weld_vision_ros.ros.spin import create_publisher, run_node
from weld_vision_ros.ros.params import DIAGNOSTICS_PERIOD, OPENCV_THREADS, LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import results_qos
from weld_vision_ros.ros.rgbd_input import RgbdInput
from weld_vision_ros.ros.rule_params import RULE_PARAMS, rule_config

NODE_NAME = 'rule_defect_node'
BEAD_TOPIC = 'weld/bead'
DEFECT_TOPIC = 'weld/defect/rule'
DEBUG_TOPIC = 'weld/debug_image'
DIAGNOSTICS_TOPIC = '/diagnostics'   # absolute: the ROS-wide diagnostics bus

NODE_PARAMS = (
    ParamSpec('publish_debug_image', False, 'Publish the annotated image on weld/debug_image '
              '(costs a few ms per frame)'),
    DIAGNOSTICS_PERIOD, OPENCV_THREADS,
)


@dataclass(frozen=True)
class NodeConfig:
    """The node's frozen configuration: its own switches and the core's RuleConfig."""

    publish_debug_image: bool
    diagnostics_period_s: float
    opencv_threads: int
    rules: RuleConfig

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'NodeConfig':
        """Build (and so validate) the whole config; raises ValueError with the reason."""
        return cls(bool(v['publish_debug_image']), float(v['diagnostics_period_s']),
                   int(v['opencv_threads']), rule_config(v))


class RuleDefectNode(Node):
    """Measures the bead and classifies defects with rules on every synchronized RGB-D frame."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = LiveParameters(self, NODE_PARAMS + RULE_PARAMS, NodeConfig.from_values,
                                     on_change=self._on_params)
        cv2.setNumThreads(self.params.config.opencv_threads)
        qos = results_qos()
        self.bead_pub = create_publisher(self, BeadMeasurement, BEAD_TOPIC, qos)
        self.defect_pub = create_publisher(self, WeldDefect, DEFECT_TOPIC, qos)
        # Debug image: keep only the newest; reliable so that default (reliable) viewers
        # hear it too, depth 1 so a slow viewer never queues frames.
        self.debug_pub = create_publisher(self, Image, DEBUG_TOPIC,
                                          QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                                     reliability=ReliabilityPolicy.RELIABLE))
        # Diagnostics: reliable like other results; aggregators expect it.
        self.diag_pub = create_publisher(self, DiagnosticArray, DIAGNOSTICS_TOPIC, results_qos())
        self.latency = RollingLatency()
        self.core_latency = RollingLatency()
        self.rate = RateMeter()
        self.frames_inspected = 0
        self.no_bead: Counter[str] = Counter()
        self.depth_unresolved = 0        # frames not inspected: the depth cannot resolve the bead
        self.checks_not_made: Counter[str] = Counter()
        self.resolution = None           # core.resolution.DepthResolution of the latest measured frame
        self._drops_reported = 0
        self.input = RgbdInput(self, self._on_frame)
        self.create_timer(self.params.config.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info('rule inspection ready: listening for RGB-D frames')

    def _on_params(self, config: NodeConfig, changed: frozenset) -> None:
        self.get_logger().info(f'parameters updated: {", ".join(sorted(changed))}')

    def _on_frame(self, frame, header, received_s: float) -> None:
        config = self.params.config           # one frozen snapshot for the whole frame
        t0 = time.monotonic()
        result = inspect_frame(frame, config.rules)
        core_ms = 1000.0 * (time.monotonic() - t0)
        self.bead_pub.publish(bead_to_msg(result.measurement, header))
        latency_ms = 1000.0 * (time.monotonic() - received_s)
        if result.geometry is not None:
            self.resolution = result.geometry.resolution
        if result.verdict is not None:
            verdict = replace(result.verdict, latency_ms=latency_ms)
            if not verdict.inspected:
                self.depth_unresolved += 1
            self.checks_not_made.update(verdict.checks_not_made)
            self.defect_pub.publish(verdict_to_msg(verdict, header))
            result = replace(result, verdict=verdict)
        else:
            self.no_bead[result.measurement.reason.split(':')[0]] += 1
        if config.publish_debug_image:
            self.debug_pub.publish(array_to_image(draw_inspection(frame.rgb, result), 'rgb8', header))
        self.latency.add(latency_ms)
        self.core_latency.add(core_ms)
        self.rate.tick()
        self.frames_inspected += 1

    def diagnostic_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            'rate_hz': self.rate.rate_hz(),
            'latency_p50_ms': self.latency.percentile(50),
            'latency_p99_ms': self.latency.percentile(99),
            'core_p50_ms': self.core_latency.percentile(50),
            'frames_inspected': self.frames_inspected,
            'frames_without_bead': sum(self.no_bead.values()),
            'camera_info': 'yes' if self.input.has_camera_info else 'no',
            'frames_depth_unresolved': self.depth_unresolved,
            **{f'check_not_made.{name}': count for name, count in sorted(self.checks_not_made.items())},
            **self.input.diagnostic_values(),
        }
        res = self.resolution
        if res is not None:    # the depth resolution seen on the latest measured frame
            values.update(depth_step_mm=res.step_mm, depth_noise_mm=res.noise_mm,
                          depth_rounding_bias_mm=res.bias_mm, depth_dropout_fraction=res.dropout_fraction,
                          depth_resolution=res.describe())
        return values

    def _publish_diagnostics(self) -> None:
        values = self.diagnostic_values()
        new_drops = values['drops_total'] - self._drops_reported
        self._drops_reported = values['drops_total']
        if new_drops > 0:
            level, message = WARN, f'dropped {new_drops} bad frame(s) since the last report'
        elif not self.input.has_camera_info:
            level, message = WARN, 'waiting for camera_info'
        else:
            level, message = OK, f'inspecting at {values["rate_hz"]:.1f} Hz'
        status = make_status(f'{self.get_fully_qualified_name()}: rule inspection', message, values, level)
        self.diag_pub.publish(make_array(self.get_clock().now().to_msg(), status))


def main(args=None) -> None:
    run_node(RuleDefectNode, args)


if __name__ == '__main__':
    main()
