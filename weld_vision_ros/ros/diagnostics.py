"""diagnostic_msgs helpers: one DiagnosticStatus per node, values as key/value strings."""
from __future__ import annotations

from typing import Any, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


def make_status(name: str, message: str, values: Mapping[str, Any], level=OK,
                hardware_id: str = 'weld_cell_camera') -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()])


def make_array(stamp, *statuses: DiagnosticStatus) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = list(statuses)
    return msg


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    """Key/value pairs of a status as a dict (for subscribers and tests)."""
    return {kv.key: kv.value for kv in status.values}
