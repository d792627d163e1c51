"""Review recorder: keeps the frames worth labelling, for the data flywheel.

Runs beside the inspection nodes. It listens to the camera (the synchronized RGB-D input
every node uses) and to the verdicts:

    weld/defect/rule    the rules' verdict      (`rule_topic`)
    weld/defect/ml      the model's verdict     (`ml_topic`, on the frames it ran on)
    weld/defect         the final verdict       (`final_topic`)

and saves a frame into a review bag, with the reasons, when the rules and the model disagree
(both inspected it, different classes), when the final confidence is below
`low_confidence`, or when the verdict says the frame looks unlike anything known
(status_reason unknown_appearance, from the anomaly model). Saving is rate-limited
(`max_per_minute`) and bounded: a bag is closed at `bag_max_mb` (or after `close_after_idle_s`
without a save, so that it becomes readable) and a new one started; the review folder is kept
within `retention_max_mb` and `retention_max_age_days`, oldest bag first.

Each bag is a dataset bag (camera topics, no labels) with `review.yaml` beside its data:
one entry per frame, {stamp_ns, reasons, rule_class, ml_class, final_class, confidence,
weld_id}. `weld-train review BAG --labels labels.csv` labels it for training.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from weld_vision_ros.core.review import review_reasons
from weld_vision_ros.core.retention import RetentionPolicy, prune
from weld_vision_ros.msg import WeldDefect, WeldLabel
from weld_vision_ros.ros import codec
from weld_vision_ros.ros.dataset_bag import (CAMERA_INFO_TOPIC, COLOR_TOPIC, DEPTH_TOPIC, STORAGES,
                                             DatasetBagError, DatasetBagWriter, free_bag_path)
from weld_vision_ros.ros.diagnostics import OK, WARN, make_array, make_status
from weld_vision_ros.ros.params import DIAGNOSTICS_PERIOD, LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import latched_qos, results_qos
from weld_vision_ros.ros.rgbd_input import RgbdInput
from weld_vision_ros.ros.spin import run_node

NODE_NAME = 'review_recorder_node'
REVIEW_NAME = 'review.yaml'
# Bytes of one frame in the bag beyond its pixels (headers, camera_info, records).
_FRAME_OVERHEAD = 2048

PARAMS = (
    ParamSpec('review_dir', 'review', 'Folder of the review bags (created)', read_only=True),
    ParamSpec('storage', 'mcap', 'Bag storage: mcap or sqlite3', choices=STORAGES, read_only=True),
    ParamSpec('rule_topic', 'weld/defect/rule', 'Rule verdicts', read_only=True),
    ParamSpec('ml_topic', 'weld/defect/ml', 'Model verdicts', read_only=True),
    ParamSpec('final_topic', 'weld/defect', 'Final verdicts', read_only=True),
    ParamSpec('save_disagreement', True, 'Save frames where rules and model disagree'),
    ParamSpec('low_confidence', 0.6, 'Save frames whose final confidence is below this (0: never)',
              min_value=0.0, max_value=1.0),
    ParamSpec('save_unknown_appearance', True, 'Save frames the anomaly model calls unknown'),
    ParamSpec('max_per_minute', 12.0, 'Rate limit of saved frames', unit='frames/min', min_value=0.1,
              max_value=6000.0),
    ParamSpec('decide_after_s', 0.5, 'Wait this long after a frame for its verdicts', unit='s',
              min_value=0.0, max_value=10.0),
    ParamSpec('buffer_frames', 30, 'Recent frames kept while their verdicts arrive', unit='frames',
              min_value=1, max_value=300, read_only=True),
    ParamSpec('bag_max_mb', 200.0, 'Close a review bag at this size and start a new one', unit='MB',
              min_value=1.0, max_value=100000.0),
    ParamSpec('close_after_idle_s', 30.0, 'Close the open bag (readable) after this long without a save',
              unit='s', min_value=1.0, max_value=86400.0),
    ParamSpec('retention_max_mb', 2000.0, 'Retention: total size of review_dir', unit='MB', min_value=1.0,
              max_value=1e7),
    ParamSpec('retention_max_age_days', 30.0, 'Retention: age of a review bag', unit='days',
              min_value=0.01, max_value=36500.0),
    DIAGNOSTICS_PERIOD,
)


@dataclass(frozen=True)
class ReviewConfig:
    v: Mapping[str, Any]
    retention: RetentionPolicy

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'ReviewConfig':
        if not str(v['review_dir']):
            raise ValueError('review_dir must not be empty')
        return cls(dict(v), RetentionPolicy(int(float(v['retention_max_mb']) * 2**20),
                                            float(v['retention_max_age_days']) * 86400.0))


class ReviewRecorderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = LiveParameters(self, PARAMS, ReviewConfig.from_values)
        v = self.params.config.v
        self.folder = Path(v['review_dir'])      # created at the first save
        self._frames: OrderedDict[int, Any] = OrderedDict()
        self._verdicts: dict[int, dict[str, Any]] = {}
        self._first_seen: dict[int, float] = {}
        self._weld_id = ''
        self._writer: Optional[DatasetBagWriter] = None
        self._entries: list[dict] = []
        self._bag_bytes = 0
        self._last_save = 0.0
        self._save_times: list[float] = []
        self.saved: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.bags_closed = 0
        qos = results_qos(depth=100)
        for key in ('rule', 'ml', 'final'):
            self.create_subscription(WeldDefect, v[f'{key}_topic'],
                                     lambda msg, key=key: self._on_verdict(key, msg), qos)
        self.create_subscription(WeldLabel, codec.LABEL_TOPIC, self._on_label, latched_qos())
        self.input = RgbdInput(self, self._on_frame)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', results_qos())
        self.create_timer(0.1, self._decide)
        self.create_timer(float(v['diagnostics_period_s']), self._publish_diagnostics)
        self.get_logger().info(f'review recorder: frames worth labelling go to {self.folder}/')

    # --- inputs ----------------------------------------------------------------------------
    def _on_label(self, msg) -> None:
        self._weld_id = msg.weld_id

    def _on_frame(self, frame, header, received_s: float) -> None:
        stamp = codec.stamp_to_ns(header.stamp)
        self._frames[stamp] = frame
        self._first_seen.setdefault(stamp, time.monotonic())
        while len(self._frames) > int(self.params.config.v['buffer_frames']):
            old, _ = self._frames.popitem(last=False)
            self._forget(old)

    def _on_verdict(self, key: str, msg) -> None:
        stamp = codec.stamp_to_ns(msg.header.stamp)
        self._verdicts.setdefault(stamp, {})[key] = msg
        self._first_seen.setdefault(stamp, time.monotonic())

    def _forget(self, stamp: int) -> None:
        self._verdicts.pop(stamp, None)
        self._first_seen.pop(stamp, None)

    # --- deciding and saving --------------------------------------------------------------
    def _decide(self) -> None:
        v = self.params.config.v
        now = time.monotonic()
        wait = float(v['decide_after_s'])
        for stamp in [s for s, t in self._first_seen.items() if now - t >= wait]:
            verdicts = self._verdicts.get(stamp, {})
            frame = self._frames.get(stamp)
            reasons = review_reasons(verdicts.get('rule'), verdicts.get('ml'), verdicts.get('final'),
                                     float(v['low_confidence']), bool(v['save_disagreement']),
                                     bool(v['save_unknown_appearance']))
            self._forget(stamp)
            if not reasons:
                continue
            if frame is None:
                self.skipped['frame_not_buffered'] += 1
                continue
            self._frames.pop(stamp, None)
            if not self._rate_ok(now):
                self.skipped['rate_limited'] += 1
                continue
            try:
                self._save(stamp, frame, reasons, verdicts)
            except (DatasetBagError, OSError) as exc:      # the ROS boundary: count, log, go on
                self.skipped['write_failed'] += 1
                self.get_logger().error(f'review frame not saved: {exc}', throttle_duration_sec=5.0)
        if self._writer is not None and now - self._last_save > float(v['close_after_idle_s']):
            self._close_bag()

    def _rate_ok(self, now: float) -> bool:
        per_min = float(self.params.config.v['max_per_minute'])
        self._save_times = [t for t in self._save_times if now - t < 60.0]
        if len(self._save_times) >= per_min or (self._save_times and now - self._save_times[-1] < 60.0 / per_min):
            return False
        self._save_times.append(now)
        return True

    def _save(self, stamp: int, frame, reasons: list[str], verdicts: Mapping[str, Any]) -> None:
        v = self.params.config.v
        size = frame.rgb.nbytes + frame.depth_m.nbytes + _FRAME_OVERHEAD
        limit = float(v['bag_max_mb']) * 2**20
        if self._writer is not None and self._bag_bytes + size > limit:
            self._close_bag()
        if size > limit:
            self.skipped['frame_larger_than_bag'] += 1
            return
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = free_bag_path(self.folder / time.strftime('review_%Y%m%d_%H%M%S'))
            self._writer = DatasetBagWriter(path, str(v['storage']),
                                            topics=(COLOR_TOPIC, DEPTH_TOPIC, CAMERA_INFO_TOPIC))
            self._entries, self._bag_bytes = [], 0
            self.get_logger().info(f'review bag {path}')
        self._writer.write_frame(stamp, frame.rgb, frame.depth_m, frame.intrinsics, label='unlabelled',
                                 frame_id=frame.frame_id or 'camera_color_optical_frame')
        self._bag_bytes += size
        self._last_save = time.monotonic()

        def cls(key: str) -> str:
            m = verdicts.get(key)
            return m.defect_class if m is not None else ''
        final = verdicts.get('final')
        self._entries.append({'stamp_ns': int(stamp), 'reasons': list(reasons), 'rule_class': cls('rule'),
                              'ml_class': cls('ml'), 'final_class': cls('final'),
                              'confidence': float(final.confidence) if final is not None else 0.0,
                              'weld_id': self._weld_id})
        self._write_entries()
        for r in reasons:
            self.saved[r] += 1
        self.saved['frames'] += 1

    def _write_entries(self) -> None:
        path = self._writer.path / REVIEW_NAME
        fd, tmp = tempfile.mkstemp(dir=self._writer.path, prefix='.review')
        with os.fdopen(fd, 'w') as f:
            f.write('# Frames worth labelling and why (review_recorder_node).\n')
            yaml.safe_dump(self._entries, f, sort_keys=False)
        os.replace(tmp, path)

    def _close_bag(self) -> None:
        if self._writer is None:
            return
        path = self._writer.path
        self._writer.close()
        self._writer = None
        self.bags_closed += 1
        quiet = not self.context.ok()       # closing at shutdown: /rosout is gone
        if not quiet:
            self.get_logger().info(f'review bag closed: {path} ({len(self._entries)} frames)')
        for gone in prune(self.folder, self.params.config.retention):
            if not quiet:
                self.get_logger().info(f'retention: removed {gone}')

    def destroy_node(self) -> None:
        self._close_bag()
        super().destroy_node()

    def diagnostic_values(self) -> dict[str, Any]:
        return {'frames_saved': self.saved['frames'], 'bags_closed': self.bags_closed,
                'open_bag': str(self._writer.path) if self._writer else '',
                'open_bag_mb': round(self._bag_bytes / 2**20, 2),
                **{f'saved.{k}': n for k, n in sorted(self.saved.items()) if k != 'frames'},
                **{f'skipped.{k}': n for k, n in sorted(self.skipped.items())},
                **self.input.diagnostic_values()}

    def _publish_diagnostics(self) -> None:
        values = self.diagnostic_values()
        bad = self.skipped['write_failed']
        status = make_status(f'{self.get_fully_qualified_name()}: review recorder',
                             f'{bad} review frame(s) could not be written' if bad
                             else f'{values["frames_saved"]} frame(s) saved for review', values,
                             WARN if bad else OK)
        self.diag_pub.publish(make_array(self.get_clock().now().to_msg(), status))


def main(args=None) -> None:
    run_node(ReviewRecorderNode, args)


if __name__ == '__main__':
    main()
