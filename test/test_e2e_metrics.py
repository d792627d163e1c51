"""The measuring pieces of the end-to-end benchmark, without ROS: stamps read from CDR bytes,
latencies and drops over a window, node input counters, /proc sampling, the report."""
from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from weld_vision_ros.perf.e2e_metrics import (NS_PER_MS, NS_PER_S, LatencySummary, ProcessSampler, Report,
                                    StampedSeries, achieved_rate_hz, cpu_ticks_from_stat,
                                    header_stamp_ns, input_drops, later_of, memory_from_status, other_nodes,
                                    path_result, read_cpu_s, read_memory, with_ratio)

REPO = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000 * NS_PER_S


def _cdr(sec: int, nanosec: int, little: bool = True, frame_id: bytes = b'cam\x00') -> bytes:
    order = '<' if little else '>'
    head = b'\x00\x01\x00\x00' if little else b'\x00\x00\x00\x00'
    return head + struct.pack(order + 'iII', sec, nanosec, len(frame_id)) + frame_id


# --- stamps ------------------------------------------------------------------------------------

@pytest.mark.parametrize('little', [True, False])
def test_header_stamp_is_read_from_either_byte_order(little: bool) -> None:
    assert header_stamp_ns(_cdr(1_790_000_123, 456_789_012, little)) == 1_790_000_123_456_789_012


def test_header_stamp_refuses_what_is_not_a_stamped_message() -> None:
    with pytest.raises(ValueError, match='too short'):
        header_stamp_ns(b'\x00\x01\x00\x00\x01')
    with pytest.raises(ValueError, match='encapsulation 0x0003'):
        header_stamp_ns(b'\x00\x03\x00\x00' + bytes(12))      # parameter-list CDR
    with pytest.raises(ValueError, match='nanosec'):
        header_stamp_ns(_cdr(5, 1_500_000_000))


# --- latencies and drops -------------------------------------------------------------------

def test_path_result_counts_the_window_and_measures_from_stamp_and_from_publish() -> None:
    series = StampedSeries()
    sent = [T0 + i * 100 * NS_PER_MS for i in range(10)]
    publish = {s: s + 20 * NS_PER_MS for s in sent[:5]}           # publish time known for half
    for i, s in enumerate(sent):
        if i == 3:
            continue                                               # frame 3 never arrived
        series.add(s, s + (30 + i) * NS_PER_MS, flag=i % 2 == 0)
    series.add(sent[4], sent[4] + 500 * NS_PER_MS)                 # a duplicate: first arrival counts
    series.add(T0 - NS_PER_S, T0)                                  # before the window: ignored
    arrivals = series.first_arrivals(T0, sent[-1])
    r = path_result('camera → node', 'weld/bead', arrivals, sent, publish)
    assert (r.sent, r.received) == (10, 9)
    assert r.received_fraction == pytest.approx(0.9)
    assert r.from_stamp.n == 9
    assert r.from_stamp.p50_ms == pytest.approx(35.0)              # 30..39 without 33
    assert r.from_stamp.max_ms == pytest.approx(39.0)
    assert r.from_publish.n == 4                                   # frames 0, 1, 2, 4
    assert r.from_publish.p50_ms == pytest.approx(11.5)           # 10, 11, 12, 14 ms
    assert r.flagged == 5                                          # frames 0, 2, 4, 6, 8
    assert series.duplicates(T0, sent[-1]) == 1 and series.duplicates(sent[5], sent[-1]) == 0
    assert math.isnan(r.ratio_p50)


def test_pair_arrives_when_its_later_half_does_and_ratios_divide_by_the_baseline() -> None:
    color = {T0: (T0 + 10, 1, True), T0 + 1: (T0 + 50, 1, True)}
    depth = {T0: (T0 + 30, 2, True), T0 + 2: (T0 + 60, 2, True)}
    pair = later_of(color, depth)
    assert pair == {T0: (T0 + 30, 2, True)}                       # only stamps with both halves

    def result(latency_ms: float) -> object:
        arrivals = {T0 + i: (T0 + i + int(latency_ms * NS_PER_MS), 0, True) for i in range(5)}
        return path_result('p', 't', arrivals, list(arrivals), {})
    ratio = with_ratio(result(30.0), result(10.0))
    assert ratio.ratio_p50 == pytest.approx(3.0) and ratio.ratio_p99 == pytest.approx(3.0)
    assert math.isnan(with_ratio(result(30.0), None).ratio_p50)


def test_latency_summary_of_nothing_is_nan_not_an_error() -> None:
    s = LatencySummary.of([])
    assert s.n == 0 and math.isnan(s.p50_ms) and math.isnan(s.p99_ms)


def test_achieved_rate_from_stamps() -> None:
    assert achieved_rate_hz([T0 + i * NS_PER_S // 25 for i in range(101)]) == pytest.approx(25.0)
    assert math.isnan(achieved_rate_hz([T0]))


def test_input_drops_from_rule_node_counters() -> None:
    diags = [(T0 - NS_PER_S, {'frames_in': '0'}),                 # before the window: ignored
             (T0 + NS_PER_S, {'frames_in': '10', 'frames_inspected': '8', 'drops_total': '1'}),
             (T0 + 2 * NS_PER_S, {'message': 'no counters'}),     # a report without counters
             (T0 + 3 * NS_PER_S, {'frames_in': '50', 'frames_inspected': '44', 'drops_total': '4'})]
    sent = [T0 + i * NS_PER_S // 30 for i in range(4 * 30)]        # 30 Hz for 4 s
    d = input_drops('rule_defect_node', diags, T0, T0 + 4 * NS_PER_S, sent)
    assert d.interval_s == pytest.approx(2.0)
    assert d.sent == 60                                            # stamps in (1 s, 3 s]
    assert (d.frames_in, d.processed, d.node_drops) == (40, 36, 3)
    assert d.lost_before_input == 20


def test_input_drops_from_onnx_node_counters_sum_the_reasons() -> None:
    # Counters without drops_total (as nodes before the one key scheme published them).
    diags = [(T0, {'frames_in': '5', 'frames': '5', 'dropped_unmatched': '1', 'drop.no_camera_info': '0'}),
             (T0 + NS_PER_S, {'frames_in': '35', 'frames': '30', 'dropped_unmatched': '4',
                              'drop.no_camera_info': '2', 'last_refusal': ''})]
    d = input_drops('onnx_defect_node', diags, T0, T0 + NS_PER_S, [T0 + i for i in range(1, 31)])
    assert (d.sent, d.frames_in, d.processed, d.node_drops) == (30, 30, 25, 5)
    assert input_drops('x', diags[:1], T0, T0 + NS_PER_S, []) is None
    # One frame more taken in than stamped inside the interval (a boundary effect): no loss.
    boundary = input_drops('x', diags, T0, T0 + NS_PER_S, [T0 + i for i in range(1, 30)])
    assert boundary.frames_in == 30 and boundary.lost_before_input == 0


# --- /proc -----------------------------------------------------------------------------------

def test_stat_parsing_survives_a_command_name_with_spaces_and_parentheses() -> None:
    fields = ['S'] + [str(i) for i in range(4, 14)] + ['700', '300'] + ['0'] * 30
    text = '1234 (weird) name (x)) ' + ' '.join(fields)
    assert cpu_ticks_from_stat(text) == 1000
    with pytest.raises(ValueError, match='no command name'):
        cpu_ticks_from_stat('1234 S 1 2')


def test_memory_parts_from_proc_status() -> None:
    text = 'Name:\tpython\nVmRSS:\t  204800 kB\nRssAnon:\t  102400 kB\nRssFile:\t 51200 kB\n' \
           'RssShmem:\t   51200 kB\nThreads:\t12\n'
    m = memory_from_status(text)
    assert (m.rss_mb, m.anon_mb, m.shmem_mb) == (200.0, 100.0, 50.0)
    with pytest.raises(ValueError, match='no VmRSS'):
        memory_from_status('Name:\tkworker\nState:\tI (idle)\n')


def test_sampler_sees_cpu_work_and_memory_and_outlives_an_exited_process() -> None:
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
        sampler = ProcessSampler({'self': os.getpid(), 'child': child.pid})
        sampler.sample()
        start = read_cpu_s(os.getpid())
        while read_cpu_s(os.getpid()) - start < 0.05:              # burn 50 ms of CPU, however long it takes
            sum(i * i for i in range(10_000))
        sampler.sample()
        child.kill()
        child.wait()
        sampler.sample()                                           # the child is gone: no error
        me = sampler.summary('self')
        assert me.samples == 2 and me.cpu_max_pct > 0
        now = read_memory(os.getpid())
        assert me.rss_median_mb == pytest.approx(now.rss_mb, rel=0.5)
        assert 0 < me.private_last_mb <= me.rss_max_mb
        assert sampler.summary('child').samples == 1               # sampled once while it lived
        assert math.isnan(me.private_slope_mb_per_h)               # seconds are too short for a trend
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# --- the report and the options ------------------------------------------------------------

def _report() -> Report:
    arrivals = {T0 + i: (T0 + i + 40 * NS_PER_MS, 0, True) for i in range(20)}
    bead = path_result('camera → rule_defect_node → bench', 'weld/bead', arrivals, list(arrivals), {})
    base = path_result('camera → image_relay → bench', 'color + depth', arrivals, list(arrivals), {})
    sampler = ProcessSampler({'self': os.getpid()})
    sampler.sample()
    sampler.sample()
    return Report(date='2026-01-01 00:00 UTC', machine={'nproc': 2, 'cpu_model': 'test cpu'},
                  settings={'nodes': 'rule, image_relay', 'transport': 'test transport'},
                  measured_s=5.0, camera_sent=20, camera_rate_hz=30.0,
                  camera_render_ms=LatencySummary.of([20.0]),
                  paths=[with_ratio(bead, base), with_ratio(base, base)], baseline_path='relay pair',
                  inputs=[], processes=[sampler.summary('self')],
                  subscriber_delay_ms=LatencySummary.of([]), notes=['a note'])


def test_report_renders_a_markdown_table_and_plain_json() -> None:
    report = _report()
    md = report.to_markdown()
    assert md.startswith('## 2026-01-01 00:00 UTC: rule, image_relay; test transport')
    row = next(line for line in md.splitlines() if '| weld/bead |' in line)
    assert '| 20 / 20 (100.0 %) | 40.0 | 40.0 |' in row and row.endswith('| 1.00 | 1.00 |')
    assert '| self |' in md and '- a note' in md
    d = json.loads(json.dumps(report.to_dict(), default=str))
    assert d['paths'][0]['from_stamp']['p50_ms'] == pytest.approx(40.0)
    assert d['paths'][0]['received_fraction'] == 1.0
    assert d['processes'][0]['name'] == 'self'


@pytest.mark.parametrize('argv, message', [
    (['--nodes', 'rule,magic'], 'expected a comma-separated list of'),
    (['--nodes', 'onnx'], 'needs --model PATH'),
    (['--model', 'missing.onnx'], 'no such file'),
    (['--duration', '0'], 'must be positive'),
    (['--shm-segment-mb', '0'], 'expected 1..1024'),
    (['--report-period', '0'], '--report-period must be positive'),
])
def test_options_fail_fast_with_the_valid_choices(tmp_path, argv, message) -> None:
    # The benchmark is a script: run it as one (tests import no benchmark module).
    out = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'bench_e2e.py'), *argv],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_nodes_the_run_did_not_start_are_named() -> None:
    from collections import Counter

    class Graph:
        def get_node_names_and_namespaces(self):
            return [('bench_e2e_probe', '/'), ('rule_defect_node', '/'), ('rule_defect_node', '/'),
                    ('someone_elses_camera', '/')]
    expected = Counter(['bench_e2e_probe', 'rule_defect_node'])
    assert other_nodes(Graph(), expected) == ['rule_defect_node', 'someone_elses_camera']
