"""The launch files' arguments, checked and turned into what the nodes are started with.

Pure Python (no `launch` import), so the checks are tested without ROS 2's launch library
and the launch files only map the result onto launch_ros actions. Every bad argument is a
`LaunchArgumentError` whose message names the argument and its value: the launch fails
before any node starts, instead of a node respawning forever on a bad value or running on
code defaults (launch_ros only warns about a params file that is not there).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from weld_vision_ros.core.cascade import MODES
from weld_vision_ros.ros import codec

# Camera topic presets (colour, depth aligned to colour, colour camera_info). The drivers'
# default names; check them with `ros2 topic list` on the cell, and give color_topic /
# depth_topic / camera_info_topic to override any of them.
CAMERA_PRESETS: dict[str, tuple[str, str, str]] = {
    # the names this package uses (relative: a namespace applies)
    'default': (codec.COLOR_TOPIC, codec.DEPTH_TOPIC, codec.CAMERA_INFO_TOPIC),
    # realsense-ros 4.x: camera_namespace 'camera' and camera_name 'camera' by default,
    # aligned depth with align_depth.enable:=true
    'realsense': ('/camera/camera/color/image_raw', '/camera/camera/aligned_depth_to_color/image_raw',
                  '/camera/camera/color/camera_info'),
    # OrbbecSDK_ROS2: depth registered to colour with depth_registration:=true
    'orbbec': ('/camera/color/image_raw', '/camera/depth/image_raw', '/camera/color/camera_info'),
}
BUNDLED_MODELS = 'bundled'  # models_dir:=bundled serves the installed config/models


class LaunchArgumentError(ValueError):
    """A launch argument that cannot be used; the message names it and its value."""


@dataclass(frozen=True)
class CellLaunchPlan:
    params_file: str
    use_sim_camera: bool
    remaps: list[tuple[str, str]]
    onnx_overrides: dict[str, str] = field(default_factory=dict)
    report: bool = False
    report_overrides: dict[str, str] = field(default_factory=dict)
    review: bool = False
    rule_overrides: dict[str, object] = field(default_factory=dict)
    # The operator dashboard's command line (a separate process), None when not asked for.
    dashboard_cmd: Optional[list[str]] = None


def parse_bool(name: str, value: str) -> bool:
    text = str(value).strip().lower()
    if text not in ('true', 'false'):
        raise LaunchArgumentError(f"{name} must be 'true' or 'false', got {value!r}")
    return text == 'true'


def check_params_file(path: str) -> str:
    if not os.path.isfile(path):
        raise LaunchArgumentError(f'params_file {path!r} is not a file')
    return path


def camera_remaps(camera: str, color: str = '', depth: str = '', info: str = '') -> list[tuple[str, str]]:
    """Remaps from the nodes' topic names to the camera's: the preset's, then any topic given."""
    if camera not in CAMERA_PRESETS:
        raise LaunchArgumentError(f"camera must be one of {', '.join(CAMERA_PRESETS)}, got {camera!r}")
    preset = CAMERA_PRESETS[camera]
    ours = (codec.COLOR_TOPIC, codec.DEPTH_TOPIC, codec.CAMERA_INFO_TOPIC)
    return [(own, given or default) for own, given, default in zip(ours, (color, depth, info), preset)]


def bundled_models_dir(share_dir: str) -> str:
    """The installed config/models. A symlink install (colcon --symlink-install) links each file
    to the source tree, and the node resolves symlinks before it checks that a model lies in
    models_dir: then the directory the bundled model really lives in is the one to allow."""
    installed = os.path.join(share_dir, 'config', 'models')
    demo = os.path.join(installed, 'weld_demo.onnx')
    if os.path.islink(demo):
        return os.path.dirname(os.path.realpath(demo))
    return installed


def plan_cell_launch(args: Mapping[str, str], share_dir: str) -> CellLaunchPlan:
    """weld_cell.launch.py's arguments -> what it starts (see its ARGUMENTS)."""
    params_file = check_params_file(args['params_file'])
    mode = args.get('mode', '')
    if mode not in ('',) + tuple(MODES):
        raise LaunchArgumentError(f"mode must be one of {', '.join(MODES)} (or empty: the params "
                                  f"file's), got {mode!r}")
    sim = parse_bool('use_sim_camera', args.get('use_sim_camera', 'false'))
    remaps = camera_remaps(args.get('camera', 'default'), args.get('color_topic', ''),
                           args.get('depth_topic', ''), args.get('camera_info_topic', ''))
    overrides: dict[str, str] = {}
    if mode:
        overrides['mode'] = mode
    if args.get('model_path', ''):
        overrides['model_path'] = args['model_path']
    models_dir = args.get('models_dir', '')
    if models_dir == BUNDLED_MODELS:
        models_dir = bundled_models_dir(share_dir)
    if models_dir:
        if not os.path.isdir(models_dir):
            raise LaunchArgumentError(f'models_dir {models_dir!r} is not a directory')
        overrides['models_dir'] = models_dir
    report = parse_bool('report', args.get('report', 'false'))
    report_overrides: dict[str, str] = {}
    table = args.get('acceptance_table', '')
    if table:
        if not os.path.isfile(table):
            raise LaunchArgumentError(f'acceptance_table {table!r} is not a file')
        report_overrides['acceptance_table'] = table
    if args.get('reports_dir', ''):
        report_overrides['reports_dir'] = args['reports_dir']
    review = parse_bool('review', args.get('review', 'false'))
    rule_overrides: dict[str, object] = {}
    dashboard_cmd = None
    if parse_bool('dashboard', args.get('dashboard', 'false')):
        dashboard_cmd = dashboard_command(args.get('dashboard_args', ''), check_namespace(args.get('namespace', '')))
        rule_overrides['publish_debug_image'] = True   # the live screen shows the annotated image
    return CellLaunchPlan(params_file, sim, remaps, overrides, report, report_overrides, review,
                          rule_overrides=rule_overrides, dashboard_cmd=dashboard_cmd)


def dashboard_command(extra_args: str = '', namespace: str = '', python: str = sys.executable) -> list[str]:
    """`python -m weld_vision_ros.dashboard` with the given arguments (one string, split as a
    shell would; see `weld-vision dashboard --help`), in the cell's namespace."""
    try:
        extra = shlex.split(extra_args)
    except ValueError as exc:
        raise LaunchArgumentError(f'dashboard_args {extra_args!r}: {exc}') from None
    cmd = [python, '-m', 'weld_vision_ros.dashboard']
    if namespace and '--namespace' not in extra:
        cmd += ['--namespace', namespace]
    return cmd + extra


DDS_PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
DDS_PROFILE_NAME = 'fastdds_large_shm.xml'       # config/, shipped
DDS_QOS_FROM_XML_ENV = 'RMW_FASTRTPS_USE_QOS_FROM_XML'


def dds_environment(profile: str, return_memory: bool = False) -> list[tuple[str, str]]:
    """The environment that makes the nodes use a Fast DDS profile. return_memory (opt-in):
    also rmw_fastrtps's switch that applies the shipped profile's reader memory policy (a
    reader gives a sample's memory back once taken; see config/fastdds_large_shm.xml). It is
    off by default: with it, service replies (the capture node's counts) intermittently
    failed to arrive in the node tests."""
    env = [(DDS_PROFILE_ENV, profile)]
    if return_memory and os.path.basename(profile) == DDS_PROFILE_NAME:
        env.append((DDS_QOS_FROM_XML_ENV, '1'))
    return env


_NS_TOKEN = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def check_namespace(namespace: str) -> str:
    """A namespace argument as ROS 2 accepts it ('' or tokens of letters, digits and _ not
    starting with a digit, separated by /), returned without leading or trailing slash."""
    inner = namespace.strip().strip('/')
    if inner and not all(_NS_TOKEN.match(t) for t in inner.split('/')):
        raise LaunchArgumentError(f'namespace must be empty or tokens of letters, digits and _ '
                                  f'(not starting with a digit) separated by /, got {namespace!r}')
    return inner


def recorded_topics(namespace: str) -> list[str]:
    """The absolute topics `ros2 bag record` takes for a dataset recorded in `namespace`: the
    dataset layout's relative topics (codec), as the namespaced camera and label publishers
    resolve them; ground truth left out (synthetic only)."""
    ns = check_namespace(namespace)
    prefix = f'/{ns}/' if ns else '/'
    return [prefix + t for t in (codec.COLOR_TOPIC, codec.DEPTH_TOPIC, codec.CAMERA_INFO_TOPIC,
                                 codec.LABEL_TOPIC)]


def check_recorder(mode: str, storage: str, use_sim_camera: str,
                   which: Callable[[str], Optional[str]] = shutil.which) -> bool:
    """record_dataset.launch.py's checks; returns use_sim_camera. Stream mode needs the
    `ros2` command (ros2 bag record): without it the launch fails instead of running only
    the camera while nothing is recorded."""
    if mode not in ('stream', 'capture'):
        raise LaunchArgumentError(f"mode must be 'stream' or 'capture', got {mode!r}")
    if storage not in ('mcap', 'sqlite3'):
        raise LaunchArgumentError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    sim = parse_bool('use_sim_camera', use_sim_camera)
    if mode == 'stream' and which('ros2') is None:
        raise LaunchArgumentError("mode:=stream runs 'ros2 bag record', but no 'ros2' command is on "
                                  "PATH (source the ROS 2 setup, or use mode:=capture)")
    return sim
