#!/usr/bin/env python3
"""End-to-end benchmark across processes: synthetic camera -> inference node(s) -> verdicts.

    python benchmarks/bench_e2e.py                          # rule node, 2 min at 30 fps 640x480
    python benchmarks/bench_e2e.py --model models/m.onnx    # + the ONNX node in hybrid mode
    python benchmarks/bench_e2e.py --duration 20            # a quick trial
    python benchmarks/bench_e2e.py --soak 3600              # an hour, a line every 30 s

Starts, each as its own process (as on the cell): the synthetic camera, the inference
node(s) (`--nodes`: the rule node; the ONNX node in hybrid mode when `--model` is given),
and a bare image relay (`benchmarks/image_relay.py`). This process subscribes to
everything and measures, in the same run:

- camera -> verdict latency per output topic (weld/bead, weld/defect/rule, weld/defect/ml,
  weld/defect): receive time here minus the frame's header stamp, both from this
  machine's system clock; p50 / p99 / max;
- the transport floor: camera -> relay -> here (one more hop of the same images, nothing
  else), and camera -> here directly; verdict latencies are given as a ratio of the relay's;
- drops: the camera's frames (its reliable ground-truth topic says which it sent) against
  what arrived on each topic, and, from the nodes' own /diagnostics, how many frames were
  lost before reaching their input (camera topics are best effort by default);
- CPU (% of one core) and RSS [MB] of every process, with its private (RssAnon) and
  shared-memory (RssShmem) parts, from /proc once a second;
- the camera rate actually achieved.

Arrival times are DDS receive times in this process (rmw's received_timestamp), so this
process's own queueing is left out (and reported apart). `--shm-segment-mb 16` runs every
process with a larger Fast DDS shared-memory segment: the default 512 KB holds less than one
640x480 frame, and best-effort frames are then lost on the way.

After a warm-up it measures for `--duration` seconds (default 120), printing a line with
rolling numbers every `--report-period` seconds; `--soak N` runs N seconds with a line
every 30 s that shows each process's private-memory growth, so a leak shows. At the end it prints a Markdown table
and writes it to `--out-md` (BENCHMARKS_e2e.md), and the raw numbers to `--json` if given.

Every run uses a random ROS_DOMAIN_ID in which no other node shows, and
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, so that other ROS 2 programs on the machine neither
see nor disturb it; nodes that join the domain during the run are named in the report.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from weld_vision_ros.perf.e2e_metrics import other_nodes  # noqa: E402
from weld_vision_ros.ros import codec  # noqa: E402
from weld_vision_ros.perf.e2e_metrics import (MARKDOWN_TITLE, NS_PER_MS, NS_PER_S, InputDrops, LatencySummary,  # noqa: E402
                                    PathResult, ProcessSampler, Report, StampedSeries,
                                    achieved_rate_hz, counter_values, cpu_model, header_stamp_ns, input_drops,
                                    later_of, path_result, with_ratio)

NODE_CHOICES = ('rule', 'onnx')
ONNX_MODES = ('rule', 'ml', 'hybrid')
RELIABILITY_CHOICES = ('best_effort', 'reliable')
DEPTH_ENCODINGS = ('32FC1', '16UC1')

CAMERA_MODULE = 'weld_vision_ros.simulator.synthetic_camera_node'
RELAY_MODULE = 'benchmarks.image_relay'
RULE_MODULE = 'weld_vision_ros.nodes.rule_defect_node'
ONNX_MODULE = 'weld_vision_ros.nodes.onnx_defect_node'

COLOR, DEPTH, TRUTH = codec.COLOR_TOPIC, codec.DEPTH_TOPIC, codec.GROUND_TRUTH_TOPIC
RELAY_COLOR = 'relay/color/image_raw'
RELAY_DEPTH = 'relay/aligned_depth_to_color/image_raw'
BEAD = 'weld/bead'
DEFECT_RULE = 'weld/defect/rule'
DEFECT_ML = 'weld/defect/ml'
DEFECT_FINAL = 'weld/defect'

# ROS node names of the spawned processes (as the graph and /diagnostics show them).
NODE_NAMES = {'relay': 'image_relay', 'rule': 'rule_defect_node', 'onnx': 'onnx_defect_node',
              'camera': 'synthetic_camera_node'}

DIRECT_PATH = 'camera → bench (direct)'
RELAY_PATH = 'camera → image_relay → bench'
PAIR_TOPIC = 'color + depth (later of the pair)'
SOAK_REPORT_PERIOD_S = 30.0
MIN_BASELINE_FRAMES = 30
FASTDDS_DEFAULT_SEGMENT_BYTES = 512 * 1024


# --- options -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bench_e2e.py', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--duration', type=float, default=120.0,
                   help='seconds measured after the warm-up (default 120)')
    p.add_argument('--soak', type=float, default=None, metavar='SECONDS',
                   help=f'soak run: measure this long, a line every {SOAK_REPORT_PERIOD_S:g} s '
                        'with memory growth per process (overrides --duration)')
    p.add_argument('--warmup', type=float, default=10.0,
                   help='seconds after every topic is flowing before measuring (default 10)')
    p.add_argument('--rate-hz', type=float, default=30.0, help='camera frame rate (default 30)')
    p.add_argument('--width', type=int, default=640, help='camera width [px] (default 640)')
    p.add_argument('--height', type=int, default=480, help='camera height [px] (default 480)')
    p.add_argument('--depth-encoding', choices=DEPTH_ENCODINGS, default='32FC1')
    p.add_argument('--image-reliability', choices=RELIABILITY_CHOICES, default='best_effort',
                   help='QoS of the camera topics, everywhere (default best_effort, as camera drivers)')
    p.add_argument('--seed', type=int, default=7, help='synthetic camera seed (default 7)')
    p.add_argument('--nodes', default=None,
                   help=f'comma-separated inference nodes among {", ".join(NODE_CHOICES)} '
                        '(default: rule, plus onnx when --model is given)')
    p.add_argument('--no-baseline', action='store_true',
                   help='leave out the relay and the direct image subscriptions (no transport '
                        'baseline): to see how much measuring them disturbs the nodes')
    p.add_argument('--model', type=Path, default=None, help='ONNX model (weld.* contract) for the ONNX node')
    p.add_argument('--onnx-mode', choices=ONNX_MODES, default='hybrid', help='mode of the ONNX node')
    p.add_argument('--model-note', default='',
                   help='a sentence about the model for the report (e.g. how it was trained)')
    p.add_argument('--report-period', type=float, default=None,
                   help=f'seconds between progress lines (default 10, {SOAK_REPORT_PERIOD_S:g} with --soak)')
    p.add_argument('--startup-timeout', type=float, default=120.0,
                   help='seconds allowed for every topic to start flowing (default 120)')
    p.add_argument('--grace', type=float, default=2.0,
                   help='seconds to keep listening after the window for verdicts in flight')
    p.add_argument('--shm-segment-mb', type=int, default=None, metavar='MB',
                   help='run every process with a Fast DDS profile whose shared-memory segment is '
                        'this large (Fast DDS default: 512 KB, smaller than one 640x480 image); '
                        'default: Fast DDS defaults, to show what they cost; the launch files, the '
                        'runner and the demo use config/fastdds_large_shm.xml (16 MB)')
    p.add_argument('--domain-id', type=int, default=None,
                   help='ROS_DOMAIN_ID (default: a random one in 1..101 where no other node is seen)')
    p.add_argument('--out-md', type=Path, default=REPO / 'BENCHMARKS_e2e.md',
                   help='Markdown report (default BENCHMARKS_e2e.md at the repository root)')
    p.add_argument('--append', action='store_true',
                   help='append this run to --out-md instead of replacing the file')
    p.add_argument('--json', type=Path, default=None, help='also write the raw numbers as JSON')
    p.add_argument('--log-dir', type=Path, default=REPO / 'log' / 'bench_e2e',
                   help='where the node processes log (default log/bench_e2e)')
    return p


@dataclass(frozen=True)
class Settings:
    duration_s: float
    soak: bool
    warmup_s: float
    rate_hz: float
    width: int
    height: int
    depth_encoding: str
    image_reliability: str
    seed: int
    nodes: tuple[str, ...]
    baseline: bool
    model: Optional[Path]
    onnx_mode: str
    model_note: str
    report_period_s: float
    startup_timeout_s: float
    grace_s: float
    shm_segment_mb: Optional[int]
    domain_id: int
    domain_fixed: bool
    out_md: Path
    append: bool
    json_path: Optional[Path]
    log_dir: Path


def parse_settings(argv: Optional[Sequence[str]] = None) -> Settings:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.nodes is None:
        nodes = ('rule', 'onnx') if a.model is not None else ('rule',)
    else:
        nodes = tuple(n.strip() for n in a.nodes.split(',') if n.strip())
        unknown = [n for n in nodes if n not in NODE_CHOICES]
        if unknown or not nodes:
            parser.error(f'--nodes {a.nodes!r}: expected a comma-separated list of {", ".join(NODE_CHOICES)}')
    if 'onnx' in nodes:
        if a.model is None:
            parser.error('--nodes onnx needs --model PATH (an ONNX model with the weld.* contract)')
        if not a.model.is_file():
            parser.error(f'--model {a.model}: no such file')
        if importlib.util.find_spec(ONNX_MODULE) is None:
            parser.error(f'--model given but {ONNX_MODULE} does not exist in this checkout')
    elif a.model is not None:
        parser.error(f'--model given but --nodes {a.nodes!r} has no onnx node')
    duration = a.soak if a.soak is not None else a.duration
    checks = {'--duration/--soak': duration, '--rate-hz': a.rate_hz, '--startup-timeout': a.startup_timeout}
    for name, value in checks.items():
        if not value > 0:
            parser.error(f'{name} must be positive, got {value}')
    if a.warmup < 0 or a.grace < 0:
        parser.error('--warmup and --grace must not be negative')
    if not (64 <= a.width <= 1920 and 48 <= a.height <= 1200):
        parser.error(f'--width/--height {a.width}x{a.height}: the camera takes 64..1920 x 48..1200')
    period = a.report_period if a.report_period is not None else (
        SOAK_REPORT_PERIOD_S if a.soak is not None else 10.0)
    if period <= 0:
        parser.error('--report-period must be positive')
    if a.domain_id is not None and not 0 <= a.domain_id <= 232:
        parser.error(f'--domain-id {a.domain_id}: ROS 2 domain ids are 0..232')
    if a.shm_segment_mb is not None and not 1 <= a.shm_segment_mb <= 1024:
        parser.error(f'--shm-segment-mb {a.shm_segment_mb}: expected 1..1024')
    domain = a.domain_id if a.domain_id is not None else random.SystemRandom().randint(1, 101)
    return Settings(duration, a.soak is not None, a.warmup, a.rate_hz, a.width, a.height,
                    a.depth_encoding, a.image_reliability, a.seed, nodes, not a.no_baseline,
                    a.model.resolve() if a.model else None, a.onnx_mode, a.model_note, period,
                    a.startup_timeout, a.grace, a.shm_segment_mb, domain, a.domain_id is not None,
                    a.out_md, a.append, a.json, a.log_dir)


# --- node processes ----------------------------------------------------------------------------

@dataclass
class NodeProcess:
    name: str              # short name in the report
    module: str
    proc: subprocess.Popen
    log_path: Path


def spawn(name: str, module: str, params: dict, log_dir: Path) -> NodeProcess:
    """`python -m module --ros-args -p k:=v ...` in its own session (so Ctrl-C here reaches
    it only through stop())."""
    cmd = [sys.executable, '-m', module, '--ros-args']
    for key, value in params.items():
        value = ('true' if value else 'false') if isinstance(value, bool) else value
        cmd += ['-p', f'{key}:={value}']
    log_path = log_dir / f'{name}.log'
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED='1'), start_new_session=True)
    return NodeProcess(name, module, proc, log_path)


def stop_all(nodes: Sequence[NodeProcess], timeout_s: float = 10.0) -> None:
    for n in nodes:
        if n.proc.poll() is None:
            n.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for n in nodes:
        try:
            n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait()


FASTDDS_PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
SHM_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by bench_e2e.py: shared memory with a {mb} MB segment (Fast DDS default 512 KB),
     UDPv4 beside it, for every participant of the run. -->
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>shm_large</transport_id>
        <type>SHM</type>
        <segment_size>{size}</segment_size>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>udp</transport_id>
        <type>UDPv4</type>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="bench_e2e_participant" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>shm_large</transport_id>
          <transport_id>udp</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def configure_transport(s: Settings) -> str:
    """Point every process of the run at the transport asked for; a description of it."""
    if s.shm_segment_mb is not None:
        path = s.log_dir / f'fastdds_shm_{s.shm_segment_mb}mb.xml'
        path.write_text(SHM_PROFILE.format(mb=s.shm_segment_mb, size=s.shm_segment_mb * 1024 * 1024))
        os.environ[FASTDDS_PROFILE_ENV] = str(path)
        return f'Fast DDS shared memory with a {s.shm_segment_mb} MB segment + UDPv4 (profile {path.name})'
    parts = ['Fast DDS built-in transports (shared memory, 512 KB segment, + UDPv4)']
    for var in (FASTDDS_PROFILE_ENV, 'FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_BUILTIN_TRANSPORTS'):
        if os.environ.get(var):
            parts.append(f'{var}={os.environ[var]} (set outside the benchmark)')
    return '; '.join(parts) if len(parts) == 1 else '; '.join(parts[1:])


def start_nodes(s: Settings) -> list[NodeProcess]:
    """Spawn the processes of the run; if one cannot be started, stop those that were."""
    images = {'image_reliability': s.image_reliability}
    # Consumers first, so they are listening when the first frames go out.
    plan = [('relay', RELAY_MODULE, images)] if s.baseline else []
    if 'rule' in s.nodes:
        plan.append(('rule', RULE_MODULE, images))
    if 'onnx' in s.nodes:
        plan.append(('onnx', ONNX_MODULE, {**images, 'mode': s.onnx_mode, 'model_path': str(s.model),
                                           'models_dir': str(s.model.parent)}))
    plan.append(('camera', CAMERA_MODULE, {**images, 'rate_hz': float(s.rate_hz), 'width': s.width,
                                           'height': s.height, 'seed': s.seed,
                                           'depth_encoding': s.depth_encoding}))
    nodes: list[NodeProcess] = []
    try:
        for name, module, params in plan:
            nodes.append(spawn(name, module, params, s.log_dir))
    except BaseException:
        stop_all(nodes)
        raise
    return nodes


# --- a domain of our own ----------------------------------------------------------------------

PROBE_NODE = 'bench_e2e_probe'
DOMAIN_ATTEMPTS = 5
DOMAIN_LISTEN_S = 2.0


class DomainBusy(RuntimeError):
    pass


def open_quiet_domain(s: Settings):
    """rclpy initialised on a domain where, after listening a moment, no other node shows:
    (domain, probe node, executor). Another random domain is tried when one is busy."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    domain = s.domain_id
    for attempt in range(DOMAIN_ATTEMPTS):
        os.environ['ROS_DOMAIN_ID'] = str(domain)   # the node processes inherit it
        rclpy.init()
        node = rclpy.create_node(PROBE_NODE)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = time.monotonic() + DOMAIN_LISTEN_S
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        strangers = other_nodes(node, Counter([PROBE_NODE]))
        if not strangers:
            return domain, node, executor
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        _log(f'[bench_e2e] domain {domain} is in use ({", ".join(strangers[:5])}); trying another')
        if s.domain_fixed:
            break
        domain = random.SystemRandom().choice([d for d in range(1, 102) if d != domain])
    raise DomainBusy(f'no quiet ROS 2 domain found (last tried {domain}); other ROS 2 programs would '
                     'mix into the measurement')


# --- the measuring subscriber ------------------------------------------------------------------

@dataclass(frozen=True)
class Measured:
    """One topic the probe times: its key in the probe, the path and topic for the report."""

    key: str
    path: str
    topic: str


class Probe:
    """Subscriptions of the benchmark process. Every arrival is timed with the moment DDS
    received it (rmw's received_timestamp, system clock), and the delay until its callback
    ran is kept apart, so the measuring process's own queueing does not count."""

    def __init__(self, node, s: Settings) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from weld_vision_ros.msg import BeadMeasurement, WeldDefect, WeldGroundTruth
        from weld_vision_ros.ros.qos import camera_qos

        self.series: dict[str, StampedSeries] = {}
        self.diagnostics: dict[str, list[tuple[int, dict[str, str]]]] = {n: [] for n in s.nodes}
        self.subscriber_delay_ns = array('q')
        self.malformed = 0
        self.measured: list[Measured] = []
        images = camera_qos(s.image_reliability)
        # Results and ground truth are reliable at the publisher; deep enough that this
        # process never overflows while it is busy with images.
        results = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        rule_path = 'camera → rule_defect_node → bench'
        onnx_path = f'camera → onnx_defect_node ({s.onnx_mode}) → bench'

        def bead_valid(data: bytes) -> bool:
            from rclpy.serialization import deserialize_message
            return bool(deserialize_message(data, BeadMeasurement).valid)

        self._subscribe(node, 'truth', TRUTH, WeldGroundTruth, results)
        if s.baseline:
            self._subscribe(node, 'direct/color', COLOR, Image, images, DIRECT_PATH)
            self._subscribe(node, 'direct/depth', DEPTH, Image, images, DIRECT_PATH)
            self._subscribe(node, 'relay/color', RELAY_COLOR, Image, images, RELAY_PATH)
            self._subscribe(node, 'relay/depth', RELAY_DEPTH, Image, images, RELAY_PATH)
        if 'rule' in s.nodes:
            self._subscribe(node, 'rule/bead', BEAD, BeadMeasurement, results, rule_path, bead_valid)
            self._subscribe(node, 'rule/defect', DEFECT_RULE, WeldDefect, results, rule_path)
        if 'onnx' in s.nodes:
            self._subscribe(node, 'onnx/ml', DEFECT_ML, WeldDefect, results, onnx_path)
            self._subscribe(node, 'onnx/final', DEFECT_FINAL, WeldDefect, results, onnx_path)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, results)

    def _subscribe(self, node, key: str, topic: str, msg_type, qos, path: str = '',
                   flag: Optional[Callable[[bytes], bool]] = None) -> None:
        series = self.series[key] = StampedSeries()
        if path:
            self.measured.append(Measured(key, path, topic))
        delays = self.subscriber_delay_ns

        def on_message(data: bytes, info) -> None:
            callback_ns = time.time_ns()
            try:
                stamp_ns = header_stamp_ns(data)
            except ValueError:
                self.malformed += 1
                return
            # The arrival is when DDS handed the sample to this process (same system clock),
            # so this process's own executor queue is not counted against the nodes.
            received_ns = info.get('received_timestamp') or callback_ns
            series.add(stamp_ns, received_ns, info.get('source_timestamp', 0),
                       flag(data) if flag else True)
            delays.append(callback_ns - received_ns)
        node.create_subscription(msg_type, topic, on_message, qos, raw=True)

    def _on_diagnostics(self, msg) -> None:
        stamp_ns = msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec
        for status in msg.status:
            for name in self.diagnostics:
                if f'{NODE_NAMES[name]}:' in status.name:
                    values = counter_values({kv.key: kv.value for kv in status.values})
                    self.diagnostics[name].append((stamp_ns, values))

    def silent(self, keys: Sequence[str]) -> list[str]:
        """The keys among `keys` that have not delivered anything yet."""
        return [k for k in keys if len(self.series[k]) == 0]


def required_keys(s: Settings) -> list[str]:
    """Topics that must be flowing before the warm-up starts (weld/defect/rule and
    weld/defect/ml may legitimately stay silent for a while: no bead, confident rules)."""
    keys = ['truth']
    if s.baseline:
        keys += ['direct/color', 'direct/depth', 'relay/color', 'relay/depth']
    if 'rule' in s.nodes:
        keys.append('rule/bead')
    if 'onnx' in s.nodes:
        keys.append('onnx/final')
    return keys


# --- rolling numbers ---------------------------------------------------------------------------

class Rolling:
    """Numbers over the stretch since the previous progress line."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._cursor = {k: len(v) for k, v in probe.series.items()}

    def line(self, elapsed_s: float, total_s: float, period_s: float, sampler: ProcessSampler,
             soak: bool) -> str:
        series = self._probe.series
        chunks = {k: series[k].received_since(self._cursor[k]) for k in series}
        self._cursor = {k: len(v) for k, v in series.items()}
        truth_stamps = chunks['truth'][0]
        sent = len(truth_stamps)
        span_s = (max(truth_stamps) - min(truth_stamps)) / NS_PER_S if sent > 1 else 0.0
        parts = [f'camera {((sent - 1) / span_s) if span_s > 0 else 0.0:.1f} Hz']

        def lat(stamps, received) -> str:
            s = LatencySummary.of((r - t) / NS_PER_MS for t, r in zip(stamps, received))
            return f'p50 {s.p50_ms:.1f} p99 {s.p99_ms:.1f} ms'
        if 'relay/color' in chunks:
            pair = later_of(*({t: (r, 0, True) for t, r in zip(*chunks[f'relay/{k}'])}
                              for k in ('color', 'depth')))
            parts.append(f'relay pair {lat(list(pair), [v[0] for v in pair.values()])} {len(pair)} recv')
        for m in self._probe.measured:
            if m.path in (DIRECT_PATH, RELAY_PATH):
                continue
            stamps, received = chunks[m.key]
            parts.append(f'{m.topic} {lat(stamps, received)} {len(stamps)} recv/{sent} sent')
        procs = []
        for name in sampler.names:
            latest, first = sampler.latest(name), sampler.first(name)
            if latest is None:
                continue
            text = f'{name} {sampler.recent_cpu_pct(name, period_s):.0f}% {latest.rss_mb:.0f}MB'
            if soak:
                slope = sampler.summary(name).private_slope_mb_per_h
                trend = 'trend n/a' if math.isnan(slope) else f'{slope:+.1f} MB/h'
                text += f' (private {latest.anon_mb - first.anon_mb:+.1f} MB, {trend})'
            procs.append(text)
        tag = 'soak' if soak else 'bench_e2e'
        return (f'[{tag} {elapsed_s:5.0f}/{total_s:.0f} s] ' + ' | '.join(parts)
                + ' | CPU/RSS ' + ', '.join(procs))


# --- the run -----------------------------------------------------------------------------------

class NodeDied(RuntimeError):
    pass


def _check_alive(nodes: Sequence[NodeProcess]) -> None:
    for n in nodes:
        if n.proc.poll() is not None:
            tail = n.log_path.read_text(errors='replace')[-2000:] if n.log_path.exists() else ''
            raise NodeDied(f'{n.name} ({n.module}) exited with code {n.proc.returncode}; '
                           f'log {n.log_path}:\n{tail}')


def _log(text: str) -> None:
    print(text, flush=True)


def run(s: Settings) -> Report:
    """Start the processes, measure, stop them; the report of the run."""
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_LOG_DIR', str(REPO / 'log' / 'ros'))
    import rclpy

    s.log_dir.mkdir(parents=True, exist_ok=True)
    transport = configure_transport(s)
    load_start = os.getloadavg()
    started = datetime.now(timezone.utc)
    # rclpy turns Ctrl-C and SIGTERM into a context shutdown (ExternalShutdownException from
    # spin_once); either way the finally below stops the node processes.
    domain, node, executor = open_quiet_domain(s)
    nodes: list[NodeProcess] = []
    try:
        probe = Probe(node, s)
        nodes = start_nodes(s)
        _log(f'[bench_e2e] domain {domain}; nodes {", ".join(n.name for n in nodes)} started '
             f'(logs in {s.log_dir}); camera {s.width}x{s.height} at {s.rate_hz:g} Hz, {s.depth_encoding}, '
             f'{s.image_reliability}')
        pids = {n.name: n.proc.pid for n in nodes}
        pids['bench'] = os.getpid()
        sampler = ProcessSampler(pids)

        # 1. every topic flowing
        t_start = time.monotonic()
        missing = required_keys(s)
        while missing:
            executor.spin_once(timeout_sec=0.1)
            _check_alive(nodes)
            missing = probe.silent(missing)
            if time.monotonic() - t_start > s.startup_timeout_s:
                raise TimeoutError(f'after {s.startup_timeout_s:g} s nothing arrived on '
                                   f'{", ".join(missing)}; node logs in {s.log_dir}')
        _log(f'[bench_e2e] all topics flowing after {time.monotonic() - t_start:.1f} s; '
             f'warming up {s.warmup_s:g} s')

        # 2. warm-up (CPU sampling starts, so the first measured sample has a reference)
        _spin(executor, nodes, s.warmup_s, sampler)

        # 3. the measured window
        sampler.clear()
        rolling = Rolling(probe)
        t0_ns = time.time_ns()
        start = time.monotonic()
        next_line = start + s.report_period_s

        def progress(now: float) -> None:
            nonlocal next_line
            if now >= next_line:
                next_line += s.report_period_s
                _log(rolling.line(now - start, s.duration_s, s.report_period_s, sampler, s.soak))
        _spin(executor, nodes, s.duration_s, sampler, progress)
        t1_ns = time.time_ns()
        measured_s = (t1_ns - t0_ns) / NS_PER_S
        strangers = other_nodes(node, Counter([PROBE_NODE] + [NODE_NAMES[n.name] for n in nodes]))

        # 4. verdicts still in flight for frames stamped inside the window
        _spin(executor, nodes, s.grace_s, None)
    finally:
        stop_all(nodes)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return build_report(s, probe, sampler, t0_ns, t1_ns, measured_s, started, load_start, transport,
                        domain, strangers)


def _spin(executor, nodes: Sequence[NodeProcess], seconds: float, sampler: Optional[ProcessSampler],
          on_tick: Optional[Callable[[float], None]] = None) -> None:
    end = time.monotonic() + seconds
    next_sample = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            return
        if sampler is not None and now >= next_sample:
            sampler.sample()
            # Once a second; after a stall, start over rather than catch up with short intervals.
            next_sample = max(next_sample + 1.0, now + 0.5)
            _check_alive(nodes)
        if on_tick is not None:
            on_tick(now)
        executor.spin_once(timeout_sec=min(0.05, max(0.0, end - now)))


def build_report(s: Settings, probe: Probe, sampler: ProcessSampler, t0_ns: int, t1_ns: int,
                 measured_s: float, started: datetime, load_start, transport: str, domain: int,
                 strangers: Sequence[str]) -> Report:
    series = probe.series
    arrivals = {k: v.first_arrivals(t0_ns, t1_ns) for k, v in series.items()}
    # Frames sent: the camera's ground truth (reliable), and any stamp seen anywhere.
    sent = set(arrivals['truth'])
    for a in arrivals.values():
        sent.update(a)
    sent_stamps = sorted(sent)
    camera_publish_ns = {stamp: pub for stamp, (_, pub, _) in arrivals.get('direct/color', {}).items()}
    paths: list[PathResult] = []
    for m in probe.measured:
        result = path_result(m.path, m.topic, arrivals[m.key], sent_stamps, camera_publish_ns)
        paths.append(replace(result, duplicates=series[m.key].duplicates(t0_ns, t1_ns)))
        if m.key in ('direct/depth', 'relay/depth'):
            base = m.key.split('/')[0]
            pair = later_of(arrivals[f'{base}/color'], arrivals[f'{base}/depth'])
            paths.append(path_result(m.path, PAIR_TOPIC, pair, sent_stamps, camera_publish_ns))
    baseline = next((p for p in paths if p.path == RELAY_PATH and p.topic == PAIR_TOPIC), None)
    paths = [with_ratio(p, baseline) for p in paths]
    truth = path_result(DIRECT_PATH, f'{TRUTH} (reliable, small)', arrivals['truth'], sent_stamps,
                        camera_publish_ns)
    paths.insert(0, truth)

    render_ms = LatencySummary.of((pub - stamp) / NS_PER_MS for stamp, pub in camera_publish_ns.items() if pub)
    inputs: list[InputDrops] = []
    for name, diags in probe.diagnostics.items():
        d = input_drops(NODE_NAMES[name], diags, t0_ns, t1_ns, sent_stamps)
        if d is not None:
            inputs.append(d)
    rate = achieved_rate_hz(sent_stamps)
    load_end = os.getloadavg()
    notes = [
        f'Shared machine: {os.cpu_count()} cores shared with other work (load average '
        f'{load_start[0]:.1f} at start, {load_end[0]:.1f} at end); every process here, the '
        'benchmark included, competes for them, so the numbers are noisy and a rerun differs.',
        'The relay and the direct subscription add two image streams out of the camera and two '
        'into this process; they load the same cores as the nodes under test.',
    ]
    if not math.isnan(rate) and rate < 0.9 * s.rate_hz:
        notes.append(f'The camera reached {rate:.1f} Hz of the {s.rate_hz:g} Hz requested: rendering a '
                     f'{s.width}x{s.height} frame takes p50 {render_ms.p50_ms:.0f} ms here, beside the '
                     'other processes.')
    if 'onnx' in s.nodes:
        notes.append(f'ONNX node in {s.onnx_mode} mode with {s.model.name}: {describe_model(s.model)}'
                     + (f' {s.model_note}' if s.model_note else ''))
    if probe.malformed:
        notes.append(f'{probe.malformed} messages without a readable header stamp were ignored.')
    depth_bytes = s.width * s.height * (4 if s.depth_encoding == '32FC1' else 2)
    lossy = [i for i in inputs if i.sent and i.lost_before_input > 0.1 * i.sent]
    if lossy and s.shm_segment_mb is None and depth_bytes > FASTDDS_DEFAULT_SEGMENT_BYTES:
        notes.append(f'A {s.width}x{s.height} {s.depth_encoding} depth image is {depth_bytes / 1024:.0f} KB, '
                     f'more than the {FASTDDS_DEFAULT_SEGMENT_BYTES / 1024:.0f} KB shared-memory segment '
                     'Fast DDS gives a process by default; with best-effort images, frames were lost before the '
                     'nodes\' inputs. --shm-segment-mb runs every process with a larger segment.')
    notes.append('The benchmark process keeps every arrival until the end (about 30 bytes each), '
                 'so its own private memory grows with the run; the node processes keep nothing.')
    if strangers:
        notes.insert(0, f'**Other ROS 2 nodes were in domain {domain} at the end of the run** '
                        f'({", ".join(strangers)}): their messages may be mixed into these numbers; '
                        'rerun.')
    if baseline is not None and baseline.received < MIN_BASELINE_FRAMES:
        notes.append(f'The relay baseline rests on {baseline.received} complete frames only (the '
                     'camera topics are best effort and lost most frames): its ratios mean little.')
    settings = {'rate_hz': s.rate_hz, 'width': s.width, 'height': s.height,
                'depth_encoding': s.depth_encoding, 'image_reliability': s.image_reliability,
                'seed': s.seed, 'nodes': describe_nodes(s),
                'onnx_mode': s.onnx_mode if 'onnx' in s.nodes else None,
                'model': str(s.model) if s.model else None, 'duration_s': s.duration_s,
                'soak': s.soak, 'warmup_s': s.warmup_s, 'domain_id': domain,
                'rmw': os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp (default)'),
                'transport': transport,
                'niceness': os.nice(0)}
    machine = {'nproc': os.cpu_count(), 'cpu_model': cpu_model(), 'system': platform.platform(),
               'python': platform.python_version(),
               'load_start': ' '.join(f'{x:.2f}' for x in load_start),
               'load_end': ' '.join(f'{x:.2f}' for x in load_end)}
    processes = [sampler.summary(name) for name in sampler.names]
    return Report(date=started.strftime('%Y-%m-%d %H:%M UTC'), machine=machine, settings=settings,
                  measured_s=measured_s, camera_sent=len(sent_stamps), camera_rate_hz=rate,
                  camera_render_ms=render_ms, paths=paths,
                  baseline_path=f'{RELAY_PATH}, {PAIR_TOPIC}' if baseline else '', inputs=inputs,
                  processes=processes,
                  subscriber_delay_ms=LatencySummary.of(d / NS_PER_MS for d in probe.subscriber_delay_ns),
                  notes=notes, strangers=list(strangers))


def describe_nodes(s: Settings) -> str:
    names = [f'onnx ({s.onnx_mode})' if n == 'onnx' else n for n in s.nodes]
    return ', '.join(names + (['image_relay'] if s.baseline else []))


def describe_model(path: Path) -> str:
    """The model's version and recorded metrics from its weld.* metadata (or why not)."""
    try:
        import onnx

        from weld_vision_ros.core.model_contract import ModelContract
        model = onnx.load(str(path), load_external_data=False)
        contract = ModelContract.from_metadata({p.key: p.value for p in model.metadata_props})
    except Exception as exc:  # noqa: BLE001 - a description only; the node validates for real
        return f'(metadata not readable here: {exc})'
    metrics = json.dumps(contract.metrics, sort_keys=True) if contract.metrics else 'none recorded'
    return (f'version {contract.model_version!r}, input {contract.preprocess.to_json()}, '
            f'metrics: {metrics}.')


def main(argv: Optional[Sequence[str]] = None) -> int:
    s = parse_settings(argv)
    from rclpy.executors import ExternalShutdownException
    try:
        report = run(s)
    except (NodeDied, TimeoutError, DomainBusy) as exc:
        _log(f'[bench_e2e] failed: {exc}')
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C or SIGTERM
        _log('[bench_e2e] interrupted')
        return 130
    text = report.to_markdown()
    _log('\n' + text)
    s.out_md.parent.mkdir(parents=True, exist_ok=True)
    if s.append and s.out_md.exists():
        with open(s.out_md, 'a') as f:
            f.write('\n' + text)
    else:
        s.out_md.write_text(MARKDOWN_TITLE + text)
    _log(f'[bench_e2e] wrote {s.out_md}')
    if s.json_path is not None:
        s.json_path.parent.mkdir(parents=True, exist_ok=True)
        s.json_path.write_text(json.dumps(report.to_dict(), indent=2, default=str, allow_nan=True))
        _log(f'[bench_e2e] wrote {s.json_path}')
    if report.strangers:
        _log('[bench_e2e] other ROS 2 nodes shared the domain: the numbers may be mixed; rerun')
        return 1
    verdict_paths = [p for p in report.paths if p.path not in (DIRECT_PATH, RELAY_PATH)]
    if not any(p.received for p in verdict_paths):
        _log('[bench_e2e] no verdict arrived in the window: the pipeline is not working')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
