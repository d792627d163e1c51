"""Per-weld reports across processes: the synthetic camera scans a weld with known pores and
an undercut (scan mode: camera/pose and weld/event), the rule node inspects each frame, the
report node adds the weld up, grades it and writes JSON + seam map. One pass with a stretch
the camera never saw says so."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip('rclpy')

from test.rosutil import REPO, ros_context, spawn_node, spin_until, stop  # noqa: E402

TABLE = REPO / 'config/acceptance/iso5817_example.yaml'
FEATURES = [
    {'kind': 'porosity', 'position_mm': 150.0, 'size_mm': 2.0, 'depth_mm': 0.8, 'offset_mm': 0.5},
    {'kind': 'porosity', 'position_mm': 330.0, 'size_mm': 1.6, 'depth_mm': 0.7, 'offset_mm': -0.8},
    {'kind': 'undercut', 'position_mm': 450.0, 'size_mm': 40.0, 'depth_mm': 0.45, 'offset_mm': 1},
]


def _plan(tmp_path: Path, name: str, **extra) -> Path:
    plan = {'weld_length_mm': 600.0, 'plate_thickness_mm': 8.0, 'quality_level': 'C', 'step_mm': 40.0,
            'bead_width_mm': 8.0, 'bead_height_mm': 1.5, 'seam_angle_deg': 8.0, 'features': FEATURES, **extra}
    path = tmp_path / f'{name}.yaml'
    path.write_text(yaml.safe_dump(plan))
    return path


def _run_cell(tmp_path: Path, plan: Path, n_reports: int = 1):
    from weld_vision_ros.msg import WeldReport
    logs = tmp_path / 'logs'
    logs.mkdir(exist_ok=True)
    reports_dir = tmp_path / 'reports'
    procs = [
        # reliable and deep: on a loaded machine a slow rule node must not lose frames (coverage)
        spawn_node('weld_vision_ros.nodes.rule_defect_node', {'image_reliability': 'reliable',
                                                               'image_queue_depth': 200},
                   log_path=logs / 'rule.log'),
        spawn_node('weld_vision_ros.nodes.weld_report_node',
                   {'acceptance_table': str(TABLE), 'reports_dir': str(reports_dir), 'end_grace_s': 1.0},
                   log_path=logs / 'report.log'),
    ]
    got = []
    try:
        with ros_context('report_probe') as (node, ex):
            from weld_vision_ros.ros.qos import latched_qos
            node.create_subscription(WeldReport, 'weld/report', got.append, latched_qos())
            # the camera last, once the inspectors listen: it starts the weld at its first frame
            spin_until(ex, lambda: node.count_publishers('weld/report') > 0
                       and node.count_subscribers('camera/color/image_raw') > 0, 30.0)
            procs.append(spawn_node('weld_vision_ros.simulator.synthetic_camera_node',
                                    {'scan_plan': str(plan), 'rate_hz': 4.0, 'seed': 3,
                                     'image_reliability': 'reliable'}, log_path=logs / 'camera.log'))
            assert spin_until(ex, lambda: len(got) >= n_reports, 120.0), \
                'no weld report: ' + (logs / 'report.log').read_text()[-2000:]
    finally:
        for p in procs:
            stop(p)
    return got, reports_dir


def _finding(report, kind, position):
    return [f for f in report.findings if f.defect_class == kind
            and abs(f.position_mm - position) <= f.position_uncertainty_mm]


def test_scanned_weld_report_finds_places_sizes_and_grades(tmp_path):
    reports, folder = _run_cell(tmp_path, _plan(tmp_path, 'full'))
    r = reports[0]
    assert r.weld_id.startswith('scan-') and r.complete and not r.unseen_start_mm
    assert r.frames_inspected == r.frames_total >= 14
    for feat in FEATURES:
        hit = _finding(r, feat['kind'], feat['position_mm'])
        assert len(hit) == 1, (feat, [(f.defect_class, f.position_mm) for f in r.findings])
        f = hit[0]
        assert len(f.frame_stamps) >= 2 and f.position_uncertainty_mm < 15.0
        if feat['kind'] == 'porosity':
            assert abs(f.size_mm - feat['size_mm']) <= 0.3
        else:
            assert abs(f.depth_mm - feat['depth_mm']) <= 0.3
    assert len(r.findings) == len(FEATURES)
    # 8 mm plate: a 2 mm pore fails C (1.6 mm) and passes D (2.4 mm); B allows no pore.
    assert r.graded and r.quality_level_requested == 'C' and not r.passed
    assert r.quality_level_met == 'D'
    assert len(r.failures) == 1 and 'surface pore' in r.failures[0]
    data = json.loads(Path(r.json_path).read_text())
    assert data['grade']['by_level'] == {'B': False, 'C': False, 'D': True}
    assert Path(r.png_path).stat().st_size > 1000 and Path(r.png_path).parent.parent == folder


def test_a_stretch_never_seen_is_reported(tmp_path):
    plan = _plan(tmp_path, 'gap', skip_mm=[[180.0, 420.0]])
    reports, _ = _run_cell(tmp_path, plan)
    r = reports[0]
    assert not r.complete and len(r.unseen_start_mm) == 1
    a, b = r.unseen_start_mm[0], r.unseen_end_mm[0]
    assert 250.0 < a < b < 400.0
    assert any('not inspected' in n for n in r.notes)
    assert r.coverage_fraction < 1.0


def test_every_parameter_is_documented():
    from weld_vision_ros.nodes.weld_report_node import PARAMS
    doc = (REPO / 'docs' / 'weld_report.md').read_text()
    for spec in PARAMS:
        assert f'`{spec.name}`' in doc, f'{spec.name} missing from docs/weld_report.md'


def test_retention_keeps_the_newest_and_the_limits(tmp_path):
    import os
    from weld_vision_ros.core.retention import RetentionPolicy, prune
    for i in range(5):
        d = tmp_path / f'w{i}'
        d.mkdir()
        (d / 'report.json').write_bytes(b'x' * 1000)
        os.utime(d, (1000.0 + i, 1000.0 + i))
    gone = prune(tmp_path, RetentionPolicy(max_bytes=2500, max_age_s=1e9), now_s=2000.0)
    assert [p.name for p in gone] == ['w0', 'w1', 'w2']
    gone = prune(tmp_path, RetentionPolicy(max_bytes=10**9, max_age_s=1.0), now_s=5000.0)
    assert [p.name for p in gone] == ['w3'] and [p.name for p in tmp_path.iterdir()] == ['w4']
