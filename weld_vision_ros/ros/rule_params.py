"""The rule core's parameters, `measure.*`, `rules.*` and `spec.*`, for the nodes that run it.

Each is built from its field in the core (core.measure.MeasureConfig, core.rules.RuleConfig,
core.spec.WeldSpec: default, description, unit and range declared once there), and
`rule_config` turns their values into the frozen RuleConfig the core reads.
"""
from __future__ import annotations

from typing import Any, Mapping

from weld_vision_ros.core.fields import config_from_values
from weld_vision_ros.core.measure import MeasureConfig
from weld_vision_ros.core.rules import RuleConfig
from weld_vision_ros.core.spec import WeldSpec
from weld_vision_ros.ros.params import specs_for

PREFIXES = ('measure', 'rules', 'spec')
RULE_PARAMS = specs_for('measure', MeasureConfig) + specs_for('rules', RuleConfig) + specs_for('spec', WeldSpec)


def rule_config(values: Mapping[str, Any]) -> RuleConfig:
    """The RuleConfig of the measure.*/rules.*/spec.* values (others are ignored); raises
    ValueError (the core's own checks) for values that do not work together."""
    return config_from_values(RuleConfig, values, 'rules',
                              measure=config_from_values(MeasureConfig, values, 'measure'),
                              spec=config_from_values(WeldSpec, values, 'spec'))
