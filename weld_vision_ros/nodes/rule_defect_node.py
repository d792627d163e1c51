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
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from weld_vision_ros.core.debug_view import draw_inspection
from weld_vision_ros.core.measure import MeasureConfig
from weld_vision_ros.core.rules import RuleConfig, inspect_frame
from weld_vision_ros.core.spec import WeldSpec
from weld_vision_ros.core.stats import RateMeter, RollingLatency
from weld_vision_ros.msg import BeadMeasurement, WeldDefect
from weld_vision_ros.ros import rgbd_input
from weld_vision_ros.ros.conversions import array_to_image, bead_to_msg, verdict_to_msg
from weld_vision_ros.ros.diagnostics import OK, WARN, make_array, make_status
from weld_vision_ros.ros.spin import run_node
from weld_vision_ros.ros.params import LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import results_qos
from weld_vision_ros.ros.rgbd_input import RgbdInput

NODE_NAME = 'rule_defect_node'
BEAD_TOPIC = 'weld/bead'
DEFECT_TOPIC = 'weld/defect/rule'
DEBUG_TOPIC = 'weld/debug_image'
DIAGNOSTICS_TOPIC = '/diagnostics'   # absolute: the ROS-wide diagnostics bus

# Every drop reason RgbdInput can report, so that diagnostics always carry each key.
DROP_REASONS = (rgbd_input.DROP_BAD_COLOR, rgbd_input.DROP_BAD_DEPTH, rgbd_input.DROP_SIZE_MISMATCH,
                rgbd_input.DROP_NO_CAMERA_INFO, rgbd_input.DROP_BAD_CAMERA_INFO,
                rgbd_input.DROP_INFO_MISMATCH, rgbd_input.DROP_DEPTH_INVALID,
                rgbd_input.DROP_PROCESSING_ERROR, 'unmatched', 'stamp_backwards')

# (description, unit, min, max) of every field of the core configs, by parameter name.
_MEASURE_DOC: dict[str, tuple[str, str, float, float]] = {
    'lowres_width_px': ('Working width of the plate fit and bead segmentation', 'px', 32, 1920),
    'plane_inlier_mm': ('RANSAC inlier band around the plate plane', 'mm', 0.05, 10.0),
    'plane_iterations': ('RANSAC plane hypotheses', '', 1, 1000),
    'min_plate_fraction': ('Fraction of valid depth that must lie on the plate', '', 0.01, 1.0),
    'bead_min_elevation_mm': ('Lowest elevation above the plate segmented as bead', 'mm', 0.05, 10.0),
    'bead_noise_factor': ('Bead segmentation threshold in plate-noise sigmas (if above the minimum)',
                          '', 0.0, 50.0),
    'min_bead_area_mm2': ('Smallest raised blob accepted as a bead', 'mm^2', 1.0, 100000.0),
    'min_seam_length_mm': ('Shortest bead accepted', 'mm', 1.0, 10000.0),
    'along_step_mm': ('Spacing of the cross-section profiles along the seam', 'mm', 0.05, 10.0),
    'across_step_mm': ('Sample spacing across the seam', 'mm', 0.02, 5.0),
    'max_profiles': ('Most profiles per frame (the spacing grows beyond)', '', 16, 20000),
    'window_margin_mm': ('Profile reach beyond the coarse bead edge', 'mm', 0.5, 100.0),
    'chunk_mm': ('Seam length averaged into one cross-section', 'mm', 0.1, 100.0),
    'gap_height_ratio': ('A stretch whose crown is below this fraction of the median crown is '
                         'under-filled (gap)', '', 0.01, 0.99),
    'gap_margin_mm': ('Bead left out of the width/height statistics beside a gap', 'mm', 0.0, 100.0),
}
_RULE_DOC: dict[str, tuple[str, str, float, float]] = {
    'mark_core_fraction': ('Part of the bead half-width searched for pores and cracks', '', 0.05, 1.0),
    'mark_background_mm': ('Along-seam reach of the bead brightness background', 'mm', 1.0, 500.0),
    'mark_darkness': ('Relative darkness below the background that makes a pore/crack mark',
                      '', 0.01, 0.99),
    'mark_extent_darkness': ('Relative darkness of the pixels that belong to a mark', '', 0.01, 0.99),
    'pore_min_diameter_mm': ('Smallest mark reported (equivalent diameter)', 'mm', 0.01, 20.0),
    'crack_min_length_mm': ('Shortest crack along the seam', 'mm', 0.1, 500.0),
    'crack_min_elongation': ('Length/width of a crack along the seam', '', 1.0, 100.0),
    'crack_transverse_angle_deg': ('Marks at least this steep to the seam are transverse', 'deg',
                                   0.0, 90.0),
    'crack_transverse_min_length_mm': ('Shortest transverse crack', 'mm', 0.1, 100.0),
    'crack_transverse_min_elongation': ('Length/width of a transverse crack', '', 1.0, 100.0),
    'crack_max_width_mm': ('Widest mark (mean width) still called a crack, beyond 1.5 pixels of '
                           'image blur', 'mm', 0.01, 20.0),
    'undercut_search_mm': ('Distance beyond each toe searched for an undercut groove', 'mm', 0.2, 20.0),
    'undercut_min_depth_mm': ('Shallowest undercut groove below the plate', 'mm', 0.01, 10.0),
    'undercut_noise_factor': ('Undercut threshold in profile-noise sigmas (if above the minimum)',
                              '', 0.0, 50.0),
    'undercut_min_length_mm': ('Shortest undercut along the seam', 'mm', 0.1, 1000.0),
    'gap_min_length_mm': ('Shortest under-filled stretch reported as gap', 'mm', 0.1, 1000.0),
    'spatter_search_mm': ('Plate searched for spatter beyond the clearance', 'mm', 0.5, 500.0),
    'spatter_clearance_mm': ('Distance beyond the toes where the spatter search starts', 'mm', 0.0, 100.0),
    'spatter_contrast': ('Local contrast (range / brightness) of a droplet', '', 0.01, 10.0),
    'spatter_min_count': ('Droplets needed to call spatter', 'droplets', 1, 1000),
    'evidence_sharpness': ('Exponent k of the rule score x^k / (1 + x^k), x = strength / threshold',
                           '', 0.1, 50.0),
}
_SPEC_DOC: dict[str, tuple[str, str, float, float]] = {
    'target_width_mm': ('Weld spec: target toe-to-toe bead width', 'mm', 0.1, 100.0),
    'width_tolerance_mm': ('Weld spec: width tolerance (target +- tolerance)', 'mm', 0.01, 100.0),
    'target_height_mm': ('Weld spec: target reinforcement height', 'mm', 0.05, 50.0),
    'height_tolerance_mm': ('Weld spec: height tolerance (target +- tolerance)', 'mm', 0.01, 50.0),
    'max_undercut_mm': ('Weld spec: deepest acceptable undercut', 'mm', 0.0, 10.0),
}


def _specs_for(prefix: str, cls: type, doc: Mapping[str, tuple[str, str, float, float]]) -> tuple[ParamSpec, ...]:
    out = []
    defaults = cls()
    for f in fields(cls):
        if f.name not in doc:
            continue
        text, unit, lo, hi = doc[f.name]
        default = getattr(defaults, f.name)
        out.append(ParamSpec(f'{prefix}.{f.name}', default, text, unit=unit, min_value=lo, max_value=hi))
    return tuple(out)


NODE_PARAMS = (
    ParamSpec('publish_debug_image', False, 'Publish the annotated image on weld/debug_image '
              '(costs a few ms per frame)'),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of the /diagnostics status', unit='s',
              min_value=0.1, max_value=60.0, read_only=True),
    ParamSpec('opencv_threads', 1, 'OpenCV worker threads of the node process (1 keeps the '
              'latency steady beside other nodes), fixed at start', unit='threads',
              min_value=1, max_value=64, read_only=True),
)
RULE_PARAMS = (_specs_for('measure', MeasureConfig, _MEASURE_DOC)
               + _specs_for('rules', RuleConfig, _RULE_DOC)
               + _specs_for('spec', WeldSpec, _SPEC_DOC))


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
        def group(prefix: str, kind: type) -> dict[str, Any]:
            types = {f.name: f.type for f in fields(kind)}
            out = {}
            for key, value in v.items():
                if key.startswith(prefix + '.'):
                    name = key[len(prefix) + 1:]
                    out[name] = int(value) if types.get(name) in (int, 'int') else value
            return out
        measure = MeasureConfig(**group('measure', MeasureConfig))
        spec = WeldSpec(**group('spec', WeldSpec))
        rules = RuleConfig(measure=measure, spec=spec, **group('rules', RuleConfig))
        return cls(bool(v['publish_debug_image']), float(v['diagnostics_period_s']),
                   int(v['opencv_threads']), rules)


class RuleDefectNode(Node):
    """Measures the bead and classifies defects with rules on every synchronized RGB-D frame."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = LiveParameters(self, NODE_PARAMS + RULE_PARAMS, NodeConfig.from_values,
                                     on_change=self._on_params)
        cv2.setNumThreads(self.params.config.opencv_threads)
        qos = results_qos()
        self.bead_pub = self.create_publisher(BeadMeasurement, BEAD_TOPIC, qos)
        self.defect_pub = self.create_publisher(WeldDefect, DEFECT_TOPIC, qos)
        # Debug image: keep only the newest; reliable so that default (reliable) viewers
        # hear it too, depth 1 so a slow viewer never queues frames.
        self.debug_pub = self.create_publisher(
            Image, DEBUG_TOPIC, QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                           reliability=ReliabilityPolicy.RELIABLE))
        # Diagnostics: reliable like other results; aggregators expect it.
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, results_qos())
        self.latency = RollingLatency()
        self.core_latency = RollingLatency()
        self.rate = RateMeter()
        self.frames_inspected = 0
        self.no_bead: Counter[str] = Counter()
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
        if result.verdict is not None:
            verdict = replace(result.verdict, latency_ms=latency_ms)
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
        drops = self.input.all_drops()
        values: dict[str, Any] = {
            'rate_hz': self.rate.rate_hz(),
            'latency_p50_ms': self.latency.percentile(50),
            'latency_p99_ms': self.latency.percentile(99),
            'core_p50_ms': self.core_latency.percentile(50),
            'frames_in': self.input.frames_in,
            'frames_inspected': self.frames_inspected,
            'frames_without_bead': sum(self.no_bead.values()),
            'drops_total': sum(drops.values()),
            'camera_info': 'yes' if self.input.has_camera_info else 'no',
        }
        for reason in sorted(set(DROP_REASONS) | set(drops)):
            values[f'drop.{reason}'] = drops.get(reason, 0)
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
