"""The measuring side of the end-to-end benchmark, without ROS: stamps, latencies, drops,
CPU and memory of processes, and the Markdown report.

Everything here works on plain numbers (nanosecond times from one machine's system clock,
header stamps, /proc counters), so `bench_e2e.py` only has to feed it what its ROS
subscriptions see, and the pieces can be tested without rclpy.
"""
from __future__ import annotations

import math
import os
import struct
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

# CDR encapsulation identifiers of plain (not parameter-list) payloads: CDR and XCDR2,
# big and little endian. ROS 2 messages are final types, so the first member follows the
# 4-byte encapsulation header directly.
_PLAIN_ENCAPSULATIONS = {0x0000: '>', 0x0001: '<', 0x0006: '>', 0x0007: '<'}


def header_stamp_ns(cdr: bytes) -> int:
    """Header stamp [ns] of a serialized message whose first field is std_msgs/Header.

    Reads builtin_interfaces/Time (int32 sec, uint32 nanosec) straight from the CDR bytes, so
    a 1 MB image need not be deserialized to learn when it was taken.
    """
    if len(cdr) < 12:
        raise ValueError(f'serialized message too short for a header stamp: {len(cdr)} bytes, '
                         'expected at least 12 (encapsulation + sec + nanosec)')
    kind = int.from_bytes(cdr[:2], 'big')
    if kind not in _PLAIN_ENCAPSULATIONS:
        raise ValueError(f'unsupported CDR encapsulation 0x{kind:04x}; expected one of '
                         + ', '.join(f'0x{k:04x}' for k in sorted(_PLAIN_ENCAPSULATIONS)))
    sec, nanosec = struct.unpack_from(_PLAIN_ENCAPSULATIONS[kind] + 'iI', cdr, 4)
    if nanosec >= NS_PER_S:
        raise ValueError(f'header stamp nanosec {nanosec} is not below 1e9: not a Header first')
    return sec * NS_PER_S + nanosec


# --- latencies --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of a set of latencies [ms]; NaN where there were none."""

    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, latencies_ms: Iterable[float]) -> 'LatencySummary':
        values = np.asarray(list(latencies_ms), dtype=float)
        if values.size == 0:
            return cls(0, math.nan, math.nan, math.nan)
        p50, p99 = np.percentile(values, [50, 99])
        return cls(int(values.size), float(p50), float(p99), float(values.max()))


class StampedSeries:
    """Arrivals of one topic at the measuring subscriber, one entry per message.

    stamp: header stamp [ns]; received: when it arrived in the measuring process [ns];
    published: the DDS source timestamp (when the publisher wrote it) [ns], 0 if unknown;
    flag: a per-message boolean the caller cares about (e.g. BeadMeasurement.valid).
    """

    def __init__(self) -> None:
        # Compact arrays: a soak hour at 30 fps is about 100k entries per topic.
        self.stamp_ns = array('q')
        self.received_ns = array('q')
        self.published_ns = array('q')
        self.flag = array('b')

    def add(self, stamp_ns: int, received_ns: int, published_ns: int = 0, flag: bool = True) -> None:
        self.stamp_ns.append(int(stamp_ns))
        self.received_ns.append(int(received_ns))
        self.published_ns.append(int(published_ns))
        self.flag.append(bool(flag))

    def __len__(self) -> int:
        return len(self.stamp_ns)

    def first_arrivals(self, t0_ns: int, t1_ns: int) -> dict[int, tuple[int, int, bool]]:
        """stamp -> (received, published, flag) of the first arrival of each stamp in [t0, t1]."""
        out: dict[int, tuple[int, int, bool]] = {}
        for s, r, p, f in zip(self.stamp_ns, self.received_ns, self.published_ns, self.flag):
            if t0_ns <= s <= t1_ns and s not in out:
                out[s] = (r, p, f)
        return out

    def duplicates(self, t0_ns: int, t1_ns: int) -> int:
        """Arrivals in [t0, t1] of a stamp that had arrived before (the same frame delivered twice)."""
        inside = [s for s in self.stamp_ns if t0_ns <= s <= t1_ns]
        return len(inside) - len(set(inside))

    def received_since(self, index: int) -> tuple[Sequence[int], Sequence[int]]:
        """(stamps, received times) of the entries from `index` on (for rolling numbers)."""
        return self.stamp_ns[index:], self.received_ns[index:]


def later_of(a: Mapping[int, tuple[int, int, bool]],
             b: Mapping[int, tuple[int, int, bool]]) -> dict[int, tuple[int, int, bool]]:
    """Per stamp present in both, the later arrival: when a consumer holds the whole pair."""
    return {s: max(a[s], b[s]) for s in a.keys() & b.keys()}


@dataclass(frozen=True)
class PathResult:
    """One measured path: how many of the camera's frames arrived and how late."""

    path: str
    topic: str
    sent: int
    received: int
    from_stamp: LatencySummary
    from_publish: LatencySummary
    flagged: int = 0            # arrivals whose flag was set (e.g. valid beads)
    ratio_p50: float = math.nan  # from_stamp p50 / baseline p50
    ratio_p99: float = math.nan
    duplicates: int = 0         # frames that arrived more than once (counted once above)

    @property
    def received_fraction(self) -> float:
        return self.received / self.sent if self.sent else math.nan


def path_result(path: str, topic: str, arrivals: Mapping[int, tuple[int, int, bool]],
                sent_stamps: Sequence[int], camera_publish_ns: Mapping[int, int]) -> PathResult:
    """Latencies of one path over the frames the camera sent in the window.

    from_stamp: arrival minus header stamp (the synthetic camera stamps a frame before
    rendering it, so this includes rendering); from_publish: arrival minus the moment the
    camera wrote that frame's color image (the DDS source timestamp), where known.
    """
    sent = set(sent_stamps)
    got = {s: v for s, v in arrivals.items() if s in sent}
    from_stamp = [(r - s) / NS_PER_MS for s, (r, _, _) in got.items()]
    from_publish = [(r - camera_publish_ns[s]) / NS_PER_MS for s, (r, _, _) in got.items()
                    if camera_publish_ns.get(s, 0) > 0]
    return PathResult(path, topic, len(sent), len(got), LatencySummary.of(from_stamp),
                      LatencySummary.of(from_publish), flagged=sum(1 for v in got.values() if v[2]))


def with_ratio(result: PathResult, baseline: Optional[PathResult]) -> PathResult:
    """The result with its p50/p99 (from stamp) divided by the baseline's."""
    if baseline is None:
        return result
    b = baseline.from_stamp

    def ratio(x: float, y: float) -> float:
        return x / y if y and not math.isnan(y) and not math.isnan(x) else math.nan
    return replace(result, ratio_p50=ratio(result.from_stamp.p50_ms, b.p50_ms),
                   ratio_p99=ratio(result.from_stamp.p99_ms, b.p99_ms))


def achieved_rate_hz(stamps_ns: Sequence[int]) -> float:
    """Frames per second over the span of the stamps; NaN with fewer than two."""
    s = sorted(set(stamps_ns))
    if len(s) < 2 or s[-1] == s[0]:
        return math.nan
    return (len(s) - 1) * NS_PER_S / (s[-1] - s[0])


# --- drops at a node's input, from its /diagnostics ----------------------------------------

@dataclass(frozen=True)
class InputDrops:
    """What a node's own counters say about frames between two of its diagnostics.

    sent: frames the camera stamped in that interval; frames_in: color images the node took
    in; lost_before_input: sent - frames_in (best-effort loss in transport or in the node's
    reader queue while it was busy); processed: frames it ran inference on; node_drops:
    frames it took in but refused or could not pair (its own drop counters).
    """

    node: str
    interval_s: float
    sent: int
    frames_in: int
    processed: int
    node_drops: int

    @property
    def lost_before_input(self) -> int:
        # Frames stamped just before the first report but taken in after it count on one side
        # only: a frame or two either way, never a negative loss.
        return max(0, self.sent - self.frames_in)


# Counter names of the inference nodes' diagnostics (first one present is used).
FRAMES_IN_KEYS = ('frames_in',)
PROCESSED_KEYS = ('frames_inspected', 'frames')
DROPS_TOTAL_KEYS = ('drops_total',)
# 'drop.<reason>' is every node's key; 'dropped_<reason>' is read too, for runs of older
# commits whose ONNX node spelled it so (a benchmark compares against them).
DROP_PREFIXES = ('drop.', 'dropped_')


def counter_values(values: Mapping[str, str]) -> dict[str, str]:
    """The diagnostics values input_drops() reads (a long run need not keep the rest)."""
    keys = FRAMES_IN_KEYS + PROCESSED_KEYS + DROPS_TOTAL_KEYS
    return {k: v for k, v in values.items() if k in keys or k.startswith(DROP_PREFIXES)}


def _number(values: Mapping[str, str], keys: Sequence[str]) -> Optional[float]:
    for k in keys:
        if k in values:
            try:
                return float(values[k])
            except ValueError:
                return None
    return None


def _drops(values: Mapping[str, str]) -> float:
    total = _number(values, DROPS_TOTAL_KEYS)
    if total is not None:
        return total
    return sum(float(v) for k, v in values.items()
               if k.startswith(DROP_PREFIXES) and v.replace('.', '', 1).isdigit())


def input_drops(node: str, diagnostics: Sequence[tuple[int, Mapping[str, str]]], t0_ns: int, t1_ns: int,
                sent_stamps: Sequence[int]) -> Optional[InputDrops]:
    """Differences of a node's counters between its first and last diagnostics inside [t0, t1].

    diagnostics: (header stamp [ns], key/value strings) in arrival order. None when fewer
    than two reports in the window carry a frames_in counter.
    """
    inside = [(s, v) for s, v in diagnostics
              if t0_ns <= s <= t1_ns and _number(v, FRAMES_IN_KEYS) is not None]
    if len(inside) < 2:
        return None
    (s0, v0), (s1, v1) = inside[0], inside[-1]
    sent = sum(1 for s in set(sent_stamps) if s0 < s <= s1)

    def delta(keys: Sequence[str]) -> int:
        a, b = _number(v0, keys), _number(v1, keys)
        return int(b - a) if a is not None and b is not None else 0
    return InputDrops(node, (s1 - s0) / NS_PER_S, sent, delta(FRAMES_IN_KEYS), delta(PROCESSED_KEYS),
                      int(_drops(v1) - _drops(v0)))


# --- CPU and memory of processes, from /proc ---------------------------------------------------

CLOCK_TICKS_PER_S = os.sysconf('SC_CLK_TCK')
MIN_TREND_SPAN_S = 300.0   # an RSS trend [MB/h] from a shorter stretch is mostly noise


def cpu_ticks_from_stat(text: str) -> int:
    """utime + stime [clock ticks] from the text of /proc/<pid>/stat."""
    # The command name (field 2) is in parentheses and may hold spaces and parentheses
    # itself: the fields that follow start after the last ')'.
    end = text.rfind(')')
    if end < 0:
        raise ValueError(f'not a /proc/<pid>/stat line (no command name in parentheses): {text[:80]!r}')
    rest = text[end + 1:].split()
    if len(rest) < 13:
        raise ValueError(f'/proc/<pid>/stat line too short: {len(rest)} fields after the name, expected 13 or more')
    return int(rest[11]) + int(rest[12])     # fields 14 (utime) and 15 (stime) of proc(5)


def read_cpu_s(pid: int) -> float:
    """User + system CPU time [s] of a process (all its threads) from /proc/<pid>/stat."""
    with open(f'/proc/{pid}/stat', 'rb') as f:
        return cpu_ticks_from_stat(f.read().decode(errors='replace')) / CLOCK_TICKS_PER_S


@dataclass(frozen=True)
class Memory:
    """Resident memory of a process [MB] (/proc/<pid>/status): the total (VmRSS) and two of
    its parts: private (RssAnon: the heap, where a leak shows) and shared memory (RssShmem:
    e.g. the DDS shared-memory segments of the peers, which grow as pages get touched)."""

    rss_mb: float
    anon_mb: float
    shmem_mb: float


def memory_from_status(text: str) -> Memory:
    """Memory from the text of /proc/<pid>/status."""
    kb: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(':')
        if key in ('VmRSS', 'RssAnon', 'RssShmem'):
            kb[key] = int(value.split()[0])
    if 'VmRSS' not in kb:
        raise ValueError('no VmRSS line in /proc/<pid>/status (a zombie or a kernel thread?)')
    return Memory(kb['VmRSS'] / 1024.0, kb.get('RssAnon', math.nan * 1024) / 1024.0,
                  kb.get('RssShmem', math.nan * 1024) / 1024.0)


def read_memory(pid: int) -> Memory:
    with open(f'/proc/{pid}/status') as f:
        return memory_from_status(f.read())


@dataclass(frozen=True)
class ProcessSummary:
    """CPU [% of one core] and memory [MB] of one process over the measurement.

    private_* is RssAnon: its growth and trend (slope of a fitted line, for runs of
    MIN_TREND_SPAN_S or more) are the leak signal; the total RSS also holds shared memory.
    """

    name: str
    pid: int
    samples: int
    cpu_median_pct: float
    cpu_max_pct: float
    rss_median_mb: float
    rss_max_mb: float
    shmem_max_mb: float
    private_first_mb: float
    private_last_mb: float
    private_slope_mb_per_h: float

    @property
    def private_growth_mb(self) -> float:
        return self.private_last_mb - self.private_first_mb


@dataclass
class _ProcTrack:
    pid: int
    last_cpu_s: Optional[float] = None
    last_t: Optional[float] = None
    t: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)
    memory: list[Memory] = field(default_factory=list)
    gone: bool = False


class ProcessSampler:
    """Samples CPU % (of one core, over the interval since the previous sample) and memory of
    named processes; call sample() about once a second."""

    def __init__(self, pids: Mapping[str, int], clock=time.monotonic) -> None:
        self._clock = clock
        self._tracks = {name: _ProcTrack(pid) for name, pid in pids.items()}

    @property
    def names(self) -> list[str]:
        return list(self._tracks)

    def sample(self) -> None:
        now = self._clock()
        for track in self._tracks.values():
            if track.gone:
                continue
            try:
                cpu_s, memory = read_cpu_s(track.pid), read_memory(track.pid)
            except (OSError, ValueError):
                track.gone = True
                continue
            if track.last_cpu_s is not None and now > track.last_t:
                track.t.append(now)
                track.cpu_pct.append(100.0 * (cpu_s - track.last_cpu_s) / (now - track.last_t))
                track.memory.append(memory)
            track.last_cpu_s, track.last_t = cpu_s, now

    def clear(self) -> None:
        """Forget the samples so far (the warm-up), keeping the CPU reference point."""
        for track in self._tracks.values():
            track.t.clear()
            track.cpu_pct.clear()
            track.memory.clear()

    def latest(self, name: str) -> Optional[Memory]:
        track = self._tracks[name]
        return track.memory[-1] if track.memory else None

    def first(self, name: str) -> Optional[Memory]:
        track = self._tracks[name]
        return track.memory[0] if track.memory else None

    def recent_cpu_pct(self, name: str, window_s: float) -> float:
        """Mean CPU % of the samples of the last window_s seconds (NaN if none)."""
        track = self._tracks[name]
        if not track.t:
            return math.nan
        recent = [c for t, c in zip(track.t, track.cpu_pct) if t >= track.t[-1] - window_s]
        return float(np.mean(recent))

    def summary(self, name: str) -> ProcessSummary:
        track = self._tracks[name]
        cpu = np.asarray(track.cpu_pct)
        if cpu.size == 0:
            nan = math.nan
            return ProcessSummary(name, track.pid, 0, nan, nan, nan, nan, nan, nan, nan, nan)
        rss = np.array([m.rss_mb for m in track.memory])
        private = np.array([m.anon_mb for m in track.memory])
        shmem = np.array([m.shmem_mb for m in track.memory])
        slope = math.nan
        if private.size >= 3 and track.t[-1] - track.t[0] >= MIN_TREND_SPAN_S:
            slope = float(np.polyfit(np.asarray(track.t) - track.t[0], private, 1)[0]) * 3600.0
        return ProcessSummary(name, track.pid, int(cpu.size), float(np.median(cpu)), float(cpu.max()),
                              float(np.median(rss)), float(rss.max()), float(shmem.max()),
                              float(private[0]), float(private[-1]), slope)


# --- the machine -------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ('unknown' where it has none)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown'


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# --- the report --------------------------------------------------------------------------------

MARKDOWN_TITLE = '''# End-to-end benchmark: camera to verdict across processes

Written by `benchmarks/bench_e2e.py`; one section per run.

'''


@dataclass
class Report:
    """Everything one run measured; `to_markdown()` is what lands in BENCHMARKS_e2e.md."""

    date: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    measured_s: float
    camera_sent: int
    camera_rate_hz: float
    camera_render_ms: LatencySummary      # header stamp -> color image written (rendering)
    paths: list[PathResult]
    baseline_path: str
    inputs: list[InputDrops]
    processes: list[ProcessSummary]
    subscriber_delay_ms: LatencySummary   # DDS receive -> callback in the measuring process
    notes: list[str] = field(default_factory=list)
    strangers: list[str] = field(default_factory=list)    # nodes this run did not start

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for p, src in zip(d['paths'], self.paths):
            p['received_fraction'] = src.received_fraction
        for i, src in zip(d['inputs'], self.inputs):
            i['lost_before_input'] = src.lost_before_input
        for p, src in zip(d['processes'], self.processes):
            p['private_growth_mb'] = src.private_growth_mb
        return d

    def to_markdown(self) -> str:
        """One section (a level-2 heading and its tables) for this run."""
        s = self.settings
        lines = [
            f'## {self.date}: {s.get("nodes")}; {s.get("transport")}; '
            f'{"soak, " if s.get("soak") else ""}{self.measured_s:.0f} s',
            '',
            f'- Date: {self.date}',
            f'- Machine: {self.machine.get("nproc")} CPU cores ({self.machine.get("cpu_model")}), '
            f'{self.machine.get("system")}, Python {self.machine.get("python")}; '
            f'load average at start {self.machine.get("load_start")}, at end {self.machine.get("load_end")}',
            f'- Settings: camera {s.get("width")}x{s.get("height")} at {s.get("rate_hz")} Hz requested, '
            f'depth {s.get("depth_encoding")}, image QoS {s.get("image_reliability")}, seed {s.get("seed")}; '
            f'nodes: {s.get("nodes")}; measured {self.measured_s:.0f} s after {s.get("warmup_s")} s warm-up; '
            f'niceness {s.get("niceness")}',
            f'- DDS: {s.get("rmw")}, {s.get("transport")}; ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, '
            f'domain {s.get("domain_id")}',
            f'- Camera: {self.camera_sent} frames sent in the window, achieved {_f(self.camera_rate_hz, 1)} Hz; '
            f'stamp to color image written (rendering) p50 {_f(self.camera_render_ms.p50_ms)} ms, '
            f'p99 {_f(self.camera_render_ms.p99_ms)} ms',
            '',
            'Latency = the time DDS received the message in the benchmark process minus the frame '
            'header stamp (system clock, one machine). The synthetic camera stamps a frame before '
            'rendering it, so every row includes rendering; "from publish" subtracts the moment the '
            'camera wrote the color image (DDS source timestamp) instead. '
            + (f'Ratios are against the bare relay ({self.baseline_path}).' if self.baseline_path
               else 'No relay baseline in this run (--no-baseline).'),
            '',
            '| Path | Topic | Received / sent | p50 [ms] | p99 [ms] | max [ms] | p50 from publish [ms] '
            '| p99 from publish [ms] | p50 / relay | p99 / relay |',
            '|---|---|---|---|---|---|---|---|---|---|',
        ]
        for p in self.paths:
            got = f'{p.received} / {p.sent} ({_f(100 * p.received_fraction, 1)} %)'
            if p.duplicates:
                got += f', {p.duplicates} twice'
            lines.append(f'| {p.path} | {p.topic} | {got} | {_f(p.from_stamp.p50_ms)} | '
                         f'{_f(p.from_stamp.p99_ms)} | {_f(p.from_stamp.max_ms)} | '
                         f'{_f(p.from_publish.p50_ms)} | {_f(p.from_publish.p99_ms)} | '
                         f'{_f(p.ratio_p50, 2)} | {_f(p.ratio_p99, 2)} |')
        beads = [p for p in self.paths if p.topic.endswith('weld/bead')]
        for b in beads:
            lines += ['', f'{b.path}: {b.flagged} of {b.received} bead measurements valid; a '
                          'WeldDefect is published only for frames with a measured bead, so the '
                          'verdict count of that node can be at most that.']
        if self.inputs:
            lines += ['', 'Drops at the node inputs (from the nodes\' own /diagnostics counters, '
                          'between their first and last report in the window):', '',
                      '| Node | Interval [s] | Frames sent | Color frames taken in | Lost before the '
                      'input | Processed | Refused / unpaired by the node |',
                      '|---|---|---|---|---|---|---|']
            for i in self.inputs:
                lost_pct = 100 * i.lost_before_input / i.sent if i.sent else math.nan
                lines.append(f'| {i.node} | {i.interval_s:.0f} | {i.sent} | {i.frames_in} | '
                             f'{i.lost_before_input} ({_f(lost_pct, 1)} %) | {i.processed} | {i.node_drops} |')
        lines += ['', 'CPU (% of one core) and resident memory per process, sampled from /proc '
                      'every second. Private = RssAnon (heap: a leak shows here); shared memory = '
                      'RssShmem (DDS segments of the peers, mapped as they are touched).', '',
                  '| Process | CPU median [%] | CPU max [%] | RSS median [MB] | RSS max [MB] | '
                  'of which shared memory, max [MB] | Private growth [MB] | Private trend [MB/h] |',
                  '|---|---|---|---|---|---|---|---|']
        for p in self.processes:
            lines.append(f'| {p.name} | {_f(p.cpu_median_pct, 0)} | {_f(p.cpu_max_pct, 0)} | '
                         f'{_f(p.rss_median_mb, 1)} | {_f(p.rss_max_mb, 1)} | {_f(p.shmem_max_mb, 1)} | '
                         f'{_f(p.private_growth_mb, 1, True)} | {_f(p.private_slope_mb_per_h, 1, True)} |')
        lines += ['', f'Private trend: slope of a line fitted to the RssAnon samples, given for runs of '
                      f'{MIN_TREND_SPAN_S / 60:.0f} min or more. Measuring subscriber: DDS receive '
                      f'to callback in the benchmark process took p50 '
                      f'{_f(self.subscriber_delay_ms.p50_ms, 2)} ms, p99 '
                      f'{_f(self.subscriber_delay_ms.p99_ms, 2)} ms (not counted in the latencies).']
        if self.notes:
            lines += [''] + [f'- {n}' for n in self.notes]
        return '\n'.join(lines) + '\n'


def _f(x: float, digits: int = 1, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return 'n/a'
    return f'{x:+.{digits}f}' if signed else f'{x:.{digits}f}'


def other_nodes(node, expected: Counter) -> list[str]:
    """Nodes on the graph beyond `expected` (names, with how many of each this run started)."""
    seen = Counter(name for name, _ in node.get_node_names_and_namespaces())
    return sorted((seen - expected).elements())
