"""In-process runner: the nodes of launch/weld_cell.launch.py, with the same YAML, in one
process on a multi-threaded executor.

For machines without the ROS 2 launch library (a pip-only desktop, CI) and for quick
trials. `weld-vision run` starts it:

    weld-vision run --params-file config/weld_cell.yaml --sim-camera --duration 20
    weld-vision run --sim-camera --dashboard --dashboard-args '--port 8090 --token secret'
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from weld_vision_ros import resources
from weld_vision_ros.core.cascade import MODES
from weld_vision_ros.ros.launch_args import DDS_PROFILE_ENV, DDS_PROFILE_NAME, dds_environment

# Executable name (as in nodes/ and the launch files) -> (module, class). The executable,
# the node's default name and the YAML key are the same word.
NODE_CLASSES: dict[str, tuple[str, str]] = {
    'synthetic_camera_node': ('weld_vision_ros.simulator.synthetic_camera_node', 'SyntheticCameraNode'),
    'rule_defect_node': ('weld_vision_ros.nodes.rule_defect_node', 'RuleDefectNode'),
    'onnx_defect_node': ('weld_vision_ros.nodes.onnx_defect_node', 'OnnxDefectNode'),
    'dataset_capture_node': ('weld_vision_ros.nodes.dataset_capture_node', 'DatasetCaptureNode'),
    'defect_monitor_node': ('weld_vision_ros.examples.defect_monitor_node', 'DefectMonitorNode'),
    'controller_example_node': ('weld_vision_ros.examples.controller_example_node', 'ControllerExampleNode'),
    'weld_report_node': ('weld_vision_ros.nodes.weld_report_node', 'WeldReportNode'),
    'review_recorder_node': ('weld_vision_ros.nodes.review_recorder_node', 'ReviewRecorderNode'),
}
CELL_NODES = ('rule_defect_node', 'onnx_defect_node')




def use_default_dds_profile() -> Optional[str]:
    """Point Fast DDS at the shipped profile (16 MB shared-memory segment, which RGB-D
    frames need) unless FASTDDS_DEFAULT_PROFILES_FILE is set already; the file used, if any.
    Call before rclpy.init; child processes inherit it."""
    import os
    if os.environ.get(DDS_PROFILE_ENV):
        return os.environ[DDS_PROFILE_ENV]
    try:
        path = resources.resource_path('config', DDS_PROFILE_NAME)
    except resources.ResourceNotFoundError:
        return None
    os.environ.update(dict(dds_environment(str(path))))
    return str(path)



class ParamsFileError(ValueError):
    """A parameter file that is not `node_name: ros__parameters: {...}` YAML."""


def load_params_file(path: Path) -> dict[str, dict[str, Any]]:
    """Node-name key -> parameters, from a ROS 2 parameter YAML, in file order, each key as
    rcl reads it: fully qualified (`rule_defect_node` is `/rule_defect_node`), wildcards
    (`/**`, `/**/rule_defect_node`, `/cell_1/*`) kept. Select a node's parameters with
    `node_params`: keys are never cut down to the bare node name, so the sections of two
    namespaced cells (`/cell_1/onnx_defect_node`, `/cell_2/onnx_defect_node`) stay apart."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ParamsFileError(f'cannot read parameter file {path}: {exc}') from None
    if not isinstance(data, dict):
        raise ParamsFileError(f'{path}: top level must map node names to ros__parameters')
    out: dict[str, dict[str, Any]] = {}
    for key, body in data.items():
        if not isinstance(body, dict) or 'ros__parameters' not in body:
            raise ParamsFileError(f'{path}: entry {key!r} lacks ros__parameters')
        params = body['ros__parameters'] or {}
        if not isinstance(params, dict):
            raise ParamsFileError(f'{path}: {key}.ros__parameters must be a mapping')
        out.setdefault(fully_qualified(str(key)), {}).update(_flatten(params))
    return out


def _flatten(params: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    """Nested mappings are dotted parameter names, as ROS 2 reads them (a: {b: 1} -> a.b)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(_flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


WILDCARD = '/**'     # a `/**:` section: parameters for every node of the file


def normalize_namespace(namespace: str) -> str:
    """`/cell_2` for `cell_2`, `/cell_2/` or `/cell_2`; `/` for the root namespace."""
    return '/' + namespace.strip('/')


def fully_qualified(name: str, namespace: str = '/') -> str:
    """`/ns/name` of a node name (or YAML key): a relative one is taken from `namespace`."""
    if name.startswith('/'):
        return '/' + name.strip('/')
    ns = namespace.strip('/')
    return f'/{ns}/{name}' if ns else f'/{name}'


def key_matches(key: str, node_fqn: str) -> bool:
    """Whether a parameter-file key applies to the node `node_fqn` (e.g. /cell_2/onnx_defect_node).

    rcl's rule (ROS 2 docs, "Passing ROS arguments to nodes via the command-line", node-name
    wildcards in parameter files): the key is compared with the node's fully qualified name
    token by token, `*` standing for exactly one token and `**` for zero or more. Checked in
    test/test_bringup.py against rcl itself (a node created with the file as --params-file).
    """
    return _match(fully_qualified(key).strip('/').split('/'), node_fqn.strip('/').split('/'))


def _match(pattern: list[str], tokens: list[str]) -> bool:
    if not pattern:
        return not tokens
    head, rest = pattern[0], pattern[1:]
    if head == '**':
        return any(_match(rest, tokens[i:]) for i in range(len(tokens) + 1))
    return bool(tokens) and (head == '*' or head == tokens[0]) and _match(rest, tokens[1:])


def node_params(params: Mapping[str, Mapping[str, Any]], executable: str, namespace: str = '/') -> dict[str, Any]:
    """The parameters the node `executable` in `namespace` gets from a loaded file: every
    section whose key matches its fully qualified name, in file order, a later one winning
    (as rcl applies them)."""
    fqn = fully_qualified(executable, namespace)
    out: dict[str, Any] = {}
    for key, values in params.items():
        if key_matches(key, fqn):
            out.update(values)
    return out


def node_class(executable: str):
    if executable not in NODE_CLASSES:
        raise ValueError(f'unknown node {executable!r}; known: {", ".join(NODE_CLASSES)}')
    module, cls = NODE_CLASSES[executable]
    return getattr(importlib.import_module(module), cls)


def create_nodes(executables: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                 overrides: Optional[Mapping[str, Mapping[str, Any]]] = None, context=None,
                 namespace: str = '/') -> list:
    """Instantiate the nodes in `namespace` with the YAML sections that match them (plus
    overrides), like a launch file with its `namespace` argument."""
    from rclpy.parameter import Parameter
    nodes = []
    for exe in executables:
        values = {**node_params(params, exe, namespace), **(overrides or {}).get(exe, {})}
        kwargs = {'parameter_overrides': [Parameter(k, value=v) for k, v in values.items()],
                  'namespace': normalize_namespace(namespace)}
        if context is not None:
            kwargs['context'] = context
        nodes.append(node_class(exe)(**kwargs))
    return nodes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='weld-vision run', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--params-file', type=Path, default=None,
                   help='parameter YAML (default: the installed config/weld_cell.yaml)')
    p.add_argument('--sim-camera', action='store_true', help='also run the synthetic camera')
    p.add_argument('--nodes', nargs='+', default=list(CELL_NODES), choices=sorted(NODE_CLASSES),
                   help=f'nodes to run (default: {" ".join(CELL_NODES)})')
    p.add_argument('--model-path', default=None, help='ONNX model for the ONNX node')
    p.add_argument('--mode', choices=MODES, default=None,
                   help='ONNX node mode (default: the params file value)')
    p.add_argument('--set', action='append', default=[], metavar='NODE.PARAM=VALUE',
                   help='override one parameter (value read as YAML), e.g. '
                        'synthetic_camera_node.rate_hz=15.0; repeatable')
    p.add_argument('--duration', type=float, default=0.0, help='stop after this many seconds (0: Ctrl-C)')
    p.add_argument('--threads', type=int, default=4, help='executor threads')
    p.add_argument('--dashboard', action='store_true',
                   help='also serve the operator dashboard (its own process; weld-vision dashboard) and '
                        'publish the rule node\'s annotated debug image for it')
    p.add_argument('--dashboard-args', default='', metavar='ARGS',
                   help="the dashboard's arguments as one string, e.g. '--port 8090 --token-file FILE'")
    p.add_argument('--namespace', default='/', help='namespace of every node and its relative topics, '
                   'e.g. cell_2 (as the launch file\'s namespace:=); the params file\'s sections are '
                   'matched against each node\'s fully qualified name, as rcl does')
    return p


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """['node.param=value', ...] -> {node: {param: value}}; values are read as YAML."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition('=')
        node, dot, name = key.partition('.')
        if not sep or not dot or not name or node not in NODE_CLASSES:
            raise ValueError(f'--set {item!r}: expected NODE.PARAM=VALUE with NODE one of '
                             f'{", ".join(NODE_CLASSES)}')
        try:
            out.setdefault(node, {})[name] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f'--set {item!r}: value is not YAML: {exc}') from None
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
        if args.params_file is None:
            args.params_file = resources.params_file()
        params = load_params_file(args.params_file)
    except (ValueError, ParamsFileError) as exc:
        parser.error(str(exc))
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from weld_vision_ros.ros.executor import SteadyExecutor

    executables = (['synthetic_camera_node'] if args.sim_camera else []) + list(args.nodes)
    onnx = overrides.setdefault('onnx_defect_node', {})
    if args.model_path:
        # The node loads models only from models_dir: the model's own folder, as the demo does.
        onnx['model_path'] = str(Path(args.model_path).resolve())
        onnx['models_dir'] = str(Path(args.model_path).resolve().parent)
    if args.mode:
        onnx['mode'] = args.mode
    use_default_dds_profile()
    dashboard = None
    if args.dashboard:
        from weld_vision_ros.ros.launch_args import LaunchArgumentError, dashboard_command
        try:
            cmd = dashboard_command(args.dashboard_args, args.namespace.strip('/'))
        except LaunchArgumentError as exc:
            parser.error(str(exc))
        overrides.setdefault('rule_defect_node', {}).setdefault('publish_debug_image', True)
    rclpy.init()
    nodes = []
    ex = SteadyExecutor(num_threads=args.threads)
    if args.dashboard:
        import subprocess
        dashboard = subprocess.Popen(cmd)   # its output goes where ours does
    try:
        try:
            nodes = create_nodes(executables, params, overrides, namespace=args.namespace)
        except Exception as exc:  # noqa: BLE001 - a bad value in the file or an override
            print(f'[run] cannot start the nodes: {type(exc).__name__}: {exc}', file=sys.stderr, flush=True)
            return 2
        for n in nodes:
            ex.add_node(n)
        print(f'[run] {", ".join(executables)} in one process '
              f'({args.threads} executor threads, params {args.params_file})', flush=True)
        deadline = time.monotonic() + args.duration if args.duration > 0 else float('inf')
        while rclpy.ok() and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if dashboard is not None:
            _stop_process(dashboard)
        ex.shutdown()
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown()
    return 0


def _stop_process(proc, timeout_s: float = 10.0) -> None:
    """Ctrl-C a child (it shuts down cleanly), then kill it if it hangs."""
    import signal
    import subprocess
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == '__main__':
    sys.exit(main())
