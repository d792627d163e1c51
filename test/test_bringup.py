"""The launch files, the in-process runner and config/weld_cell.yaml agree with the nodes.

This machine has no ROS 2 launch library, so the launch files are read as Python source
(ast): the executables and node names they start, and the overrides they pass. The nodes
themselves are created for real (rclpy, in this process) with the YAML's values, and what
they declare is compared with the file both ways, by name and by type.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import yaml

from weld_vision_ros.bringup import (CELL_NODES, NODE_CLASSES, WILDCARD, create_nodes, load_params_file, node_class,
                                    node_params)
from weld_vision_ros.ros.rule_params import RULE_PARAMS

REPO = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO / 'config' / 'weld_cell.yaml'
LAUNCH_FILES = sorted((REPO / 'launch').glob('*.launch.py'))
BUILTIN = {'use_sim_time', 'start_type_description_service'}
SHARED_PREFIXES = ('measure.', 'rules.', 'spec.')


def _launch_nodes(path: Path) -> list[dict]:
    """Keyword arguments (literal ones) of every launch_ros `Node(...)` in a launch file."""
    found = []
    for call in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(call, ast.Call) and getattr(call.func, 'id', None) == 'Node':
            kw = {k.arg: k.value for k in call.keywords if k.arg}
            found.append({k: v.value for k, v in kw.items() if isinstance(v, ast.Constant)})
    return found


def _declared(node) -> dict[str, object]:
    return {name: p.type_ for name, p in node._parameters.items() if name not in BUILTIN}


@pytest.fixture(scope='module')
def declared_nodes():
    """Each node created with the YAML's values: its declared parameters and their types."""
    import rclpy
    params = load_params_file(PARAMS_FILE)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    out = {}
    try:
        for exe in NODE_CLASSES:
            node = create_nodes([exe], params, context=ctx)[0]
            out[exe] = (_declared(node), {n: node.get_parameter(n).value for n in _declared(node)})
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    return out


def test_every_executable_the_launch_files_name_exists_and_is_installed():
    installed = REPO / 'install' / 'weld_vision_ros' / 'lib' / 'weld_vision_ros'
    assert LAUNCH_FILES, 'no launch files found'
    for launch in LAUNCH_FILES:
        nodes = _launch_nodes(launch)
        assert nodes, f'{launch.name} starts no Node'
        for kw in nodes:
            exe = kw.get('executable')
            assert exe, f'{launch.name}: a Node without a literal executable'
            assert kw.get('package') in (None, 'weld_vision_ros')
            src = REPO / 'nodes' / exe
            assert src.is_file() and os.access(src, os.X_OK), f'{launch.name}: nodes/{exe} missing or not executable'
            assert (installed / exe).exists(), f'{exe} not installed in {installed} (run scripts/setup.sh)'
            assert exe in NODE_CLASSES, f'{exe} unknown to the in-process runner (bringup.NODE_CLASSES)'
            # The YAML keys are node names: a launch file must not rename a node away from them.
            assert kw.get('name', exe) == exe, f'{launch.name}: {exe} renamed to {kw["name"]}'


def test_the_runner_knows_exactly_the_installed_executables_and_starts_the_cell_nodes():
    on_disk = {p.name for p in (REPO / 'nodes').iterdir() if p.is_file()}
    assert on_disk == set(NODE_CLASSES), f'nodes/ {sorted(on_disk)} vs runner {sorted(NODE_CLASSES)}'
    for exe in on_disk:  # each executable runs the module the runner imports
        module, _ = NODE_CLASSES[exe]
        assert f'from {module} import main' in (REPO / 'nodes' / exe).read_text(), exe
    cell = {kw['executable'] for kw in _launch_nodes(REPO / 'launch' / 'weld_cell.launch.py')}
    assert set(CELL_NODES) <= cell and cell - set(CELL_NODES) == {'synthetic_camera_node', 'weld_report_node',
                                                               'review_recorder_node'}


def test_yaml_parameters_are_declared_by_their_node_with_the_same_type_and_back(declared_nodes):
    from rclpy.parameter import Parameter
    file_params = load_params_file(PARAMS_FILE)
    assert set(file_params) == {f'/**/{exe}' for exe in NODE_CLASSES} | {WILDCARD}, \
        f'weld_cell.yaml sections {sorted(file_params)} vs nodes {sorted(NODE_CLASSES)} and /**'
    shared = file_params[WILDCARD]
    for exe in NODE_CLASSES:
        declared, _ = declared_nodes[exe]
        values = file_params[f'/**/{exe}']
        extra = sorted(set(values) - set(declared))
        missing = sorted(set(declared) - set(values) - set(shared))
        assert not extra, f'{exe}: weld_cell.yaml sets parameters the node does not declare: {extra}'
        assert not missing, (f'{exe}: declared but missing from weld_cell.yaml: {missing} '
                             '(scripts/params_yaml.py regenerates the file)')
        for name, value in node_params(file_params, exe).items():
            if name not in declared:
                continue            # a /** value for the nodes that declare it
            file_type = Parameter(name, value=value).type_
            assert file_type == declared[name], \
                f'{exe}.{name}: {value!r} in the file is {file_type.name}, the node declares {declared[name].name}'


def test_the_yaml_values_are_the_values_the_nodes_run_with(declared_nodes):
    params = load_params_file(PARAMS_FILE)
    for exe in NODE_CLASSES:
        declared, running = declared_nodes[exe]
        for name, value in node_params(params, exe).items():
            if name not in declared:
                continue
            got = running[name]
            got = list(got) if isinstance(got, (list, tuple)) or hasattr(got, 'tolist') else got
            assert got == value, f'{exe}.{name}: file {value!r}, node runs with {got!r}'


def test_rule_core_settings_are_written_once_for_both_cell_nodes(declared_nodes):
    params = load_params_file(PARAMS_FILE)
    shared = params[WILDCARD]
    assert set(shared) == {s.name for s in RULE_PARAMS}, 'the /** section holds exactly the rule core'
    for exe in CELL_NODES:
        assert not [k for k in params[f'/**/{exe}'] if k.startswith(SHARED_PREFIXES)], f'{exe} repeats a shared value'
        assert set(shared) <= set(declared_nodes[exe][0]), f'{exe} does not declare every rule parameter'


def test_launch_overrides_and_runner_options_name_real_parameters(declared_nodes):
    """The ONNX-node overrides both entry points apply (model_path, mode) exist with the types
    they are given as, so neither breaks when the node's parameters change."""
    src = (REPO / 'launch' / 'weld_cell.launch.py').read_text()
    onnx, _ = declared_nodes['onnx_defect_node']
    for name in ('mode', 'model_path'):
        assert f"'{name}'" in src and onnx[name].name == 'STRING'
    assert onnx['models_dir'].name == 'STRING'


def test_a_malformed_params_file_is_refused_with_its_path(tmp_path):
    from weld_vision_ros.bringup import ParamsFileError
    bad = tmp_path / 'bad.yaml'
    for text in ('rule_defect_node: {publish_debug_image: true}\n', '- a\n- b\n', 'x: [unclosed\n'):
        bad.write_text(text)
        with pytest.raises(ParamsFileError, match='bad.yaml'):
            load_params_file(bad)
    nested = tmp_path / 'ns.yaml'
    nested.write_text(yaml.safe_dump({'/cell_2/rule_defect_node': {'ros__parameters': {'spec': {'target_width_mm': 7.5}}}}))
    assert load_params_file(nested) == {'/cell_2/rule_defect_node': {'spec.target_width_mm': 7.5}}


def test_the_params_file_is_what_the_generator_writes_from_the_declared_fields():
    # Descriptions, units and ranges come from the core's fields through the nodes'
    # descriptors; a field changed without regenerating the file fails here.
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(REPO / 'scripts' / 'params_yaml.py')], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == PARAMS_FILE.read_text(), 'config/weld_cell.yaml is stale: run scripts/params_yaml.py'


def test_command_line_overrides_beat_the_params_file_and_the_shared_section_applies():
    # As `ros2 run ... --ros-args --params-file F -p k:=v` and a launch file's override dict
    # (both merged by rcl into the `/**` entry) start a node: the override wins over the
    # node's own section, and the /** rule-core values reach the node.
    import rclpy
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=['--ros-args', '--params-file', str(PARAMS_FILE),
                                  '-p', 'mode:=ml', '-p', 'spec.target_width_mm:=9.5'])
    try:
        node = node_class('onnx_defect_node')(context=ctx)
        try:
            assert node.get_parameter('mode').value == 'ml'
            assert node.get_parameter('spec.target_width_mm').value == 9.5
            shared = load_params_file(PARAMS_FILE)[WILDCARD]
            assert node.get_parameter('measure.plane_inlier_mm').value == shared['measure.plane_inlier_mm']
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


def test_a_namespaced_node_still_gets_its_section_of_the_params_file():
    # launch_ros hands a params file to the node unchanged (`--params-file`, launch_ros
    # actions/node.py `_perform_substitutions`); rcl then matches each YAML key against the
    # node's fully qualified name. So the real rcl match is the check: `namespace:=cell_2`
    # makes the node `/cell_2/onnx_defect_node`, which a bare `onnx_defect_node:` key misses.
    import rclpy
    own = load_params_file(PARAMS_FILE)['/**/onnx_defect_node']
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=['--ros-args', '-r', '__ns:=/cell_2', '--params-file', str(PARAMS_FILE)])
    try:
        node = node_class('onnx_defect_node')(context=ctx)
        try:
            assert node.get_namespace() == '/cell_2'
            assert node.get_parameter('models_dir').value == own['models_dir']
            assert node.get_parameter('hybrid_threshold').value == own['hybrid_threshold']
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


def _launch_arguments(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == 'ARGUMENTS':
            return {elt.elts[0].value: getattr(elt.elts[1], 'value', None) for elt in node.value.elts}
    raise AssertionError(f'{path.name} has no ARGUMENTS')


def test_the_mode_argument_is_empty_by_default_so_the_params_file_chooses_it():
    from weld_vision_ros.ros.launch_args import plan_cell_launch
    assert _launch_arguments(REPO / 'launch' / 'weld_cell.launch.py')['mode'] == ''
    plan = plan_cell_launch({'params_file': str(PARAMS_FILE), 'mode': ''}, str(REPO))
    assert 'mode' not in plan.onnx_overrides
    assert plan_cell_launch({'params_file': str(PARAMS_FILE), 'mode': 'ml'}, str(REPO)).onnx_overrides == {'mode': 'ml'}


@pytest.mark.parametrize('args,message', [
    ({'params_file': '/nonexistent/weld_cell.yaml'}, "params_file '/nonexistent/weld_cell.yaml' is not a file"),
    ({'mode': 'banana'}, "mode must be one of rule, ml, hybrid (or empty: the params file's), got 'banana'"),
    ({'use_sim_camera': 'banana'}, "use_sim_camera must be 'true' or 'false', got 'banana'"),
    ({'camera': 'kinect'}, "camera must be one of default, realsense, orbbec, got 'kinect'"),
    ({'models_dir': '/nonexistent/models'}, "models_dir '/nonexistent/models' is not a directory"),
    ({'report': 'yes'}, "report must be 'true' or 'false', got 'yes'"),
    ({'acceptance_table': '/nonexistent/t.yaml'}, "acceptance_table '/nonexistent/t.yaml' is not a file"),
])
def test_the_cell_launch_file_refuses_bad_arguments_with_one_line_naming_them(args, message):
    from weld_vision_ros.ros.launch_args import LaunchArgumentError, plan_cell_launch
    with pytest.raises(LaunchArgumentError) as info:
        plan_cell_launch({'params_file': str(PARAMS_FILE), **args}, str(REPO))
    assert str(info.value) == message
    # ... and the launch file goes through these checks, before it builds any Node.
    src = (REPO / 'launch' / 'weld_cell.launch.py').read_text()
    assert src.index('plan_cell_launch(') < src.index("Node(executable=")


def test_models_dir_bundled_serves_the_installed_demo_model_and_camera_presets_remap_topics():
    from weld_vision_ros.ros.launch_args import plan_cell_launch
    share = REPO / 'install' / 'weld_vision_ros' / 'share' / 'weld_vision_ros'
    plan = plan_cell_launch({'params_file': str(PARAMS_FILE), 'models_dir': 'bundled',
                             'model_path': 'weld_demo.onnx'}, str(share))
    assert (Path(plan.onnx_overrides['models_dir']) / plan.onnx_overrides['model_path']).is_file()
    # ... and the node's own check accepts it (it resolves symlinks: a symlink install links the
    # installed model into the source tree)
    from weld_vision_ros.core.onnx_classifier import load_classifier
    served = load_classifier(plan.onnx_overrides['model_path'], models_dir=plan.onnx_overrides['models_dir'])
    assert served.version
    rs = dict(plan_cell_launch({'params_file': str(PARAMS_FILE), 'camera': 'realsense',
                                'depth_topic': '/d435/depth'}, str(share)).remaps)
    assert rs['camera/color/image_raw'] == '/camera/camera/color/image_raw'
    assert rs['camera/color/camera_info'] == '/camera/camera/color/camera_info'
    assert rs['camera/aligned_depth_to_color/image_raw'] == '/d435/depth'  # a topic given beats the preset
    default = dict(plan_cell_launch({'params_file': str(PARAMS_FILE)}, str(share)).remaps)
    assert all(k == v for k, v in default.items())


def test_the_report_node_is_optional_and_its_overrides_are_real_parameters(declared_nodes):
    from weld_vision_ros.ros.launch_args import plan_cell_launch
    table = REPO / 'config' / 'acceptance' / 'iso5817_example.yaml'
    assert plan_cell_launch({'params_file': str(PARAMS_FILE)}, str(REPO)).report is False
    plan = plan_cell_launch({'params_file': str(PARAMS_FILE), 'report': 'true',
                             'acceptance_table': str(table), 'reports_dir': '/tmp/r'}, str(REPO))
    assert plan.report and plan.report_overrides == {'acceptance_table': str(table), 'reports_dir': '/tmp/r'}
    report, _ = declared_nodes['weld_report_node']
    assert all(report[k].name == 'STRING' for k in plan.report_overrides)


def test_the_recorder_launch_refuses_stream_mode_without_ros2_bag():
    from weld_vision_ros.ros.launch_args import LaunchArgumentError, check_recorder
    with pytest.raises(LaunchArgumentError, match="no 'ros2' command is on PATH"):
        check_recorder('stream', 'mcap', 'false', which=lambda name: None)
    assert check_recorder('capture', 'mcap', 'true', which=lambda name: None) is True
    assert check_recorder('stream', 'sqlite3', 'false', which=lambda name: '/opt/ros/bin/ros2') is False
    with pytest.raises(LaunchArgumentError, match="storage must be"):
        check_recorder('capture', 'rosbag', 'false')
    src = (REPO / 'launch' / 'record_dataset.launch.py').read_text()
    assert src.index('check_recorder(') < src.index('ExecuteProcess(')


TWO_CELLS = """
/**:
  ros__parameters: {spec: {target_width_mm: 6.0}}
/cell_1/onnx_defect_node:
  ros__parameters: {hybrid_threshold: 0.3, models_dir: /opt/cell_1/models}
/cell_2/onnx_defect_node:
  ros__parameters: {hybrid_threshold: 0.7, models_dir: /opt/cell_2/models}
/*/rule_defect_node:
  ros__parameters: {publish_debug_image: false}
/cell_2/*:
  ros__parameters: {diagnostics_period_s: 2.0}
onnx_defect_node:
  ros__parameters: {hybrid_threshold: 0.5}
"""


@pytest.mark.parametrize('namespace', ['/', '/cell_1', '/cell_2', '/cell_3', '/plant/cell_2'])
def test_two_namespaced_cells_sections_stay_apart_as_rcl_reads_them(tmp_path, namespace):
    """`weld-vision run` selects a node's sections of the params file by matching each key
    against the node's fully qualified name (bringup.key_matches, rcl's documented rule),
    instead of cutting keys down to the bare node name (which merged /cell_1/... and
    /cell_2/... into one). The oracle is rcl itself: each node is also created with the
    file as `--params-file` in that namespace, and both must give every value alike."""
    import rclpy
    from weld_vision_ros.bringup import node_params
    path = tmp_path / 'two_cells.yaml'
    path.write_text(TWO_CELLS)
    params = load_params_file(path)
    assert len(params) == 6           # nothing merged at load
    for exe in ('onnx_defect_node', 'rule_defect_node'):
        ctx, plain = rclpy.Context(), rclpy.Context()
        rclpy.init(context=ctx, args=['--ros-args', '-r', f'__ns:={namespace}', '--params-file', str(path)])
        rclpy.init(context=plain)     # ours: no --params-file, only what create_nodes passes
        try:
            by_rcl = node_class(exe)(context=ctx)
            ours = create_nodes([exe], params, context=plain, namespace=namespace)[0]
            try:
                assert ours.get_namespace() == by_rcl.get_namespace() == namespace
                for name, value in node_params(params, exe, namespace).items():
                    if by_rcl.has_parameter(name):
                        assert by_rcl.get_parameter(name).value == value, (exe, namespace, name)
                        assert ours.get_parameter(name).value == value, (exe, namespace, name)
                for name in ('hybrid_threshold', 'models_dir', 'diagnostics_period_s', 'publish_debug_image'):
                    if by_rcl.has_parameter(name):
                        assert ours.get_parameter(name).value == by_rcl.get_parameter(name).value, (exe, name)
            finally:
                by_rcl.destroy_node()
                ours.destroy_node()
        finally:
            rclpy.try_shutdown(context=ctx)
            rclpy.try_shutdown(context=plain)
    onnx = node_params(params, 'onnx_defect_node', namespace)
    expected = {'/': 0.5, '/cell_1': 0.3, '/cell_2': 0.7}.get(namespace)
    assert onnx.get('hybrid_threshold') == expected
    assert onnx['spec.target_width_mm'] == 6.0


def test_weld_vision_run_takes_a_namespace_for_every_node():
    from weld_vision_ros.bringup import build_parser
    assert build_parser().parse_args(['--namespace', 'cell_2']).namespace == 'cell_2'
    src = (REPO / 'weld_vision_ros' / 'bringup.py').read_text()
    assert 'rsplit(' not in src, 'a params-file key must never be cut down to the bare node name'


def test_the_recorder_launch_takes_a_namespace_and_records_the_namespaced_topics():
    from weld_vision_ros.ros import codec
    from weld_vision_ros.ros.launch_args import LaunchArgumentError, check_namespace, recorded_topics
    assert 'namespace' in _launch_arguments(REPO / 'launch' / 'record_dataset.launch.py')
    assert recorded_topics('') == ['/camera/color/image_raw', '/camera/aligned_depth_to_color/image_raw',
                                   '/camera/color/camera_info', '/weld/label']
    assert recorded_topics('cell_2') == [f'/cell_2/{t}' for t in (codec.COLOR_TOPIC, codec.DEPTH_TOPIC,
                                                                   codec.CAMERA_INFO_TOPIC, codec.LABEL_TOPIC)]
    assert recorded_topics('/plant/cell_2/') == [f'/plant/cell_2/{t}' for t in (
        codec.COLOR_TOPIC, codec.DEPTH_TOPIC, codec.CAMERA_INFO_TOPIC, codec.LABEL_TOPIC)]
    for bad in ('cell 2', '2cell', 'cell-2', 'a//b'):
        with pytest.raises(LaunchArgumentError, match='namespace'):
            check_namespace(bad)
    # Every node the recorder starts is in the namespace, and ros2 bag records those topics.
    for kw in (n for n in _launch_node_keywords(REPO / 'launch' / 'record_dataset.launch.py')):
        assert 'namespace' in kw, f'a Node in record_dataset.launch.py has no namespace: {kw}'
    src = (REPO / 'launch' / 'record_dataset.launch.py').read_text()
    assert 'recorded_topics(' in src and 'RECORDED_TOPICS' not in src.split('def _actions')[1]


def _launch_node_keywords(path: Path) -> list[set]:
    return [{k.arg for k in call.keywords if k.arg}
            for call in ast.walk(ast.parse(path.read_text())) if isinstance(call, ast.Call)
            and getattr(call.func, 'id', None) == 'Node']
