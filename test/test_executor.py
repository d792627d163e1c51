"""SteadyExecutor runs every callback once per ready event and does not resubmit queued work
(the busy loop of rclpy's MultiThreadedExecutor, ros2/rclpy#1452)."""
from __future__ import annotations

import pytest

from weld_vision_ros.perf.executor_probe import run_once

pytestmark = pytest.mark.ros


def test_steady_executor_runs_every_callback_once_and_submits_each_task_once():
    from weld_vision_ros.ros.executor import SteadyExecutor
    sent, got, submissions, _ = run_once(SteadyExecutor)
    assert len(sent) >= 150
    assert set(got) == set(sent) and set(got.values()) == {1}, 'a message was lost or handled twice'
    # One submission per callback; a few more are allowed for the race between the wait
    # (callback group free) and the start of the task (group taken meanwhile).
    assert submissions <= len(sent) * 1.05 + 5, (submissions, len(sent))
