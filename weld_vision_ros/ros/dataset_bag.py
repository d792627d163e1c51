"""Labelled RGB-D dataset bags (rosbag2, sqlite3 or mcap) written with rosbags, no rclpy.

The layout is the one the cell records and the training reader expects:

    /camera/color/image_raw                    sensor_msgs/Image rgb8
    /camera/aligned_depth_to_color/image_raw   sensor_msgs/Image 32FC1 [m] (NaN: no return)
                                               or 16UC1 [mm] (0: no return)
    /camera/color/camera_info                  sensor_msgs/CameraInfo
    /weld/label                                weld_vision_ros/WeldLabel, whenever the label
                                               or the weld changes (and first)
    /camera/ground_truth                       weld_vision_ros/WeldGroundTruth (synthetic only)

Every message of a frame carries the frame's header stamp, and the bag timestamp of each
message is that stamp too, so that a reader pairs frames, labels and truth by stamp. A
sidecar file (`labels.yaml` in the bag folder) can map stamp ranges to labels instead.

Our message types are registered from the package's msg/*.msg text (weld_vision_ros.resources).
Topic names, encodings and message fields come from the frame codec (ros.codec). This is
the one writer of the layout (the recorders and tests use it); weld_training.bags is the
one reader.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import yaml

from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES, check_class_name
from weld_vision_ros import resources
from weld_vision_ros.core.results import GroundTruth
from weld_vision_ros.ros import codec

# The bag's topics: the codec's, recorded from the root namespace.
COLOR_TOPIC = codec.bag_topic(codec.COLOR_TOPIC)
DEPTH_TOPIC = codec.bag_topic(codec.DEPTH_TOPIC)
CAMERA_INFO_TOPIC = codec.bag_topic(codec.CAMERA_INFO_TOPIC)
LABEL_TOPIC = codec.bag_topic(codec.LABEL_TOPIC)
GROUND_TRUTH_TOPIC = codec.bag_topic(codec.GROUND_TRUTH_TOPIC)

IMAGE_TYPE = 'sensor_msgs/msg/Image'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
LABEL_TYPE = 'weld_vision_ros/msg/WeldLabel'
GROUND_TRUTH_TYPE = 'weld_vision_ros/msg/WeldGroundTruth'

TOPIC_TYPES: dict[str, str] = {
    COLOR_TOPIC: IMAGE_TYPE,
    DEPTH_TOPIC: IMAGE_TYPE,
    CAMERA_INFO_TOPIC: CAMERA_INFO_TYPE,
    LABEL_TOPIC: LABEL_TYPE,
    GROUND_TRUTH_TOPIC: GROUND_TRUTH_TYPE,
}
STORAGES = ('sqlite3', 'mcap')
DEPTH_ENCODINGS = codec.DEPTH_ENCODINGS
SIDECAR_NAME = 'labels.yaml'
DEFAULT_FRAME_ID = 'camera_color_optical_frame'


class DatasetBagError(ValueError):
    """A bag, a label file or an option that cannot be used to write a dataset."""


# --- message types -----------------------------------------------------------------------

def msg_dirs() -> list[Path]:
    """Folders that may hold our .msg files: the package's share folders (resources)."""
    return [d / 'msg' for d in resources.share_dirs()]


def make_typestore(msg_dir: Optional[Path] = None):
    """A rosbags typestore: the ROS 2 standard types plus ours, read from the .msg files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(getattr(Stores, 'ROS2_KILTED', Stores.LATEST))
    candidates = [Path(msg_dir)] if msg_dir is not None else msg_dirs()
    found = next((d for d in candidates if (d / 'WeldLabel.msg').is_file()), None)
    if found is None:
        raise DatasetBagError('cannot find the weld_vision_ros .msg files; looked in '
                              + ', '.join(str(d) for d in candidates))
    types: dict = {}
    for path in sorted(found.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'weld_vision_ros/msg/{path.stem}'))
    store.register(types)
    return store


# --- sidecar labels ----------------------------------------------------------------------

@dataclass(frozen=True)
class LabelSpan:
    """Frames with start_ns <= stamp <= end_ns [ns] carry `label` and belong to `weld_id`."""

    start_ns: int
    end_ns: int
    label: str
    weld_id: str = ''


def write_sidecar(path: str | Path, spans: Iterable[LabelSpan]) -> Path:
    """Write a sidecar label file: a YAML list of {start_ns, end_ns, label, weld_id}."""
    path = Path(path)
    entries = [{'start_ns': int(s.start_ns), 'end_ns': int(s.end_ns), 'label': s.label,
                'weld_id': s.weld_id} for s in spans]
    path.write_text('# Labels of the frames of this recording: stamp ranges [ns] -> class.\n'
                    + yaml.safe_dump(entries, sort_keys=False))
    return path


def read_sidecar(path: str | Path, class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> list[LabelSpan]:
    """Read a sidecar label file written by `write_sidecar` (or by hand), sorted by start.

    Raises DatasetBagError for a file that cannot be read or an entry that lacks a field or
    ends before it starts, UnknownClassError for a label outside `class_names`.
    """
    try:
        entries = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetBagError(f'cannot read label file {path}: {exc}') from None
    if not isinstance(entries, list):
        raise DatasetBagError(f'label file {path} must hold a list of {{start_ns, end_ns, label, weld_id}}')
    spans = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {'start_ns', 'end_ns', 'label'} <= set(e):
            raise DatasetBagError(f'label file {path}, entry {i}: needs start_ns, end_ns and label; got {e!r}')
        start, end = int(e['start_ns']), int(e['end_ns'])
        if end < start:
            raise DatasetBagError(f'label file {path}, entry {i}: end_ns {end} is before start_ns {start}')
        check_class_name(str(e['label']), class_names)
        spans.append(LabelSpan(start, end, str(e['label']), str(e.get('weld_id') or '')))
    return sorted(spans, key=lambda s: s.start_ns)


# --- writing -----------------------------------------------------------------------------

def free_bag_path(path: str | Path) -> Path:
    """`path` if nothing is there yet, else the first free `path_2`, `path_3`, ..."""
    path = Path(path)
    if not path.exists():
        return path
    n = 2
    while path.with_name(f'{path.name}_{n}').exists():
        n += 1
    return path.with_name(f'{path.name}_{n}')


class DatasetBagWriter:
    """A new dataset bag; counts the frames written under each label.

    Frames and labels can be written from arrays (`write_frame`, `write_label`,
    `write_truth`) or as CDR bytes already serialized by rclpy (`write_raw`), which keeps
    what a camera published bit for bit. Use as a context manager, or call `close()`:
    the bag is readable once closed (metadata.yaml is written then).
    """

    def __init__(self, path: str | Path, storage: str = 'mcap', *, typestore=None,
                 topics: Sequence[str] = tuple(TOPIC_TYPES),
                 class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        if storage not in STORAGES:
            raise DatasetBagError(f'storage must be one of {", ".join(STORAGES)}; got {storage!r}')
        unknown = [t for t in topics if t not in TOPIC_TYPES]
        if unknown:
            raise DatasetBagError(f'unknown dataset topics {unknown}; known: {", ".join(TOPIC_TYPES)}')
        self.path = Path(path)
        self.storage = storage
        self.class_names = tuple(class_names)
        self.store = typestore or make_typestore()
        self.counts: Counter[str] = Counter()
        self.frames = 0
        self._label: Optional[str] = None
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self._thread = None
        if storage == 'sqlite3':
            from concurrent.futures import ThreadPoolExecutor
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix='dataset_bag')
        try:
            self._writer = Writer(self.path, version=9, storage_plugin=plugin)
            self._on_writer_thread(self._writer.open)
        except WriterError as exc:
            self._stop_thread()
            raise DatasetBagError(f'cannot create bag {self.path}: {exc}') from None
        self._connections = {t: self._on_writer_thread(self._writer.add_connection, t, TOPIC_TYPES[t],
                                                       typestore=self.store)
                             for t in topics}
        self._closed = False

    def _on_writer_thread(self, fn, *args, **kwargs):
        """fn(*args, **kwargs), on the bag's own thread where the storage needs one."""
        if self._thread is None:
            return fn(*args, **kwargs)
        return self._thread.submit(fn, *args, **kwargs).result()

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    def __enter__(self) -> 'DatasetBagWriter':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._on_writer_thread(self._writer.close)
            finally:
                self._stop_thread()

    @property
    def current_label(self) -> Optional[str]:
        """The latest label written (None before the first)."""
        return self._label

    def count_list(self) -> list[int]:
        """Frame counts aligned with `class_names`."""
        return [int(self.counts.get(name, 0)) for name in self.class_names]

    # --- raw ---------------------------------------------------------------------------
    def write_raw(self, topic: str, stamp_ns: int, cdr: bytes | memoryview) -> None:
        """Write one message given as CDR bytes (as rclpy's serialize_message makes them)."""
        if self._closed:
            raise DatasetBagError(f'bag {self.path} is closed')
        if topic not in self._connections:
            raise DatasetBagError(f'topic {topic} is not in this bag ({", ".join(self._connections)})')
        self._on_writer_thread(self._writer.write, self._connections[topic], int(stamp_ns), cdr)

    def frame_written(self, label: str) -> None:
        """Count one frame written (with write_raw) under `label`."""
        self.counts[label] += 1
        self.frames += 1

    # --- from arrays --------------------------------------------------------------------
    def _header(self, stamp_ns: int, frame_id: str):
        return _header(self.store, stamp_ns, frame_id)

    def _write_msg(self, topic: str, stamp_ns: int, msg) -> None:
        self.write_raw(topic, stamp_ns, self.store.serialize_cdr(msg, TOPIC_TYPES[topic]))

    def write_label(self, stamp_ns: int, label: str, weld_id: str, source: str,
                    frame_id: str = DEFAULT_FRAME_ID) -> None:
        if self.class_names:       # empty: any label (a test writing a bag a reader must refuse)
            check_class_name(label, self.class_names)
        msg = self.store.types[LABEL_TYPE](header=self._header(stamp_ns, frame_id), label=label,
                                           weld_id=weld_id, source=source)
        self._write_msg(LABEL_TOPIC, stamp_ns, msg)
        self._label = label

    def write_frame(self, stamp_ns: int, rgb: np.ndarray, depth_m: np.ndarray,
                    intrinsics: Intrinsics, depth_encoding: str = '32FC1',
                    frame_id: str = DEFAULT_FRAME_ID, label: Optional[str] = None,
                    color_encoding: str = 'rgb8') -> None:
        """Color (rgb8, or bgr8), aligned depth and camera_info of one frame, all stamped `stamp_ns`.

        The frame counts under `label`, or else under the latest label written.
        """
        label = label if label is not None else self._label
        if label is None:
            raise DatasetBagError('write a label before the first frame, or pass label=')
        for topic, msg in frame_messages(self.store, stamp_ns, rgb, depth_m, intrinsics,
                                         depth_encoding, frame_id, color_encoding):
            self._write_msg(topic, stamp_ns, msg)
        self.frame_written(label)

    def write_truth(self, stamp_ns: int, truth: GroundTruth, frame_id: str = DEFAULT_FRAME_ID) -> None:
        T = self.store.types
        regions = [T['weld_vision_ros/msg/DefectRegion'](
            defect_class=r.defect_class, confidence=float(r.confidence), x_px=int(r.x_px),
            y_px=int(r.y_px), width_px=int(r.width_px), height_px=int(r.height_px),
            length_mm=float(r.length_mm), width_mm=float(r.width_mm),
            position_along_seam_mm=float(r.position_along_seam_mm)) for r in truth.regions]
        msg = T[GROUND_TRUTH_TYPE](
            header=self._header(stamp_ns, frame_id), defect_class=truth.defect_class,
            weld_id=truth.weld_id, width_mm=float(truth.width_mm), width_std_mm=float(truth.width_std_mm),
            height_mm=float(truth.height_mm), undercut_depth_mm=float(truth.undercut_depth_mm),
            seam_angle_deg=float(truth.seam_angle_deg), plate_distance_m=float(truth.plate_distance_m),
            regions=regions)
        self._write_msg(GROUND_TRUTH_TOPIC, stamp_ns, msg)


def frame_messages(store, stamp_ns: int, rgb: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics,
                   depth_encoding: str, frame_id: str, color_encoding: str = 'rgb8') -> list[tuple[str, Any]]:
    """The color, depth and camera_info messages (rosbags types) of one frame, all stamped
    `stamp_ns`, with the codec's fields."""
    T = store.types

    def header():
        return _header(store, stamp_ns, frame_id)

    try:
        color = T[IMAGE_TYPE](header=header(), **codec.color_image_fields(rgb, color_encoding))
        depth = T[IMAGE_TYPE](header=header(), **codec.depth_image_fields(depth_m, depth_encoding))
    except codec.ImageEncodingError as exc:
        raise DatasetBagError(str(exc)) from None
    fields = codec.camera_info_fields(intrinsics)
    info = T[CAMERA_INFO_TYPE](
        header=header(), height=fields['height'], width=fields['width'],
        distortion_model=fields['distortion_model'], d=np.asarray(fields['d'], np.float64),
        k=np.asarray(fields['k'], np.float64), r=np.asarray(fields['r'], np.float64),
        p=np.asarray(fields['p'], np.float64), binning_x=0, binning_y=0,
        roi=T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                  do_rectify=False))
    return [(COLOR_TOPIC, color), (DEPTH_TOPIC, depth), (CAMERA_INFO_TOPIC, info)]


def _header(store, stamp_ns: int, frame_id: str):
    T = store.types
    sec, nanosec = codec.ns_to_sec_nanosec(stamp_ns)
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec),
                                    frame_id=frame_id)


def class_counts_table(counts: Mapping[str, int], welds: Optional[Mapping[str, int]] = None,
                       class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> str:
    """A small text table of frames (and welds) per class."""
    names = list(class_names) + sorted(set(counts) - set(class_names))
    lines = [f'{"class":<10} {"frames":>7}' + (f' {"welds":>6}' if welds is not None else '')]
    for name in names:
        line = f'{name:<10} {int(counts.get(name, 0)):>7}'
        if welds is not None:
            line += f' {int(welds.get(name, 0)):>6}'
        lines.append(line)
    total = f'{"total":<10} {sum(int(v) for v in counts.values()):>7}'
    if welds is not None:
        total += f' {sum(int(v) for v in welds.values()):>6}'
    lines.append(total)
    return '\n'.join(lines)
