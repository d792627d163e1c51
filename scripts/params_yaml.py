"""Print config/weld_cell.yaml regenerated from the nodes' declared parameters.

Every node of `weld_vision_ros.bringup.NODE_CLASSES` is created in-process with the
current file's values; each parameter it declares is written with its value from the
file (or its default when the file lacks it) and a comment from its descriptor
(description, unit, range, whether it is read-only). Run it after adding or changing a
parameter, review the diff, and commit:

    scripts/with_env.sh python scripts/params_yaml.py > /tmp/weld_cell.yaml && \
        mv /tmp/weld_cell.yaml config/weld_cell.yaml

test/test_bringup.py checks that the file and the nodes agree.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from weld_vision_ros.bringup import NODE_CLASSES, create_nodes, load_params_file  # noqa: E402
from weld_vision_ros.ros.rule_params import PREFIXES  # noqa: E402

PARAMS_FILE = REPO / 'config' / 'weld_cell.yaml'   # the source file this script regenerates

# Parameters every rclpy node declares by itself; they do not belong in our file.
BUILTIN = {'use_sim_time', 'start_type_description_service'}

HEADER = """\
# Parameters of every weld_vision_ros node (/**/node_name: ros__parameters: ...; /** for all), used by
# launch/weld_cell.launch.py, launch/record_dataset.launch.py and `weld-vision run`.
# Every parameter each node declares is here with its value; the comments give the
# description, unit, range and whether the value is fixed at start. Parameters without
# "fixed at start" can be changed on the running node (ros2 param set).
# Regenerate after changing a node's parameters: scripts/params_yaml.py.
"""

# The rule core's parameters: one fact each, declared by both cell nodes, written once under
# `/**` (launch_ros's wildcard: every node of the file; nodes that do not declare them ignore them).
SHARED_PREFIXES = tuple(f'{p}.' for p in PREFIXES)
SHARED_NOTE = ('The rule core\'s settings (measure.*, rules.*, spec.*), for every node that runs it:\n'
               'rule_defect_node and onnx_defect_node read the same values from here.')

NOTES = {
    'synthetic_camera_node': 'Only for use_sim_camera:=true, the demo and tests.',
    'dataset_capture_node': 'launch/record_dataset.launch.py mode:=capture.',
    'defect_monitor_node': 'Scores verdicts against the synthetic camera\'s ground truth (demo).',
    'controller_example_node': 'Example of a robot controller consuming weld/defect and weld/bead.',
    'review_recorder_node': 'Frames worth labelling into review bags (review:=true in the launch file).',
    'weld_report_node': 'Per-weld reports graded against an acceptance table (report:=true in the launch file).',
}


def _comment(desc) -> str:
    text = desc.description.strip()
    rng = ''
    if desc.integer_range:
        r = desc.integer_range[0]
        rng = f'{r.from_value} .. {r.to_value}'
    elif desc.floating_point_range:
        r = desc.floating_point_range[0]
        rng = f'{r.from_value:g} .. {r.to_value:g}'
    elif desc.additional_constraints:
        rng = desc.additional_constraints
    fixed = desc.read_only and 'fixed at start' not in text
    parts = [text] + ([rng] if rng else []) + (['fixed at start'] if fixed else [])
    return '; '.join(parts)


def _nest(flat: dict) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *path, leaf = name.split('.')
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix('\n...').strip()


def _emit(tree: dict, comments: dict, prefix: str, indent: int, out: list) -> None:
    pad = ' ' * indent
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            out.append(f'{pad}{key}:')
            _emit(value, comments, name + '.', indent + 2, out)
        else:
            out.append(f'{pad}{key}: {_scalar(value)}  # {comments[name]}')


def _section(key: str, values: dict, comments: dict, out: list) -> None:
    out.append(f'{key}:\n  ros__parameters:')
    _emit(_nest({n: list(v) if isinstance(v, (list, tuple)) or hasattr(v, 'tolist') else v
                 for n, v in values.items()}), comments, '', 4, out)
    out.append('')


def render(params_file: Path = PARAMS_FILE) -> str:
    import rclpy
    current = load_params_file(params_file) if params_file.exists() else {}
    sections: list[tuple[str, dict, dict]] = []
    shared: dict = {}
    shared_comments: dict = {}
    rclpy.init()
    try:
        for exe in NODE_CLASSES:
            node = create_nodes([exe], current)[0]
            try:
                names = sorted(n for n in node._parameters if n not in BUILTIN)
                values = {n: node.get_parameter(n).value for n in names}
                comments = {n: _comment(node.describe_parameter(n)) for n in names}
            finally:
                node.destroy_node()
            for n in [n for n in names if n.startswith(SHARED_PREFIXES)]:
                if n in shared and shared[n] != values[n]:
                    raise SystemExit(f'{n}: {exe} runs with {values[n]!r}, another node with {shared[n]!r}')
                shared[n], shared_comments[n] = values.pop(n), comments[n]
            sections.append((exe, values, comments))
    finally:
        rclpy.try_shutdown()
    out = [HEADER]
    for exe, values, comments in sections:
        if exe in NOTES:
            out.append('# ' + NOTES[exe].replace('\n', '\n# '))
        # `/**/<node>`: launch_ros passes the file to the node unchanged (`--params-file`,
        # launch_ros/actions/node.py `_perform_substitutions`), so rcl matches the key against the
        # node's fully qualified name; a bare `rule_defect_node:` matches only `/rule_defect_node`
        # and `namespace:=cell_2` would drop the section. `/**/` matches any namespace.
        _section(f'/**/{exe}', values, comments, out)
    # `/**` last: rcl merges `-p` arguments and launch overrides into the file's `/**` entry
    # and applies a node's matching entries in file order, so a node section after `/**`
    # would beat every override of that node's own parameters (test_bringup checks it).
    out.append('# ' + SHARED_NOTE.replace('\n', '\n# '))
    _section('/**', dict(sorted(shared.items())), shared_comments, out)
    return '\n'.join(out).rstrip('\n') + '\n'


if __name__ == '__main__':
    sys.stdout.write(render())
