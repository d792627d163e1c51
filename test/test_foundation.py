"""Foundation: messages cross processes intact; install layout; ROS-free training import."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test.rosutil import REPO, ros_context, spawn_node, spin_until, stop

pytestmark = pytest.mark.ros



def _plain(value):
    if hasattr(value, 'get_fields_and_field_types'):
        return {k: _plain(getattr(value, k)) for k in value.get_fields_and_field_types()}
    if isinstance(value, (list, tuple)) or type(value).__name__ in ('array', 'ndarray'):
        return [_plain(v) for v in value]
    if isinstance(value, float):  # float32 fields round on the wire, not in Python
        return float(np.float32(value))
    return value


def test_every_custom_message_crosses_processes_intact():
    from test.helpers.message_samples import TOPICS, samples
    expected = samples()
    received = {}
    proc = spawn_node('test.helpers.publish_samples')
    try:
        with ros_context() as (node, ex):
            for key, msg in expected.items():
                node.create_subscription(type(msg), TOPICS[key],
                                         lambda m, key=key: received.setdefault(key, m), 10)
            assert spin_until(ex, lambda: len(received) == len(expected), 30.0), \
                f'received only {sorted(received)} of {sorted(expected)}'
    finally:
        stop(proc)
    for key, msg in expected.items():
        got, want = _plain(received[key]), _plain(msg)
        assert got == want, f'{key} changed crossing processes:\n{got}\n!=\n{want}'
    # The region array and the aligned class/probability arrays really carried data.
    assert len(received['defect'].regions) == 2
    assert received['defect'].regions[1].position_along_seam_mm == pytest.approx(34.25)
    assert list(received['defect'].class_names)[1] == 'porosity'


def test_installed_share_holds_launch_config_and_messages():
    share = REPO / 'install' / 'weld_vision_ros' / 'share' / 'weld_vision_ros'
    for sub in ('launch', 'config', 'msg', 'srv'):
        assert (share / sub).is_dir(), f'{share / sub} missing'
    assert (share / 'config' / 'weld_cell.yaml').is_file()
    assert (share / 'msg' / 'WeldDefect.msg').is_file()
    assert (share / 'package.xml').exists()


def test_weld_training_imports_in_plain_python_without_ros():
    env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'HOME': os.environ.get('HOME', '/tmp')}
    code = ('import sys, weld_training, weld_vision_ros.core.preprocess, weld_vision_ros.ros.sync;'
            'bad = [m for m in sys.modules if m.startswith(("rclpy", "rcl_interfaces", "sensor_msgs"))];'
            'assert not bad, bad; print("ok")')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr
