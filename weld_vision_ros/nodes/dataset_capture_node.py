"""Frame-by-frame dataset capture on the cell: "collect this frame with this label".

Subscribes to the camera (color, aligned depth, camera_info; relative names), keeps the
latest frame whose three messages carry the identical stamp, and offers two services:

    ~/capture  (weld_vision_ros/srv/CaptureFrame)    write that frame and its label
               (WeldLabel on /weld/label, source 'capture') into the dataset bag, and
               return the number of frames of that label in the bag
    ~/counts   (weld_vision_ros/srv/GetDatasetCounts) frames per class in the bag

The bag (rosbag2, `storage` sqlite3 or mcap) is created at the first capture in
`bag_dir`, or in the first free `bag_dir_N` if that exists; it is finalized (and becomes
readable) when the node shuts down or when `bag_dir` is set to a new folder, after which
the next capture starts a new bag. The messages are written as the camera published them
(bit for bit), with their header stamp as the bag time.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from rclpy.node import Node
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.ros.sync import StampSynchronizer
from weld_vision_ros.ros import codec
from weld_vision_ros.ros.dataset_bag import (CAMERA_INFO_TOPIC, COLOR_TOPIC, DEPTH_TOPIC, LABEL_TOPIC,
                                             STORAGES, DatasetBagError, DatasetBagWriter,
                                             free_bag_path)
from weld_vision_ros.msg import WeldLabel
from weld_vision_ros.ros.codec import stamp_to_ns
from weld_vision_ros.ros.spin import run_node
from weld_vision_ros.ros.params import LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import RELIABILITY_CHOICES, camera_qos
from weld_vision_ros.srv import CaptureFrame, GetDatasetCounts

LABEL_SOURCE = 'capture'
# camera_info messages kept while their frame's color and depth are still on the way.
INFO_BACKLOG = 30

PARAMS = (
    ParamSpec('bag_dir', 'weld_dataset', 'Folder of the dataset bag, created at the first capture '
              '(a free bag_dir_N if it exists); setting it finalizes the current bag'),
    ParamSpec('storage', 'mcap', 'rosbag2 storage of new bags', choices=STORAGES),
    ParamSpec('class_names', list(DEFAULT_CLASS_NAMES), 'Labels a capture may carry', read_only=True),
    ParamSpec('weld_id', '', "Weld of the next captures until a request names another; empty: "
              "'weld-<start time>'"),
    ParamSpec('image_reliability', 'best_effort', 'QoS reliability of the camera subscriptions, '
              'fixed at start', choices=RELIABILITY_CHOICES, read_only=True),
    ParamSpec('sync_queue_size', 5, 'Frames kept per stream while waiting for a partner with the '
              'same stamp', unit='frames', min_value=1, max_value=100),
)


@dataclass(frozen=True)
class CaptureConfig:
    bag_dir: str
    storage: str
    class_names: tuple[str, ...]
    weld_id: str
    image_reliability: str
    sync_queue_size: int

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'CaptureConfig':
        names = tuple(str(n) for n in v['class_names'])
        if len(names) < 1 or len(set(names)) != len(names) or not all(names):
            raise ValueError(f'class_names must be distinct, non-empty names; got {list(names)}')
        if not str(v['bag_dir']).strip():
            raise ValueError('bag_dir must not be empty')
        return cls(str(v['bag_dir']), str(v['storage']), names, str(v['weld_id']),
                   str(v['image_reliability']), int(v['sync_queue_size']))


@dataclass(frozen=True)
class _Frame:
    stamp_ns: int
    color: Image
    depth: Image
    info: CameraInfo


class DatasetCaptureNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__('dataset_capture_node', **kwargs)
        self.params = LiveParameters(self, PARAMS, CaptureConfig.from_values, on_change=self._on_params)
        cfg = self.params.config
        self._weld_id = cfg.weld_id or time.strftime('weld-%Y%m%d-%H%M%S')
        self._sync: StampSynchronizer = StampSynchronizer(tolerance_ns=0, queue_size=cfg.sync_queue_size)
        self._pairs: OrderedDict[int, tuple[Image, Image]] = OrderedDict()
        self._infos: OrderedDict[int, CameraInfo] = OrderedDict()
        self._latest: Optional[_Frame] = None
        self._last_captured_ns: Optional[int] = None
        self._bag: Optional[DatasetBagWriter] = None
        self._finished_bags: list[Path] = []
        # Camera inputs: sensor-data QoS like every camera subscriber here; capture wants
        # the newest frame, never a backlog.
        qos = camera_qos(cfg.image_reliability)
        self.create_subscription(Image, codec.COLOR_TOPIC, self._on_color, qos)
        self.create_subscription(Image, codec.DEPTH_TOPIC, self._on_depth, qos)
        self.create_subscription(CameraInfo, codec.CAMERA_INFO_TOPIC, self._on_info, qos)
        self.create_service(CaptureFrame, '~/capture', self._on_capture)
        self.create_service(GetDatasetCounts, '~/counts', self._on_counts)
        self.get_logger().info(f'dataset capture ready: labels {", ".join(cfg.class_names)}; '
                               f'bag {self._next_bag_path()} ({cfg.storage}) at the first capture')

    # --- camera ---------------------------------------------------------------------------
    def _on_color(self, msg: Image) -> None:
        self._add_pair(self._sync.add_color(stamp_to_ns(msg.header.stamp), msg))

    def _on_depth(self, msg: Image) -> None:
        self._add_pair(self._sync.add_depth(stamp_to_ns(msg.header.stamp), msg))

    def _on_info(self, msg: CameraInfo) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self._infos[stamp] = msg
        while len(self._infos) > INFO_BACKLOG:
            self._infos.popitem(last=False)
        self._complete(stamp)

    def _add_pair(self, pair) -> None:
        if pair is None:
            return
        self._pairs[pair.stamp_ns] = (pair.color, pair.depth)
        while len(self._pairs) > self.params.config.sync_queue_size:
            self._pairs.popitem(last=False)
        self._complete(pair.stamp_ns)

    def _complete(self, stamp_ns: int) -> None:
        """Make the frame with this stamp the latest once color, depth and info are all in."""
        if stamp_ns not in self._pairs or stamp_ns not in self._infos:
            return
        color, depth = self._pairs.pop(stamp_ns)
        info = self._infos.pop(stamp_ns)
        if self._latest is None or stamp_ns > self._latest.stamp_ns:
            self._latest = _Frame(stamp_ns, color, depth, info)

    # --- services -------------------------------------------------------------------------
    def _on_capture(self, request: CaptureFrame.Request, response: CaptureFrame.Response):
        cfg = self.params.config
        response.success = False
        if request.label not in cfg.class_names:
            response.message = (f'unknown label {request.label!r}; valid labels are: '
                                f'{", ".join(cfg.class_names)}')
            return response
        frame = self._latest
        if frame is None:
            response.message = ('no frame yet: nothing received with identical stamps on '
                                f'{self.resolve_topic_name(codec.COLOR_TOPIC)}, '
                                f'{self.resolve_topic_name(codec.DEPTH_TOPIC)} and '
                                f'{self.resolve_topic_name(codec.CAMERA_INFO_TOPIC)}')
            return response
        if frame.stamp_ns == self._last_captured_ns:
            response.message = (f'no new frame since the last capture (stamp {frame.stamp_ns} ns); '
                                'is the camera still publishing?')
            return response
        if request.weld_id:
            self._weld_id = request.weld_id
        try:
            bag = self._open_bag()
            label = WeldLabel(header=frame.color.header, label=request.label, weld_id=self._weld_id,
                              source=LABEL_SOURCE)
            bag.write_raw(LABEL_TOPIC, frame.stamp_ns, serialize_message(label))
            bag.write_raw(COLOR_TOPIC, frame.stamp_ns, serialize_message(frame.color))
            bag.write_raw(DEPTH_TOPIC, frame.stamp_ns, serialize_message(frame.depth))
            bag.write_raw(CAMERA_INFO_TOPIC, frame.stamp_ns, serialize_message(frame.info))
            bag.frame_written(request.label)
        except (DatasetBagError, OSError) as exc:
            response.message = f'could not write the dataset bag: {exc}'
            self.get_logger().error(response.message)
            return response
        self._last_captured_ns = frame.stamp_ns
        response.success = True
        response.class_count = int(bag.counts[request.label])
        response.stamp = frame.color.header.stamp
        response.message = (f'wrote frame {frame.stamp_ns} as {request.label!r} (weld {self._weld_id}) '
                            f'to {bag.path}: {bag.counts[request.label]} {request.label}, '
                            f'{bag.frames} in all')
        self.get_logger().info(response.message)
        return response

    def _on_counts(self, request: GetDatasetCounts.Request, response: GetDatasetCounts.Response):
        cfg = self.params.config
        bag = self._bag
        response.bag_path = str(bag.path if bag is not None else self._next_bag_path())
        response.class_names = list(cfg.class_names)
        response.counts = [int(bag.counts.get(n, 0)) if bag is not None else 0 for n in cfg.class_names]
        response.total = int(bag.frames) if bag is not None else 0
        return response

    # --- the bag --------------------------------------------------------------------------
    def _next_bag_path(self) -> Path:
        return free_bag_path(Path(self.params.config.bag_dir).expanduser())

    def _open_bag(self) -> DatasetBagWriter:
        if self._bag is None:
            cfg = self.params.config
            path = self._next_bag_path()
            self._bag = DatasetBagWriter(path, cfg.storage, topics=(COLOR_TOPIC, DEPTH_TOPIC,
                                                                    CAMERA_INFO_TOPIC, LABEL_TOPIC),
                                         class_names=cfg.class_names)
            self.get_logger().info(f'recording the dataset into {path} ({cfg.storage})')
        return self._bag

    def close_bag(self) -> Optional[Path]:
        """Finalize the current bag (it becomes readable); the next capture starts a new one."""
        bag, self._bag = self._bag, None
        if bag is None:
            return None
        bag.close()
        self._finished_bags.append(bag.path)
        if self.context.ok():       # at shutdown the logger's context may be gone already
            self.get_logger().info(f'closed {bag.path}: {bag.frames} frames')
        return bag.path

    def _on_params(self, cfg: CaptureConfig, changed: frozenset) -> None:
        if 'bag_dir' in changed:
            self.close_bag()
        if 'weld_id' in changed and cfg.weld_id:
            self._weld_id = cfg.weld_id
        if 'sync_queue_size' in changed:
            self._sync = StampSynchronizer(tolerance_ns=0, queue_size=cfg.sync_queue_size)

    def destroy_node(self) -> None:
        self.close_bag()
        super().destroy_node()


def main(args: Optional[list[str]] = None) -> None:
    run_node(DatasetCaptureNode, args)


if __name__ == '__main__':
    main()
