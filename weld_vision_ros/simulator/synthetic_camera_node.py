"""Synthetic RGB-D weld camera: publishes RealSense-style topics with ground truth.

Stands in for the cell's camera (to try the package, run the demo, regression-test
models). Every frame comes out on five topics with one and the same header (stamp and
frame_id); topic names are relative, so a namespace or remap applies:

    camera/color/image_raw                    sensor_msgs/Image rgb8
    camera/aligned_depth_to_color/image_raw   sensor_msgs/Image 32FC1 [m] or 16UC1 [mm]
    camera/color/camera_info                  sensor_msgs/CameraInfo
    camera/ground_truth                       weld_vision_ros/WeldGroundTruth
    weld/label                                weld_vision_ros/WeldLabel (source 'sim'), at
                                              the first frame of every weld

The frames come from the core renderer (`core.synthetic.SyntheticWeldStream`): each weld
has one class and `frames_per_weld` views; `weld_id` changes with every weld.

Scan mode (`scan_plan` names a YAML scan plan, `simulator.seam_scan`): the camera travels
along one continuous weld with imperfections at known positions, pass after pass, and also
publishes what a robot program and driver would:

    camera/pose                               geometry_msgs/PoseStamped, the optical frame
                                              in the part frame (`part_frame_id`), same stamp
    weld/event                                weld_vision_ros/WeldEvent start before the
                                              first frame of a pass, end after its last
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.core.depth import encode_depth_16uc1
from weld_vision_ros.simulator.renderer import SceneError, SyntheticWeldStream, default_intrinsics
from weld_vision_ros.msg import WeldEvent, WeldGroundTruth, WeldLabel
from weld_vision_ros.simulator.seam_scan import SeamScanner, load_scan_plan
from weld_vision_ros.ros import codec
from weld_vision_ros.ros.conversions import (array_to_image, ground_truth_to_msg,
                                             intrinsics_to_camera_info)
from weld_vision_ros.ros.spin import create_publisher, run_node
from weld_vision_ros.ros.params import LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import RELIABILITY_CHOICES, camera_qos, latched_qos, results_qos

COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC = codec.COLOR_TOPIC, codec.DEPTH_TOPIC, codec.CAMERA_INFO_TOPIC
TRUTH_TOPIC, LABEL_TOPIC = codec.GROUND_TRUTH_TOPIC, codec.LABEL_TOPIC
POSE_TOPIC, EVENT_TOPIC = 'camera/pose', 'weld/event'
LABEL_SOURCE = 'sim'
DEPTH_ENCODINGS = codec.DEPTH_ENCODINGS
SEED_MAX = 2**31 - 1

PARAMS = (
    ParamSpec('rate_hz', 10.0, 'Frame rate', unit='Hz', min_value=0.1, max_value=60.0),
    ParamSpec('width', 640, 'Image width (intrinsics scale with it: about 69 deg horizontal FOV)',
              unit='px', min_value=64, max_value=1920),
    ParamSpec('height', 480, 'Image height', unit='px', min_value=48, max_value=1200),
    ParamSpec('noise_scale', 1.0, 'Scales depth noise (0.02-0.2 mm at 1), glare dropouts and colour '
              'noise; 0 gives clean frames', min_value=0.0, max_value=10.0),
    ParamSpec('seed', -1, 'Random seed of the frame sequence; -1 draws one at start (logged). '
              'Setting it restarts the sequence', min_value=-1, max_value=SEED_MAX),
    ParamSpec('frames_per_weld', 10, 'Frames of each weld; weld_id (and maybe the class) change '
              'after them', unit='frames', min_value=1, max_value=1_000_000),
    ParamSpec('depth_encoding', '32FC1', "Depth encoding: 32FC1 metres (NaN = no return) or 16UC1 "
              "millimetres (0 = no return, as a RealSense; too coarse for sub-mm relief)",
              choices=DEPTH_ENCODINGS),
    ParamSpec('frame_id', 'camera_color_optical_frame', 'frame_id of every published header'),
    ParamSpec('image_reliability', 'best_effort', 'QoS reliability of the camera topics, fixed '
              'at start: best_effort like camera drivers; reliable for recorders that must not '
              'lose frames', choices=RELIABILITY_CHOICES, read_only=True),
    ParamSpec('scan_plan', '', 'Scan mode: a YAML scan plan (one weld with imperfections at known '
              'positions, scanned pass after pass, with camera/pose and weld/event); empty: '
              'separate views of one-class welds', read_only=True),
    ParamSpec('scan_start_wait_s', 10.0, 'Scan mode: the first weld starts once camera/pose, weld/event '
              'and the camera images each have a matched subscriber, or after this long (a robot '
              'program starts welding once the cell listens)', unit='s', min_value=0.0,
              max_value=600.0, read_only=True),
    ParamSpec('part_frame_id', 'part', 'Scan mode: frame_id of camera/pose (the part frame: x along '
              'the weld from its start, z the plate normal)'),
    *(ParamSpec(f'class_weights.{name}', 1.0, f'Relative frequency of {name} welds (0: never)',
                min_value=0.0, max_value=1000.0) for name in DEFAULT_CLASS_NAMES),
)


@dataclass(frozen=True)
class SimCameraConfig:
    rate_hz: float
    width: int
    height: int
    noise_scale: float
    seed: int
    frames_per_weld: int
    depth_encoding: str
    frame_id: str
    image_reliability: str
    class_weights: tuple[tuple[str, float], ...]
    scan_plan: str = ''
    part_frame_id: str = 'part'
    scan_start_wait_s: float = 10.0

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'SimCameraConfig':
        weights = tuple((name, float(v[f'class_weights.{name}'])) for name in DEFAULT_CLASS_NAMES)
        if sum(w for _, w in weights) <= 0:
            raise ValueError('at least one class_weights.<class> must be positive')
        if not str(v['frame_id']):
            raise ValueError('frame_id must not be empty')
        return cls(float(v['rate_hz']), int(v['width']), int(v['height']), float(v['noise_scale']),
                   int(v['seed']), int(v['frames_per_weld']), str(v['depth_encoding']),
                   str(v['frame_id']), str(v['image_reliability']), weights, str(v['scan_plan']),
                   str(v['part_frame_id']), float(v['scan_start_wait_s']))


class SyntheticCameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__('synthetic_camera_node', **kwargs)
        self.params = LiveParameters(self, PARAMS, SimCameraConfig.from_values, on_change=self._on_params)
        cfg = self.params.config
        # Camera streams: sensor-data QoS (keep last, best effort by default) like a camera
        # driver: a subscriber that falls behind gets the newest frame, not a backlog.
        image_qos = camera_qos(cfg.image_reliability)
        self._color_pub = create_publisher(self, Image, COLOR_TOPIC, image_qos)
        self._depth_pub = create_publisher(self, Image, DEPTH_TOPIC, image_qos)
        self._info_pub = create_publisher(self, CameraInfo, INFO_TOPIC, image_qos)
        # Ground truth is what scorers compare verdicts with: reliable, deep enough to hold
        # the frames still in flight through the pipeline.
        self._truth_pub = create_publisher(self, WeldGroundTruth, TRUTH_TOPIC, results_qos(depth=50))
        # The label holds until the next one: latched, so a recorder that starts late still
        # gets the current label.
        self._label_pub = create_publisher(self, WeldLabel, LABEL_TOPIC, latched_qos())
        self.frames_published = 0
        self.frames_failed = 0
        self._stream = self._make_stream(cfg)
        self._scan = None
        if cfg.scan_plan:
            # A bad plan stops the node at start with the file and the reason.
            plan = load_scan_plan(cfg.scan_plan)
            self._scan = SeamScanner(plan, seed=self._stream.seed,
                                     intrinsics=default_intrinsics(cfg.width, cfg.height))
            self._scan_views = plan.view_centres()
            self._scan_index = 0
            self._scan_pass = 0
            self._scan_waiting_since: Optional[int] = self.get_clock().now().nanoseconds
            self._pose_pub = self.create_publisher(PoseStamped, POSE_TOPIC, results_qos(depth=50))
            self._event_pub = self.create_publisher(WeldEvent, EVENT_TOPIC, results_qos(depth=10))
        self._timer = self.create_timer(1.0 / cfg.rate_hz, self._tick)
        self.get_logger().info(
            f'synthetic camera: {cfg.width}x{cfg.height} at {cfg.rate_hz:g} Hz, seed {self._stream.seed}, '
            f'{cfg.frames_per_weld} frames per weld, depth {cfg.depth_encoding}')

    def _make_stream(self, cfg: SimCameraConfig) -> SyntheticWeldStream:
        seed = cfg.seed
        if seed < 0:
            seed = int(self.get_clock().now().nanoseconds % SEED_MAX)
        return SyntheticWeldStream(seed, default_intrinsics(cfg.width, cfg.height),
                                   class_weights=dict(cfg.class_weights), noise_scale=cfg.noise_scale,
                                   frames_per_weld=cfg.frames_per_weld)

    def _on_params(self, cfg: SimCameraConfig, changed: frozenset) -> None:
        if 'seed' in changed:
            self._stream = self._make_stream(cfg)
            self.get_logger().info(f'restarted the frame sequence with seed {self._stream.seed}')
        else:
            stream = self._stream
            stream.intrinsics = default_intrinsics(cfg.width, cfg.height)
            stream.class_weights = dict(cfg.class_weights)
            stream.noise_scale = cfg.noise_scale
            stream.frames_per_weld = cfg.frames_per_weld
        if 'rate_hz' in changed:
            self.destroy_timer(self._timer)
            self._timer = self.create_timer(1.0 / cfg.rate_hz, self._tick)

    @property
    def scan_weld_id(self) -> str:
        return f'scan-{self._stream.seed}-{self._scan_pass:04d}'

    def _scan_consumers_ready(self) -> bool:
        """True once the first weld may start: every scan topic has a matched reader (DDS
        matching, not graph discovery: what is published before is lost to a volatile reader),
        or `scan_start_wait_s` has passed (logged)."""
        waited_s = (self.get_clock().now().nanoseconds - self._scan_waiting_since) * 1e-9
        matched = all(pub.get_subscription_count() > 0
                      for pub in (self._pose_pub, self._event_pub, self._color_pub, self._depth_pub, self._info_pub))
        if matched or waited_s >= self.params.config.scan_start_wait_s:
            if not matched:
                self.get_logger().warning(f'scan: starting the first weld after {waited_s:.1f} s '
                                          'without a subscriber on every scan topic')
            self._scan_waiting_since = None
            return True
        return False

    def _scan_tick(self, cfg: SimCameraConfig, header: Header):
        """Scan mode: the next view of the pass (with its pose), the weld events around it."""
        plan = self._scan.plan
        if self._scan_waiting_since is not None and not self._scan_consumers_ready():
            return None
        if self._scan_index == 0:
            self._event_pub.publish(WeldEvent(
                header=header, weld_id=self.scan_weld_id, event=WeldEvent.EVENT_START,
                plate_thickness_mm=float(plan.plate_thickness_mm), quality_level=plan.quality_level,
                weld_length_mm=float(plan.weld_length_mm)))
        if self._scan_index >= len(self._scan_views):
            self._event_pub.publish(WeldEvent(header=header, weld_id=self.scan_weld_id,
                                              event=WeldEvent.EVENT_END))
            self._scan_index = 0
            self._scan_pass += 1
            return None
        view = self._scanned = self._scan.render_view(self._scan_index, self._scan_views[self._scan_index])
        self._scan_index += 1
        pose = PoseStamped()
        pose.header = Header(stamp=header.stamp, frame_id=cfg.part_frame_id)
        (pose.pose.position.x, pose.pose.position.y, pose.pose.position.z) = view.position_m
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = view.orientation_xyzw
        self._pose_pub.publish(pose)
        frame = view.frame
        truth = replace(frame.truth, weld_id=self.scan_weld_id,
                        defect_class=frame.truth.regions[0].defect_class if frame.truth.regions else 'good')
        return replace(frame, truth=truth), view.index == 0

    def _tick(self) -> None:
        cfg = self.params.config
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=cfg.frame_id)
        try:
            if self._scan is not None:
                scanned = self._scan_tick(cfg, header)
                if scanned is None:
                    return
                frame, new_weld = scanned
            else:
                frame, new_weld = self._stream.next_frame()
        except SceneError as exc:       # the ROS boundary: count, log, keep publishing
            self.frames_failed += 1
            self.get_logger().warning(f'frame not rendered ({self.frames_failed} so far): {exc}',
                                      throttle_duration_sec=5.0)
            return
        if cfg.depth_encoding == '16UC1':
            depth = array_to_image(encode_depth_16uc1(frame.depth_m), '16UC1', header)
        else:
            depth = array_to_image(frame.depth_m, '32FC1', header)
        color = array_to_image(frame.rgb, 'rgb8', header)
        info = intrinsics_to_camera_info(frame.intrinsics, header)
        truth = ground_truth_to_msg(frame.truth, header)
        if new_weld:
            # The label first, with the frame's stamp: "the latest label at or before the
            # frame" then holds for every frame of the weld.
            self._label_pub.publish(WeldLabel(header=header, label=frame.truth.defect_class,
                                              weld_id=frame.truth.weld_id, source=LABEL_SOURCE))
        self._color_pub.publish(color)
        self._depth_pub.publish(depth)
        self._info_pub.publish(info)
        self._truth_pub.publish(truth)
        self.frames_published += 1

    @property
    def weld_id(self) -> str:
        return self._stream.weld_id


def main(args: Optional[list[str]] = None) -> None:
    run_node(SyntheticCameraNode, args)


if __name__ == '__main__':
    main()
