"""Synchronized RGB-D input for the inference nodes, with every bad frame counted.

Subscribes to color, aligned depth and camera_info (RealSense topic names, relative so
a namespace or remap applies), pairs color and depth by stamp, decodes only the pairs,
and hands each good frame to the node as a core RGBDFrame. Every frame that cannot be
used is dropped with a reason in `drops` and a throttled log line; the node keeps going.
"""
from __future__ import annotations

import time
import traceback
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from weld_vision_ros.core.camera import Intrinsics, IntrinsicsError
from weld_vision_ros.core.depth import INTEGER_DEPTH_ENCODINGS, DepthError
from weld_vision_ros.core.frame_gaps import StampGapCounter
from weld_vision_ros.core.frames import RGBDFrame
from weld_vision_ros.ros import codec
from weld_vision_ros.ros.codec import ImageEncodingError, stamp_to_ns
from weld_vision_ros.ros.spin import shutting_down
from weld_vision_ros.ros.sync import StampSynchronizer
from weld_vision_ros.ros.params import LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import RELIABILITY_CHOICES, camera_qos

COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC = codec.COLOR_TOPIC, codec.DEPTH_TOPIC, codec.CAMERA_INFO_TOPIC

# Drop reasons, as they appear in diagnostics.
DROP_BAD_COLOR = 'bad_color_encoding'
DROP_BAD_DEPTH = 'bad_depth_encoding'
DROP_SIZE_MISMATCH = 'size_mismatch'
DROP_NO_CAMERA_INFO = 'no_camera_info'
DROP_BAD_CAMERA_INFO = 'bad_camera_info'
DROP_INFO_MISMATCH = 'camera_info_size_mismatch'
DROP_DEPTH_INVALID = 'depth_all_invalid'
DROP_PROCESSING_ERROR = 'processing_error'
DROP_TOO_LARGE = 'image_too_large'
# Every reason a frame can be dropped for (the synchronizer's two included), so that every
# node's diagnostics always carry each key: `drop.<reason>`, and `drops_total`.
DROP_REASONS = (DROP_BAD_COLOR, DROP_BAD_DEPTH, DROP_SIZE_MISMATCH, DROP_NO_CAMERA_INFO,
                DROP_BAD_CAMERA_INFO, DROP_INFO_MISMATCH, DROP_DEPTH_INVALID, DROP_PROCESSING_ERROR,
                DROP_TOO_LARGE, 'unmatched', 'stamp_backwards')
DROP_KEY_PREFIX = 'drop.'
INFO_HISTORY = 64  # camera_info messages kept by stamp (several seconds of a 30 Hz camera)

INPUT_PARAMS = (
    ParamSpec('image_reliability', 'best_effort',
              'QoS reliability of the camera subscriptions, fixed at start; best_effort '
              'matches camera drivers, reliable suits bag playback', choices=RELIABILITY_CHOICES,
              read_only=True),
    ParamSpec('image_queue_depth', 5,
              'Camera messages queued per subscription, fixed at start: small with best_effort '
              '(only the newest frames matter); larger with reliable, so that a stall of the node '
              '(a loaded CPU) shorter than depth / frame rate loses no frame', unit='messages',
              min_value=1, max_value=1000, read_only=True),
    ParamSpec('depth_scale_m', 0.001, 'Size of one 16UC1 depth unit (RealSense/Orbbec: 0.001)',
              unit='m', min_value=1e-6, max_value=1.0),
    ParamSpec('sync_tolerance_ms', 0.0,
              'Largest color/depth stamp difference that still pairs; 0 pairs identical '
              'stamps only (aligned depth)', unit='ms', min_value=0.0, max_value=100.0),
    ParamSpec('sync_queue_size', 5, 'Frames kept per stream while waiting for a partner',
              unit='frames', min_value=1, max_value=100),
    ParamSpec('max_image_pixels', 8_400_000,
              'Largest colour or depth image (width x height) accepted; a larger one is dropped '
              'before it is queued or decoded (default: 4K UHD, above every RealSense/Orbbec mode)',
              unit='px', min_value=1, max_value=100_000_000),
)


@dataclass(frozen=True)
class InputConfig:
    image_reliability: str
    depth_scale_m: float
    sync_tolerance_ms: float
    sync_queue_size: int
    image_queue_depth: int = 5
    max_image_pixels: int = 8_400_000

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'InputConfig':
        return cls(str(v['image_reliability']), float(v['depth_scale_m']),
                   float(v['sync_tolerance_ms']), int(v['sync_queue_size']),
                   int(v['image_queue_depth']), int(v['max_image_pixels']))


FrameHandler = Callable[[RGBDFrame, Any, float], None]


class RgbdInput:
    """The three camera subscriptions of a node and their synchronization.

    handler(frame, header, received_s) is called for each good frame, with the color
    header (to copy into outputs) and the monotonic time [s] the pair was complete.
    callback_group: where the subscriptions' callbacks run (default: the node's), e.g. a
    group of their own so that frames keep flowing on a multi-threaded executor while a
    slow parameter callback runs.
    """

    def __init__(self, node: Node, handler: FrameHandler, callback_group=None) -> None:
        self._node = node
        self._handler = handler
        self.drops: Counter[str] = Counter()
        self.frames_in = 0
        self.params = LiveParameters(node, INPUT_PARAMS, InputConfig.from_values,
                                     on_change=self._on_params)
        cfg = self.params.config
        self._sync = self._make_sync(cfg)
        self._info: Optional[CameraInfo] = None
        self._intrinsics: Optional[Intrinsics] = None
        # camera_info by stamp, as image_transport's CameraSubscriber pairs it: a frame is
        # measured with the intrinsics stamped like it when they arrived; otherwise with the
        # latest, and counted (camera_info_stale), since intrinsics may have changed.
        self._intrinsics_by_stamp: OrderedDict[int, Intrinsics] = OrderedDict()
        self.camera_info_by_stamp = 0
        self.camera_info_stale = 0
        # Frames the camera stamped that never arrived (a burst lost in transport, or
        # overwritten in a full queue): seen only as gaps between stamps, per stream.
        self.gaps = {'color': StampGapCounter(), 'depth': StampGapCounter()}
        qos = camera_qos(cfg.image_reliability, depth=cfg.image_queue_depth)
        self._subs = [
            node.create_subscription(Image, COLOR_TOPIC, self._on_color, qos,
                                     callback_group=callback_group),
            node.create_subscription(Image, DEPTH_TOPIC, self._on_depth, qos,
                                     callback_group=callback_group),
            # camera_info with the same QoS as the images: drivers publish it beside each frame.
            node.create_subscription(CameraInfo, INFO_TOPIC, self._on_info, qos,
                                     callback_group=callback_group),
        ]

    @property
    def has_camera_info(self) -> bool:
        return self._intrinsics is not None

    def all_drops(self) -> Counter:
        """Drops by reason, the synchronizer's (unmatched, stamp_backwards) included."""
        total = Counter(self.drops)
        total.update(self._sync.drops)
        return total

    def diagnostic_values(self) -> dict[str, Any]:
        """The input's counters as every node reports them: frames_in, drops_total and
        drop.<reason> for every reason (0 included)."""
        drops = self.all_drops()
        values: dict[str, Any] = {'frames_in': self.frames_in, 'drops_total': sum(drops.values())}
        for reason in sorted(set(DROP_REASONS) | set(drops)):
            values[DROP_KEY_PREFIX + reason] = drops.get(reason, 0)
        # Which stream lost its unpaired frames (a dead depth stream: unmatched_color rises).
        for stream in ('color', 'depth'):
            values[f'unmatched_{stream}'] = self._sync.unmatched_by_stream.get(stream, 0)
        values['clock_jumps'] = self._sync.events.get('clock_jump', 0)
        # Estimated from gaps between the stamps that arrived (core.frame_gaps).
        for stream, gaps in self.gaps.items():
            values[f'frames_missed_{stream}'] = gaps.missed
            values[f'largest_gap_{stream}'] = gaps.largest_gap
        values['camera_info_by_stamp'] = self.camera_info_by_stamp
        values['camera_info_stale'] = self.camera_info_stale
        return values

    # --- callbacks -------------------------------------------------------------------
    def _on_params(self, cfg: InputConfig, changed: frozenset) -> None:
        if changed & {'sync_tolerance_ms', 'sync_queue_size'}:
            old, self._sync = self._sync, self._make_sync(cfg)
            self._sync.carry_counts_from(old)

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            self._intrinsics = codec.intrinsics_from_camera_info(msg)
            self._info = msg
            self._intrinsics_by_stamp[stamp_to_ns(msg.header.stamp)] = self._intrinsics
            while len(self._intrinsics_by_stamp) > INFO_HISTORY:
                self._intrinsics_by_stamp.popitem(last=False)
        except IntrinsicsError as exc:
            self._drop(DROP_BAD_CAMERA_INFO, f'camera_info unusable: {exc}')

    def _too_large(self, msg: Image, stream: str) -> bool:
        """Refuse an image over max_image_pixels before it is queued or decoded."""
        limit = self.params.config.max_image_pixels
        if int(msg.width) * int(msg.height) <= limit:
            return False
        self._drop(DROP_TOO_LARGE, f'{stream} image {msg.width}x{msg.height} is over max_image_pixels '
                                   f'{limit}: not decoded')
        return True

    def _on_color(self, msg: Image) -> None:
        self.frames_in += 1
        self.gaps['color'].add(stamp_to_ns(msg.header.stamp))
        if self._too_large(msg, 'color'):
            return
        pair = self._sync.add_color(stamp_to_ns(msg.header.stamp), msg)
        if pair is not None:
            self._process(pair.color, pair.depth)

    def _on_depth(self, msg: Image) -> None:
        self.gaps['depth'].add(stamp_to_ns(msg.header.stamp))
        if self._too_large(msg, 'depth'):
            return
        pair = self._sync.add_depth(stamp_to_ns(msg.header.stamp), msg)
        if pair is not None:
            self._process(pair.color, pair.depth)

    # --- decoding --------------------------------------------------------------------
    def _process(self, color_msg: Image, depth_msg: Image) -> None:
        if shutting_down(self._node):
            return  # Ctrl-C: no frame is started after the context shut down (ros/spin.py)
        received_s = time.monotonic()
        frame = self.decode(color_msg, depth_msg)
        if frame is None:
            return
        try:
            self._handler(frame, color_msg.header, received_s)
        except Exception as exc:  # noqa: BLE001 - the ROS boundary: count, log, keep running
            if shutting_down(self._node):
                return  # failed because the context shut down under it: the shutdown, not a fault
            self._drop(DROP_PROCESSING_ERROR, f'processing failed: {exc!r}\n{traceback.format_exc()}')

    def decode(self, color_msg: Image, depth_msg: Image) -> Optional[RGBDFrame]:
        """A core frame for a synchronized pair, or None (dropped and counted)."""
        if self._intrinsics is None:
            self._drop(DROP_NO_CAMERA_INFO, 'no camera_info received yet: frame dropped')
            return None
        try:
            rgb = codec.decode_color(color_msg)
        except ImageEncodingError as exc:
            self._drop(DROP_BAD_COLOR, str(exc))
            return None
        try:
            depth_m = codec.decode_depth_image(depth_msg, self.params.config.depth_scale_m)
        except (ImageEncodingError, DepthError) as exc:
            self._drop(DROP_BAD_DEPTH, f'depth: {exc}')
            return None
        if rgb.shape[:2] != depth_m.shape:
            self._drop(DROP_SIZE_MISMATCH, f'color {rgb.shape[1]}x{rgb.shape[0]} and depth '
                                           f'{depth_m.shape[1]}x{depth_m.shape[0]} differ; '
                                           'subscribe to depth aligned to color')
            return None
        intr = self._intrinsics_by_stamp.get(stamp_to_ns(color_msg.header.stamp))
        if intr is None:
            intr = self._intrinsics
            self.camera_info_stale += 1
        else:
            self.camera_info_by_stamp += 1
        if (intr.width, intr.height) != (rgb.shape[1], rgb.shape[0]):
            self._drop(DROP_INFO_MISMATCH, f'camera_info is {intr.width}x{intr.height}, '
                                           f'images are {rgb.shape[1]}x{rgb.shape[0]}')
            return None
        if not np.isfinite(depth_m).any():
            self._drop(DROP_DEPTH_INVALID, 'depth has no valid pixel (all zero/NaN)')
            return None
        # Integer depth (16UC1/mono16) resolves one unit of depth_scale_m: the core needs it.
        unit_m = self.params.config.depth_scale_m if depth_msg.encoding in INTEGER_DEPTH_ENCODINGS else 0.0
        return RGBDFrame(rgb=rgb, depth_m=depth_m, intrinsics=intr,
                         stamp_ns=stamp_to_ns(color_msg.header.stamp),
                         frame_id=color_msg.header.frame_id, depth_unit_m=unit_m)

    def _drop(self, reason: str, text: str) -> None:
        self.drops[reason] += 1
        self._node.get_logger().warning(f'dropped frame ({reason}, {self.drops[reason]} so far): {text}',
                                        throttle_duration_sec=5.0)

    @staticmethod
    def _make_sync(cfg: InputConfig) -> StampSynchronizer:
        return StampSynchronizer(tolerance_ns=int(cfg.sync_tolerance_ms * 1e6),
                                 queue_size=cfg.sync_queue_size)
