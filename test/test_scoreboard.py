"""Scoreboard of verdicts against ground truth (no ROS)."""
import pytest

from weld_vision_ros.examples.scoreboard import Scoreboard, TruthRecord


def test_scoreboard_matches_by_stamp_and_scores():
    b = Scoreboard(class_names=('good', 'crack'))
    b.add_truth(1, TruthRecord('good', 8.0, 2.0))
    b.add_truth(2, TruthRecord('crack', 9.0, 2.5))
    b.add_truth(3, TruthRecord('crack', 9.0, 2.5))
    b.add_verdict(1, 'good', 'rule', 10.0)
    b.add_verdict(2, 'crack', 'rule', 12.0)
    b.add_verdict(3, 'good', 'rule', 14.0)
    b.add_verdict(99, 'good', 'rule')
    b.add_bead(1, True, '', 8.1, 1.9)
    b.add_bead(2, False, 'no bead in view', 0, 0)
    assert b.scored == 3 and b.unmatched_verdicts == 1
    assert b.accuracy() == pytest.approx(2 / 3)
    n, recall, precision = b.per_class()['crack']
    assert (n, recall, precision) == (2, 0.5, 1.0)
    assert b.width_err_mm == [pytest.approx(0.1)]
    text = b.table(elapsed_s=2.0)
    assert 'accuracy 0.667 on 3 frames' in text and "no bead in view" in text
