"""The example controller policy (no ROS)."""
import pytest

from weld_vision_ros.examples.controller_policy import CONTINUE, RESCAN, REWORK, STOP, PolicyConfig, decide


@pytest.mark.parametrize('cls,conf,valid,tol,score,action', [
    ('crack', 0.9, True, True, 90.0, STOP),
    ('porosity', 0.7, None, None, None, STOP),
    ('porosity', 0.3, None, None, None, REWORK),   # unsure: look again instead of stopping
    ('undercut', 0.95, True, False, 40.0, REWORK),
    ('good', 0.99, True, True, 80.0, CONTINUE),
    ('good', 0.99, True, False, 80.0, REWORK),
    ('good', 0.99, True, True, 20.0, REWORK),
    ('good', 0.99, False, None, None, REWORK),
    ('good', 0.99, None, None, None, CONTINUE),
])
def test_decisions(cls, conf, valid, tol, score, action):
    assert decide(cls, conf, valid, tol, score).action == action


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match='min_confidence'):
        PolicyConfig(min_confidence=1.5)


def test_a_frame_nobody_inspected_asks_for_a_rescan_never_continue():
    d = decide('', 0.0, False, None, None, status='not_inspected', status_reason='no_bead')
    assert d.action == RESCAN and 'no_bead' in d.reason
    # even a 'good' class with high confidence is not passed when the status says not inspected
    assert decide('good', 0.99, True, True, 90.0, status='not_inspected').action == RESCAN
