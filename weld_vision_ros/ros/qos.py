"""QoS profiles used by the nodes, chosen on purpose."""
from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

RELIABILITY_CHOICES = ('best_effort', 'reliable')


def camera_qos(reliability: str = 'best_effort', depth: int = 5) -> QoSProfile:
    """Camera streams: keep only the newest frames; a late frame is worth less than a new one.

    Best effort matches camera drivers (RealSense, Orbbec) by default; 'reliable' is for
    bag playback or drivers configured reliable (a best-effort subscriber still hears a
    reliable publisher, not the other way round).
    """
    if reliability not in RELIABILITY_CHOICES:
        raise ValueError(f'reliability must be one of {RELIABILITY_CHOICES}, got {reliability!r}')
    profile = QoSProfile(**{k: getattr(qos_profile_sensor_data, k) for k in ('history', 'durability')},
                         depth=depth)
    profile.reliability = (ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
                           else ReliabilityPolicy.RELIABLE)
    return profile


def results_qos(depth: int = 10) -> QoSProfile:
    """Verdicts and measurements: reliable, so a controller never misses a defect verdict."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Status that late joiners must still see (e.g. the active model): transient local."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
