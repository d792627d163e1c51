"""A dataset bag written from several threads, as the capture node's service is on a
multi-threaded executor: both storages, read back whole (no ROS needed)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.ros.dataset_bag import COLOR_TOPIC, LABEL_TOPIC, DatasetBagWriter


def _in_thread(fn, *args) -> None:
    errors = []

    def run():
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_a_bag_opened_in_one_thread_takes_frames_from_others_and_closes_in_a_third(tmp_path, storage):
    from rosbags.rosbag2 import Reader
    rgb = np.zeros((48, 64, 3), np.uint8)
    depth = np.full((48, 64), 0.3, np.float32)
    intr = Intrinsics.from_k([50.0, 0, 32, 0, 50.0, 24, 0, 0, 1], 64, 48)
    bag = DatasetBagWriter(tmp_path / 'bag', storage)
    for i, label in enumerate(['good', 'crack', 'gap']):
        def capture(i=i, label=label):
            stamp = 1_000_000_000 + i
            bag.write_label(stamp, label, 'w1', 'capture')
            bag.write_frame(stamp, rgb, depth, intr)
        _in_thread(capture)
    _in_thread(bag.close)
    with Reader(tmp_path / 'bag') as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts[LABEL_TOPIC] == 3 and counts[COLOR_TOPIC] == 3
    assert bag.counts == {'good': 1, 'crack': 1, 'gap': 1}
