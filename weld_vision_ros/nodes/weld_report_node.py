"""Per-weld report node: adds up the frames of each weld and grades it.

Subscribes (relative names, so a namespace applies):

    weld/event          weld_vision_ros/WeldEvent        start / end of a weld (robot program)
    weld/bead           weld_vision_ros/BeadMeasurement  the rule node's measurement per frame
    weld/defect/rule    weld_vision_ros/WeldDefect       the rule verdict, with located findings
                                                         (`defect_topic`)
    camera/pose         geometry_msgs/PoseStamped        camera optical frame in the part frame
                                                         (placement 'pose'; `pose_topic`)

At the end of a weld (once no measurement of its frames has arrived for `end_grace_s`: the
frames still in flight through a busy rule node; at most END_WAIT_MAX_S) the frames
stamped between its start and end are placed on the seam (`core.weld_report`), merged into
one report, graded against the acceptance table when one is given (`core.grading`), and

    weld/report         weld_vision_ros/WeldReport       published (reliable, latched: the last
                                                         report for a late subscriber)
    <reports_dir>/<weld_id>/report.json, seam_map.png    written, when reports_dir is set,
                                                         within the retention limits

A frame whose pose is missing (no pose within `max_pose_gap_s`) is counted as not placed,
never guessed. Bad events (an end without a start, a second start) are counted and logged.
"""
from __future__ import annotations

import math
import re
import threading
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from std_msgs.msg import Header

from weld_vision_ros.core.grading import AcceptanceTable, AcceptanceTableError
from weld_vision_ros.core.report_io import write_json, write_seam_map
from weld_vision_ros.core.retention import RetentionPolicy, prune
from weld_vision_ros.core.weld_report import (FrameRecord, ReportConfig, WeldReport, WeldReportError,
                                              build_report, placement_from_pose, placement_from_travel)
from weld_vision_ros.msg import (BeadMeasurement, SeamSegment, WeldDefect, WeldEvent, WeldFinding,
                                 WeldReport as WeldReportMsg)
from weld_vision_ros.ros.conversions import bead_from_msg, ns_to_stamp, verdict_from_msg
from weld_vision_ros.ros.diagnostics import OK, WARN, make_array, make_status
from weld_vision_ros.ros.params import DIAGNOSTICS_PERIOD, LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import latched_qos, results_qos
from weld_vision_ros.ros.spin import run_node

NODE_NAME = 'weld_report_node'
REPORT_TOPIC = 'weld/report'
EVENT_TOPIC = 'weld/event'
BEAD_TOPIC = 'weld/bead'
DIAGNOSTICS_TOPIC = '/diagnostics'
PLACEMENTS = ('pose', 'travel')
_SAFE_ID = re.compile(r'[^A-Za-z0-9._-]+')
END_WAIT_MAX_S = 30.0      # a weld's report waits at most this long after its end for its frames

PARAMS = (
    ParamSpec('defect_topic', 'weld/defect/rule', 'Verdicts whose located findings are merged (the rule '
              "node's; the hybrid verdict carries no regions when the model decided)", read_only=True),
    ParamSpec('pose_topic', 'camera/pose', 'Camera optical frame pose in the part frame', read_only=True),
    ParamSpec('placement', 'pose', 'How frames are placed on the seam: pose (camera pose topic) or '
              'travel (travel speed from the weld start)', choices=PLACEMENTS),
    ParamSpec('pose_sigma_mm', 1.0, 'Accuracy of the pose along the seam (1 sigma)', unit='mm',
              min_value=0.0, max_value=100.0),
    ParamSpec('max_pose_gap_s', 0.05, 'A frame takes the pose nearest its stamp within this; '
              'farther: not placed', unit='s', min_value=0.0, max_value=5.0),
    ParamSpec('seam_origin_m', [0.0, 0.0, 0.0], 'Weld start in the part frame (x, y, z)', unit='m'),
    ParamSpec('seam_direction', [1.0, 0.0, 0.0], 'Seam direction in the part frame (x, y, z); the plate '
              'is the plane through seam_origin_m normal to part z'),
    ParamSpec('travel_speed_mm_s', 10.0, 'Placement travel: speed of the view along the seam',
              unit='mm/s', min_value=0.0, max_value=10000.0),
    ParamSpec('travel_start_mm', 0.0, 'Placement travel: seam position of the view at the weld start',
              unit='mm', min_value=-1e6, max_value=1e6),
    ParamSpec('travel_sigma_mm', 2.0, 'Placement travel: uncertainty at the start (1 sigma)', unit='mm',
              min_value=0.0, max_value=1000.0),
    ParamSpec('travel_sigma_per_s_mm', 0.5, 'Placement travel: growth of the uncertainty per second',
              unit='mm/s', min_value=0.0, max_value=1000.0),
    ParamSpec('travel_direction', 1, "Placement travel: +1 if the frames' seam coordinate runs along "
              'the weld, -1 if against it', min_value=-1, max_value=1),
    ParamSpec('acceptance_table', '', 'Acceptance table YAML (config/acceptance/iso5817_example.yaml is '
              'an EXAMPLE to check against the standard); empty: reports are not graded'),
    ParamSpec('default_quality_level', 'C', "Quality level graded when the weld's start event names none"),
    ParamSpec('reports_dir', '', 'Folder for <weld_id>/report.json and seam_map.png; empty: not written'),
    ParamSpec('reports_max_mb', 500.0, 'Retention: total size of reports_dir', unit='MB', min_value=1.0,
              max_value=1e6),
    ParamSpec('reports_max_age_days', 90.0, 'Retention: age of a report', unit='days', min_value=0.01,
              max_value=36500.0),
    ParamSpec('end_grace_s', 0.5, 'After the end event, the report waits until no measurement of the '
              "weld's frames has arrived for this long (frames still in flight)", unit='s',
              min_value=0.0, max_value=30.0),
    ParamSpec('segment_mm', 20.0, 'Length of a report segment', unit='mm', min_value=1.0, max_value=1000.0),
    ParamSpec('merge_mm', 4.0, 'Sightings closer than this (plus their uncertainty) are one imperfection',
              unit='mm', min_value=0.0, max_value=100.0),
    ParamSpec('min_frames', 2, 'A finding must be seen by at least this many frames', unit='frames',
              min_value=1, max_value=1000),
    ParamSpec('min_detection_ratio', 0.3, 'and by this share of the frames that covered it',
              min_value=0.0, max_value=1.0),
    ParamSpec('max_frames_kept', 20000, 'Frames buffered (per stream) for the open weld', unit='frames',
              min_value=100, max_value=1_000_000, read_only=True),
    DIAGNOSTICS_PERIOD,
)


@dataclass(frozen=True)
class ReportNodeConfig:
    values: Mapping[str, Any]
    report: ReportConfig
    table: Optional[AcceptanceTable]
    retention: RetentionPolicy

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'ReportNodeConfig':
        for key in ('seam_origin_m', 'seam_direction'):
            vec = v[key]
            if len(vec) != 3 or not all(math.isfinite(float(x)) for x in vec):
                raise ValueError(f'{key} must be 3 finite numbers, got {list(vec)}')
        if math.hypot(*map(float, v['seam_direction'])) == 0:
            raise ValueError('seam_direction must not be zero')
        if int(v['travel_direction']) == 0:
            raise ValueError('travel_direction must be +1 or -1')
        table = None
        if v['acceptance_table']:
            try:
                table = AcceptanceTable.load(v['acceptance_table'])
            except AcceptanceTableError as exc:
                raise ValueError(str(exc)) from None
            if v['default_quality_level'] not in table.levels:
                raise ValueError(f"default_quality_level {v['default_quality_level']!r} is not a level of "
                                 f"{v['acceptance_table']} ({', '.join(table.levels)})")
        report = ReportConfig(segment_mm=float(v['segment_mm']), merge_mm=float(v['merge_mm']),
                              min_frames=int(v['min_frames']),
                              min_detection_ratio=float(v['min_detection_ratio']))
        retention = RetentionPolicy(int(float(v['reports_max_mb']) * 2**20),
                                    float(v['reports_max_age_days']) * 86400.0)
        return cls(dict(v), report, table, retention)


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class _Ending:
    """A weld that has ended and waits for its last frames' measurements."""

    weld: '_OpenWeld'
    end_ns: int
    last_arrival_ns: int     # node clock: the end event, or the latest measurement of its frames
    deadline_ns: int


@dataclass
class _OpenWeld:
    weld_id: str
    start_ns: int
    plate_thickness_mm: float
    quality_level: str
    weld_length_mm: float


def report_to_msg(report: WeldReport, header, json_path: str = '', png_path: str = '') -> WeldReportMsg:
    def finding(f) -> WeldFinding:
        return WeldFinding(defect_class=f.defect_class, position_mm=float(f.position_mm),
                           position_uncertainty_mm=float(f.position_uncertainty_mm),
                           start_mm=float(f.start_mm), end_mm=float(f.end_mm), size_mm=float(f.size_mm),
                           width_mm=float(f.width_mm), depth_mm=float(f.depth_mm),
                           frame_stamps=[ns_to_stamp(s) for s in f.frames],
                           frames_covering=int(f.frames_covering), confirmed=bool(f.confirmed))
    g = report.grade
    return WeldReportMsg(
        header=header, weld_id=report.weld_id, weld_length_mm=float(report.weld_length_mm),
        plate_thickness_mm=float(report.plate_thickness_mm), started=ns_to_stamp(report.started_ns),
        ended=ns_to_stamp(report.ended_ns), frames_total=report.frames_total,
        frames_inspected=report.frames_inspected,
        not_inspected_reasons=list(report.frames_not_inspected),
        not_inspected_counts=[int(n) for n in report.frames_not_inspected.values()],
        seen_start_mm=[float(a) for a, _ in report.seen], seen_end_mm=[float(b) for _, b in report.seen],
        unseen_start_mm=[float(a) for a, _ in report.unseen], unseen_end_mm=[float(b) for _, b in report.unseen],
        coverage_fraction=float(report.coverage_fraction), complete=report.complete,
        segments=[SeamSegment(start_mm=float(s.start_mm), end_mm=float(s.end_mm), seen=s.seen, frames=s.frames,
                              width_mm=float(s.width_mm), width_min_mm=float(s.width_min_mm),
                              width_max_mm=float(s.width_max_mm), height_mm=float(s.height_mm),
                              height_max_mm=float(s.height_max_mm),
                              undercut_depth_mm=float(s.undercut_depth_mm)) for s in report.segments],
        findings=[finding(f) for f in report.findings], unconfirmed=[finding(f) for f in report.unconfirmed],
        measure_names=list(report.measures), measure_values=[float(v) for v in report.measures.values()],
        graded=g is not None, table_name=report.table_name,
        quality_level_requested=g.requested_level if g else '', quality_level_met=g.met_level if g else '',
        passed=bool(g.passed) if g else False, failures=[r.describe() for r in g.failures] if g else [],
        notes=list(report.notes), json_path=json_path, png_path=png_path)


class WeldReportNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = LiveParameters(self, PARAMS, ReportNodeConfig.from_values)
        v = self.params.config.values
        keep = int(v['max_frames_kept'])
        self._lock = threading.Lock()
        self._beads: deque = deque(maxlen=keep)
        self._defects: dict[int, Any] = {}
        self._defect_order: deque = deque(maxlen=keep)
        self._poses: deque = deque(maxlen=keep)
        self._open: Optional[_OpenWeld] = None
        self._pending: list[_Ending] = []
        self.events: Counter[str] = Counter()
        self.reports_published = 0
        qos = results_qos(depth=200)
        self.create_subscription(BeadMeasurement, BEAD_TOPIC, self._on_bead, qos)
        self.create_subscription(WeldDefect, v['defect_topic'], self._on_defect, qos)
        self.create_subscription(PoseStamped, v['pose_topic'], self._on_pose, qos)
        self.create_subscription(WeldEvent, EVENT_TOPIC, self._on_event, results_qos(depth=20))
        self.report_pub = self.create_publisher(WeldReportMsg, REPORT_TOPIC, latched_qos())
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, results_qos())
        self.create_timer(0.05, self._finish_due)
        self.create_timer(float(v['diagnostics_period_s']), self._publish_diagnostics)
        self.get_logger().info(
            f'weld reports: placement {v["placement"]}, '
            f'{"graded against " + v["acceptance_table"] if v["acceptance_table"] else "not graded"}, '
            f'{"written to " + v["reports_dir"] if v["reports_dir"] else "not written to disk"}')

    # --- inputs ----------------------------------------------------------------------------
    def _on_bead(self, msg) -> None:
        stamp = _ns(msg.header.stamp)
        with self._lock:
            self._beads.append((stamp, msg))
        for ending in self._pending:
            if ending.weld.start_ns <= stamp <= ending.end_ns:
                ending.last_arrival_ns = self.get_clock().now().nanoseconds

    def _on_defect(self, msg) -> None:
        stamp = _ns(msg.header.stamp)
        with self._lock:
            if len(self._defect_order) == self._defect_order.maxlen:
                self._defects.pop(self._defect_order[0], None)
            self._defect_order.append(stamp)
            self._defects[stamp] = msg

    def _on_pose(self, msg) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        with self._lock:
            self._poses.append((_ns(msg.header.stamp), (p.x, p.y, p.z), (o.x, o.y, o.z, o.w)))

    def _on_event(self, msg) -> None:
        stamp = _ns(msg.header.stamp)
        v = self.params.config.values
        if msg.event == WeldEvent.EVENT_START:
            if not msg.weld_id:
                self.events['start_without_id'] += 1
                self.get_logger().warning('weld start without weld_id: ignored')
                return
            if self._open is not None:
                self.events['start_while_open'] += 1
                self.get_logger().warning(f'weld {msg.weld_id!r} started while {self._open.weld_id!r} was open: '
                                          'closing that one at this stamp')
                self._schedule(self._open, stamp)
            level = msg.quality_level or str(v['default_quality_level'])
            self._open = _OpenWeld(msg.weld_id, stamp, float(msg.plate_thickness_mm), level,
                                   float(msg.weld_length_mm))
            self.events['start'] += 1
        elif msg.event == WeldEvent.EVENT_END:
            if self._open is None or (msg.weld_id and msg.weld_id != self._open.weld_id):
                self.events['end_without_start'] += 1
                self.get_logger().warning(f'weld end for {msg.weld_id!r} without its start: ignored')
                return
            self._schedule(self._open, stamp)
            self._open = None
            self.events['end'] += 1
        else:
            self.events['unknown_event'] += 1
            self.get_logger().warning(f'unknown weld event {msg.event!r}: expected start or end')

    def _schedule(self, weld: _OpenWeld, end_ns: int) -> None:
        now = self.get_clock().now().nanoseconds
        self._pending.append(_Ending(weld, end_ns, now, now + int(END_WAIT_MAX_S * 1e9)))

    # --- reports ---------------------------------------------------------------------------
    def _finish_due(self) -> None:
        now = self.get_clock().now().nanoseconds
        grace = int(float(self.params.config.values['end_grace_s']) * 1e9)
        due = [e for e in self._pending if now - e.last_arrival_ns >= grace or now >= e.deadline_ns]
        self._pending = [e for e in self._pending if e not in due]
        for ending in due:
            weld, end_ns = ending.weld, ending.end_ns
            try:
                self._finish(weld, end_ns)
            except (WeldReportError, ValueError, OSError) as exc:   # the ROS boundary: count, log, go on
                self.events['report_failed'] += 1
                self.get_logger().error(f'report of weld {weld.weld_id!r} failed: {exc}')

    def _pose_at(self, stamp: int, poses: list) -> Optional[tuple]:
        if not poses:
            return None
        best = min(poses, key=lambda p: abs(p[0] - stamp))
        if abs(best[0] - stamp) > float(self.params.config.values['max_pose_gap_s']) * 1e9:
            return None
        return best

    def frame_records(self, weld: _OpenWeld, end_ns: int) -> list[FrameRecord]:
        cfg = self.params.config
        v = cfg.values
        with self._lock:
            beads = [(s, m) for s, m in self._beads if weld.start_ns <= s <= end_ns]
            defects = dict(self._defects)
            poses = [p for p in self._poses if weld.start_ns - 1e9 <= p[0] <= end_ns + 1e9]
        records = []
        for stamp, bead_msg in sorted(beads, key=lambda x: x[0]):
            bead = bead_from_msg(bead_msg)
            defect = defects.get(stamp)
            verdict = verdict_from_msg(defect) if defect is not None else None
            placement = None
            if bead.valid:
                if v['placement'] == 'pose':
                    pose = self._pose_at(stamp, poses)
                    if pose is not None:
                        try:
                            placement = placement_from_pose(pose[1], pose[2], bead.seam_angle_deg,
                                                            float(v['pose_sigma_mm']), tuple(v['seam_origin_m']),
                                                            tuple(v['seam_direction']))
                        except WeldReportError as exc:
                            self.get_logger().warning(f'frame not placed: {exc}', throttle_duration_sec=5.0)
                else:
                    placement = placement_from_travel(
                        (stamp - weld.start_ns) * 1e-9, float(v['travel_speed_mm_s']),
                        float(v['travel_start_mm']), float(v['travel_sigma_mm']),
                        float(v['travel_sigma_per_s_mm']), int(v['travel_direction']))
            records.append(FrameRecord(stamp, placement, bead, verdict))
        return records

    def _finish(self, weld: _OpenWeld, end_ns: int) -> None:
        cfg = self.params.config
        records = self.frame_records(weld, end_ns)
        report = build_report(weld.weld_id, records, weld.weld_length_mm, weld.plate_thickness_mm,
                              cfg.report, cfg.table, weld.quality_level if cfg.table else '',
                              weld.start_ns, end_ns)
        json_path = png_path = ''
        folder = str(cfg.values['reports_dir'])
        if folder:
            out = Path(folder) / (_SAFE_ID.sub('_', weld.weld_id) or 'weld')
            json_path = str(write_json(report, out / 'report.json'))
            png_path = str(write_seam_map(report, out / 'seam_map.png'))
            for gone in prune(folder, cfg.retention):
                self.get_logger().info(f'retention: removed {gone}')
        header = Header(stamp=ns_to_stamp(end_ns), frame_id='')
        self.report_pub.publish(report_to_msg(report, header, json_path, png_path))
        self.reports_published += 1
        g = report.grade
        self.get_logger().info(
            f'weld {weld.weld_id}: {len(report.findings)} finding(s), coverage {100 * report.coverage_fraction:.0f} %'
            + (f', level {g.requested_level} {"met" if g.passed else "NOT met"} (met: {g.met_level or "none"})'
               if g else ', not graded'))

    def _publish_diagnostics(self) -> None:
        values = {'reports_published': self.reports_published, 'weld_open': self._open.weld_id if self._open else '',
                  **{f'events.{k}': n for k, n in sorted(self.events.items())}}
        bad = sum(n for k, n in self.events.items() if k not in ('start', 'end'))
        status = make_status(f'{self.get_fully_qualified_name()}: weld reports',
                             f'{bad} bad weld event(s) or failed report(s)' if bad else 'ok', values,
                             WARN if bad else OK)
        self.diag_pub.publish(make_array(self.get_clock().now().to_msg(), status))


def main(args=None) -> None:
    run_node(WeldReportNode, args)


if __name__ == '__main__':
    main()
