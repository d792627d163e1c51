"""The end-to-end benchmark, run for a few seconds at a low rate: every process starts, the
measuring subscriber hears the camera, the relay and the rule node, and the report it writes
holds latencies, the relay baseline, drops and CPU/RSS of every process.

No timing thresholds: the machine is shared, only the presence and sanity of numbers is checked.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('rclpy')

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parent.parent


def test_header_stamp_read_from_cdr_matches_rclpy_serialization() -> None:
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from weld_vision_ros.perf.e2e_metrics import header_stamp_ns
    from weld_vision_ros.msg import BeadMeasurement, WeldDefect
    from weld_vision_ros.ros.conversions import ns_to_stamp
    stamp = 1_790_123_456_987_654_321
    for msg in (Image(height=2, width=3, encoding='rgb8', step=9, data=bytes(18)),
                BeadMeasurement(valid=True, reason=''), WeldDefect(defect_class='gap')):
        msg.header.stamp = ns_to_stamp(stamp)
        msg.header.frame_id = 'camera_color_optical_frame'
        assert header_stamp_ns(serialize_message(msg)) == stamp, type(msg).__name__


def test_short_run_reports_latency_baseline_drops_and_process_numbers(tmp_path: Path) -> None:
    report_md, report_json = tmp_path / 'BENCHMARKS_e2e.md', tmp_path / 'report.json'
    cmd = [sys.executable, str(REPO / 'benchmarks' / 'bench_e2e.py'),
           '--duration', '5', '--warmup', '2', '--grace', '1', '--report-period', '2',
           '--rate-hz', '5', '--width', '320', '--height', '240', '--startup-timeout', '30',
           # Room for whole frames in shared memory, so best-effort images reach every subscriber
           # even on a busy machine (the report must have something to show).
           '--shm-segment-mb', '8',
           '--out-md', str(report_md), '--json', str(report_json), '--log-dir', str(tmp_path / 'logs')]
    # The benchmark picks its own DDS domain; drop the test session's so that it must.
    env = {k: v for k, v in os.environ.items() if k != 'ROS_DOMAIN_ID'}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=55)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)          # lets the benchmark stop its node processes
        out, _ = proc.communicate(timeout=20)
        pytest.fail('the benchmark did not finish in 55 s:\n' + out[-4000:])
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r'\[bench_e2e +\d+/5 s\] camera [\d.]+ Hz', out), out[-2000:]  # progress lines

    report = json.loads(report_json.read_text())
    assert report['camera_sent'] > 0 and report['camera_rate_hz'] > 0
    assert report['strangers'] == [] and 1 <= report['settings']['domain_id'] <= 101
    assert report['settings']['width'] == 320 and report['settings']['rate_hz'] == 5.0
    assert 'shared memory with a 8 MB segment' in report['settings']['transport']
    paths = {(p['path'], p['topic']): p for p in report['paths']}

    def path(prefix: str, topic: str) -> dict:
        matches = [p for (name, t), p in paths.items() if name.startswith(prefix) and t == topic]
        assert len(matches) == 1, f'{prefix} {topic} not in {list(paths)}'
        return matches[0]

    bead = path('camera → rule_defect_node', 'weld/bead')
    baseline = path('camera → image_relay', 'color + depth (later of the pair)')
    direct = path('camera → bench (direct)', 'camera/color/image_raw')
    for p in (bead, baseline, direct):
        assert 0 < p['received'] <= p['sent'] == report['camera_sent'], p
        assert p['from_stamp']['p50_ms'] > 0, p
        assert p['from_stamp']['p99_ms'] >= p['from_stamp']['p50_ms'], p
    assert not math.isnan(bead['ratio_p50']) and bead['ratio_p50'] > 0
    assert baseline['ratio_p50'] == pytest.approx(1.0)
    assert report['baseline_path'].startswith('camera → image_relay')

    inputs = {i['node']: i for i in report['inputs']}
    assert 'rule_defect_node' in inputs, report['inputs']
    assert inputs['rule_defect_node']['frames_in'] > 0 and inputs['rule_defect_node']['sent'] > 0

    procs = {p['name']: p for p in report['processes']}
    assert set(procs) == {'camera', 'relay', 'rule', 'bench'}
    for name, p in procs.items():
        assert p['samples'] >= 3, p
        assert p['cpu_median_pct'] >= 0 and p['cpu_max_pct'] > 0, p
        assert p['rss_median_mb'] > 10, p          # a Python process with rclpy loaded

    md = report_md.read_text()
    assert md.startswith('# End-to-end benchmark')
    assert '| Path | Topic | Received / sent | p50 [ms] | p99 [ms]' in md
    assert '| weld/bead |' in md and '| Process | CPU median [%]' in md
    assert '320x240 at 5.0 Hz' in md
