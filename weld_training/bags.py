"""Reading rosbag2 recordings (sqlite3 or mcap) into labelled RGB-D frames, without ROS.

Bags are read with `rosbags`; our own message types (weld_vision_ros/msg/*) are
registered from the .msg text shipped with the package, so no generated message code
is needed. Color, aligned depth and camera_info are paired by header stamp (exact by
default, or within a tolerance); each frame takes the latest label at or before its
stamp, from the label topic or from a sidecar YAML file of time ranges.

A small writer for the same layout (`write_bag`) lets tests and benchmarks record bags
from arrays.
"""
from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import yaml

from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES, check_class_name
from weld_vision_ros.core.depth import decode_depth, encode_depth_16uc1
from weld_vision_ros.ros.sync import StampSynchronizer
from weld_vision_ros import dataset_bag
from weld_vision_ros.dataset_bag import DatasetBagError, LabelSpan, read_sidecar

COLOR_TOPIC = '/camera/color/image_raw'
DEPTH_TOPIC = '/camera/aligned_depth_to_color/image_raw'
CAMERA_INFO_TOPIC = '/camera/color/camera_info'
LABEL_TOPIC = '/weld/label'
LABEL_MSGTYPE = 'weld_vision_ros/msg/WeldLabel'
IMAGE_MSGTYPE = 'sensor_msgs/msg/Image'
CAMERA_INFO_MSGTYPE = 'sensor_msgs/msg/CameraInfo'
SIDECAR_NAME = 'labels.yaml'
LABEL_SOURCES = ('auto', 'topic', 'sidecar')
STORAGES = ('sqlite3', 'mcap')


class BagError(ValueError):
    """A bag, a label file or a message that cannot be used for training."""


@dataclass(frozen=True)
class Topics:
    """Topic names to read (defaults: the RealSense driver's and ours)."""

    color: str = COLOR_TOPIC
    depth: str = DEPTH_TOPIC
    camera_info: str = CAMERA_INFO_TOPIC
    label: str = LABEL_TOPIC


@dataclass(frozen=True)
class LabeledFrame:
    """One paired, labelled RGB-D frame read from a bag.

    rgb: uint8 (H, W, 3) RGB. depth_m: float32 (H, W) [m], NaN = no return.
    intrinsics: from the matching camera_info (None when the bag has none).
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: Optional[Intrinsics]
    stamp_ns: int
    label: str
    weld_id: str
    bag: str
    label_source: str


@dataclass
class ReadStats:
    """What happened to the frames of one or more bags."""

    color_messages: int = 0
    depth_messages: int = 0
    paired: int = 0
    emitted: int = 0
    skipped: Counter = field(default_factory=Counter)

    def merge(self, other: 'ReadStats') -> None:
        self.color_messages += other.color_messages
        self.depth_messages += other.depth_messages
        self.paired += other.paired
        self.emitted += other.emitted
        self.skipped.update(other.skipped)


# --- message types ---------------------------------------------------------------------

def make_typestore(msg_dir: Optional[Path] = None):
    """A rosbags typestore with the ROS 2 standard types and ours from msg/*.msg (the one
    `weld-sim record` writes with); a missing msg folder is a BagError."""
    try:
        return dataset_bag.make_typestore(msg_dir)
    except DatasetBagError as exc:
        raise BagError(f'{exc}; install the package or pass the msg folder') from None


# --- finding bags and label files ------------------------------------------------------

def find_bags(paths: Sequence[str | Path]) -> list[Path]:
    """Bag folders (with metadata.yaml) named by `paths`: bags, their files, or folders of bags."""
    bags: list[Path] = []
    for p in (Path(p) for p in paths):
        if not p.exists():
            raise BagError(f'no such bag or folder: {p}')
        if p.is_file():
            p = p.parent
        if (p / 'metadata.yaml').is_file():
            bags.append(p)
            continue
        inner = sorted(m.parent for m in p.rglob('metadata.yaml'))
        if not inner:
            raise BagError(f'{p} holds no rosbag2 recording (no metadata.yaml below it)')
        bags.extend(inner)
    unique = list(dict.fromkeys(b.resolve() for b in bags))
    return unique


def load_sidecar(path: str | Path, class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> list[LabelSpan]:
    """Read a sidecar label file: a YAML list of {start_ns, end_ns, label, weld_id}; the
    format `weld-sim record` writes (weld_vision_ros.dataset_bag), read by the same code."""
    try:
        return read_sidecar(path, class_names)
    except DatasetBagError as exc:
        raise BagError(str(exc)) from None


class LabelTimeline:
    """Labels by time: the latest label at or before a stamp (topic) or the span holding it."""

    def __init__(self, stamps_ns: Sequence[int] = (), labels: Sequence[tuple[str, str]] = (),
                 spans: Sequence[LabelSpan] = ()) -> None:
        order = np.argsort(np.asarray(stamps_ns, dtype=np.int64), kind='stable')
        self._stamps = [int(stamps_ns[i]) for i in order]
        self._labels = [labels[i] for i in order]
        self._spans = sorted(spans, key=lambda s: s.start_ns)
        self._span_starts = [s.start_ns for s in self._spans]

    def __len__(self) -> int:
        return len(self._stamps) + len(self._spans)

    def lookup(self, stamp_ns: int) -> Optional[tuple[str, str]]:
        """(label, weld_id) for a frame stamp, or None when no label covers it."""
        if self._spans:
            i = bisect.bisect_right(self._span_starts, stamp_ns) - 1
            while i >= 0:  # latest-starting span that still covers the stamp
                s = self._spans[i]
                if s.start_ns <= stamp_ns <= s.end_ns:
                    return s.label, s.weld_id
                i -= 1
            return None
        i = bisect.bisect_right(self._stamps, stamp_ns) - 1
        return self._labels[i] if i >= 0 else None


# --- decoding --------------------------------------------------------------------------

def stamp_ns_of(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _image_plane(msg, dtype: np.dtype, channels: int) -> np.ndarray:
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < w * channels * itemsize or data.size < h * step:
        raise BagError(f'image {w}x{h} {msg.encoding} has step {step} and {data.size} bytes; too few')
    rows = data[:h * step].reshape(h, step)[:, :w * channels * itemsize]
    order = '>' if msg.is_bigendian else '<'
    arr = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order) if itemsize > 1 else dtype)
    arr = arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)
    return arr.astype(np.dtype(dtype).newbyteorder('='), copy=False)


def decode_color(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) to uint8 (H, W, 3) RGB."""
    enc = msg.encoding.lower()
    if enc in ('rgb8', 'bgr8'):
        img = _image_plane(msg, np.uint8, 3)
        return np.ascontiguousarray(img[..., ::-1]) if enc == 'bgr8' else np.ascontiguousarray(img)
    if enc in ('rgba8', 'bgra8'):
        img = _image_plane(msg, np.uint8, 4)[..., :3]
        return np.ascontiguousarray(img[..., ::-1] if enc == 'bgra8' else img)
    if enc == 'mono8':
        return np.repeat(_image_plane(msg, np.uint8, 1)[..., None], 3, axis=2)
    raise BagError(f'unsupported color encoding {msg.encoding!r}; expected rgb8, bgr8, rgba8, bgra8 or mono8')


def decode_depth_msg(msg, depth_scale_m: float = 0.001) -> np.ndarray:
    """sensor_msgs/Image (16UC1 in depth_scale_m units, or 32FC1 in m) to float32 metres."""
    if msg.encoding in ('16UC1', 'mono16'):
        raw = _image_plane(msg, np.uint16, 1)
    elif msg.encoding == '32FC1':
        raw = _image_plane(msg, np.float32, 1)
    else:
        raise BagError(f'unsupported depth encoding {msg.encoding!r}; expected 16UC1 or 32FC1')
    return decode_depth(raw, msg.encoding, depth_scale_m)


def intrinsics_of(msg) -> Intrinsics:
    return Intrinsics.from_k(list(msg.k), int(msg.width), int(msg.height))


# --- reading ---------------------------------------------------------------------------

def count_color_frames(bag: Path, topics: Topics = Topics()) -> int:
    """Number of color messages in a bag (from its index; no message is read)."""
    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        return sum(c.msgcount for c in reader.connections if c.topic == topics.color)


def read_label_timeline(bag: Path, reader, typestore, topics: Topics, label_source: str,
                        sidecar: Optional[Path], class_names: Sequence[str]) -> tuple[LabelTimeline, str]:
    """The labels of one bag and where they came from ('sidecar' or 'topic')."""
    if label_source not in LABEL_SOURCES:
        raise BagError(f'label_source must be one of {", ".join(LABEL_SOURCES)}, got {label_source!r}')
    side = Path(sidecar) if sidecar else (bag / SIDECAR_NAME if (bag / SIDECAR_NAME).is_file() else None)
    if label_source == 'sidecar' or (label_source == 'auto' and side is not None):
        if side is None:
            raise BagError(f'{bag}: label_source is sidecar but there is no {SIDECAR_NAME} '
                           f'in the bag and no label file was given')
        return LabelTimeline(spans=load_sidecar(side, class_names)), 'sidecar'
    conns = [c for c in reader.connections if c.topic == topics.label]
    stamps, labels = [], []
    for conn, _t, raw in reader.messages(connections=conns):
        msg = typestore.deserialize_cdr(raw, conn.msgtype)
        check_class_name(msg.label, class_names)
        stamps.append(stamp_ns_of(msg))
        labels.append((msg.label, msg.weld_id))
    if not stamps:
        raise BagError(f'{bag}: no labels: topic {topics.label} is empty or missing and there is no '
                       f'{SIDECAR_NAME} sidecar; record labels or pass a label file')
    return LabelTimeline(stamps, labels), 'topic'


def iter_bag_frames(bag: str | Path, *, topics: Topics = Topics(), tolerance_ns: int = 0,
                    label_source: str = 'auto', sidecar: Optional[str | Path] = None,
                    class_names: Sequence[str] = DEFAULT_CLASS_NAMES, depth_scale_m: float = 0.001,
                    typestore=None, stats: Optional[ReadStats] = None) -> Iterator[LabeledFrame]:
    """Yield the labelled, paired frames of one bag in stamp order.

    tolerance_ns: 0 pairs color and depth with identical stamps only; more pairs the
    nearest ones at most that far apart. depth_scale_m: metres per unit of 16UC1 depth.
    Frames without a label, a depth partner or a decodable image are counted in
    `stats.skipped` and left out.
    """
    from rosbags.rosbag2 import Reader

    bag = Path(bag)
    store = typestore or make_typestore()
    stats = stats if stats is not None else ReadStats()
    with Reader(bag) as reader:
        timeline, source = read_label_timeline(bag, reader, store, topics, label_source,
                                               Path(sidecar) if sidecar else None, class_names)
        info_conns = [c for c in reader.connections if c.topic == topics.camera_info]
        infos: list[tuple[int, Intrinsics]] = []
        for conn, _t, raw in reader.messages(connections=info_conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            infos.append((stamp_ns_of(msg), intrinsics_of(msg)))
        infos.sort(key=lambda x: x[0])
        info_stamps = [s for s, _ in infos]

        image_conns = [c for c in reader.connections if c.topic in (topics.color, topics.depth)]
        if not any(c.topic == topics.color for c in image_conns):
            raise BagError(f'{bag}: no color topic {topics.color}; topics are '
                           f'{", ".join(sorted({c.topic for c in reader.connections}))}')
        if not any(c.topic == topics.depth for c in image_conns):
            raise BagError(f'{bag}: no depth topic {topics.depth}')
        sync: StampSynchronizer = StampSynchronizer(tolerance_ns=tolerance_ns, queue_size=60)
        n_color = n_paired = 0
        for conn, _t, raw in reader.messages(connections=image_conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == topics.color:
                stats.color_messages += 1
                n_color += 1
                pair = sync.add_color(stamp_ns_of(msg), msg)
            else:
                stats.depth_messages += 1
                pair = sync.add_depth(stamp_ns_of(msg), msg)
            if pair is None:
                continue
            stats.paired += 1
            n_paired += 1
            labelled = timeline.lookup(pair.stamp_ns)
            if labelled is None:
                stats.skipped['no label'] += 1
                continue
            try:
                rgb = decode_color(pair.color)
                depth_m = decode_depth_msg(pair.depth, depth_scale_m)
            except (BagError, ValueError) as exc:
                stats.skipped[f'bad image: {exc}'] += 1
                continue
            if rgb.shape[:2] != depth_m.shape:
                stats.skipped['depth size differs from color (not aligned)'] += 1
                continue
            intr = _camera_info_for(pair.stamp_ns, info_stamps, infos, tolerance_ns)
            stats.emitted += 1
            yield LabeledFrame(rgb=rgb, depth_m=depth_m, intrinsics=intr, stamp_ns=pair.stamp_ns,
                               label=labelled[0], weld_id=labelled[1], bag=str(bag), label_source=source)
        unpaired = n_color - n_paired
        if unpaired:
            stats.skipped['no depth partner'] += unpaired


def _camera_info_for(stamp_ns: int, stamps: list[int], infos: list, tolerance_ns: int) -> Optional[Intrinsics]:
    """The camera_info with the frame's stamp (within tolerance), else the latest before it."""
    if not infos:
        return None
    i = bisect.bisect_left(stamps, stamp_ns - tolerance_ns)
    if i < len(stamps) and abs(stamps[i] - stamp_ns) <= tolerance_ns:
        return infos[i][1]
    j = bisect.bisect_right(stamps, stamp_ns) - 1
    return infos[max(j, 0)][1]


# --- writing (tests, benchmarks, synthetic recordings) --------------------------------

def write_bag(path: str | Path, frames: Sequence[dict], *, storage: str = 'sqlite3',
              topics: Topics = Topics(), depth_encoding: str = '16UC1', color_encoding: str = 'rgb8',
              labels: Sequence[dict] = (), typestore=None) -> Path:
    """Record frames into a rosbag2 folder in the camera layout read above.

    frames: dicts with 'stamp_ns', 'rgb' (uint8 H, W, 3 RGB), 'depth_m' (float32 [m]) and
    optional 'intrinsics' (Intrinsics). labels: dicts with 'stamp_ns', 'label', 'weld_id'
    and optional 'source', published on the label topic.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    if storage not in STORAGES:
        raise BagError(f'storage must be one of {", ".join(STORAGES)}, got {storage!r}')
    if depth_encoding not in ('16UC1', '32FC1'):
        raise BagError(f"depth_encoding must be '16UC1' or '32FC1', got {depth_encoding!r}")
    if color_encoding not in ('rgb8', 'bgr8'):
        raise BagError(f"color_encoding must be 'rgb8' or 'bgr8', got {color_encoding!r}")
    store = typestore or make_typestore()
    T = store.types
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3

    def header(stamp_ns: int, frame_id: str):
        return T['std_msgs/msg/Header'](
            stamp=T['builtin_interfaces/msg/Time'](sec=stamp_ns // 1_000_000_000,
                                                   nanosec=stamp_ns % 1_000_000_000),
            frame_id=frame_id)

    events: list[tuple[int, int, str, object]] = []
    for lab in labels:
        msg = T[LABEL_MSGTYPE](header=header(int(lab['stamp_ns']), ''), label=str(lab['label']),
                               weld_id=str(lab.get('weld_id', '')), source=str(lab.get('source', 'sim')))
        events.append((int(lab['stamp_ns']), 0, topics.label, msg))
    for f in frames:
        s = int(f['stamp_ns'])
        rgb = np.ascontiguousarray(f['rgb'], dtype=np.uint8)
        h, w = rgb.shape[:2]
        color = rgb[..., ::-1] if color_encoding == 'bgr8' else rgb
        frame_id = 'camera_color_optical_frame'
        events.append((s, 1, topics.color, T[IMAGE_MSGTYPE](
            header=header(s, frame_id), height=h, width=w, encoding=color_encoding, is_bigendian=0,
            step=w * 3, data=np.frombuffer(np.ascontiguousarray(color).tobytes(), np.uint8))))
        if depth_encoding == '16UC1':
            raw, step = encode_depth_16uc1(f['depth_m']), w * 2
        else:
            raw, step = np.nan_to_num(f['depth_m'].astype(np.float32), nan=0.0), w * 4
        events.append((s, 2, topics.depth, T[IMAGE_MSGTYPE](
            header=header(s, frame_id), height=h, width=w, encoding=depth_encoding, is_bigendian=0,
            step=step, data=np.frombuffer(raw.tobytes(), np.uint8))))
        intr = f.get('intrinsics') or Intrinsics(fx=w, fy=w, cx=w / 2, cy=h / 2, width=w, height=h)
        events.append((s, 3, topics.camera_info, T[CAMERA_INFO_MSGTYPE](
            header=header(s, frame_id), height=h, width=w, distortion_model='plumb_bob',
            d=np.zeros(5, np.float64), k=np.asarray(intr.k, np.float64),
            r=np.eye(3).ravel(), p=np.array([intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0, 0, 0, 1, 0],
                                              np.float64),
            binning_x=0, binning_y=0,
            roi=T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False))))
    events.sort(key=lambda e: (e[0], e[1]))
    path = Path(path)
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype in ((topics.label, LABEL_MSGTYPE), (topics.color, IMAGE_MSGTYPE),
                               (topics.depth, IMAGE_MSGTYPE), (topics.camera_info, CAMERA_INFO_MSGTYPE)):
            conns[topic] = (writer.add_connection(topic, msgtype, typestore=store), msgtype)
        for stamp, _order, topic, msg in events:
            conn, msgtype = conns[topic]
            writer.write(conn, stamp, store.serialize_cdr(msg, msgtype))
    return path
