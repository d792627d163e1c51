"""Shared test set-up: each test session talks DDS on its own domain, on loopback only."""
import os
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Several test runs (and the demo) may share this machine: a random domain keeps their
# nodes from seeing each other; child processes inherit it.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 200)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_LOG_DIR', str(REPO / 'log' / 'ros'))
# Trainings started by tests register in a registry of their own, never the user's runs/.
os.environ.setdefault('WELD_REGISTRY', str(Path(tempfile.gettempdir()) / f'weld_test_registry_{os.getpid()}.sqlite'))
