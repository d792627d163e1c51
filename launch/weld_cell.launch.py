"""Weld-cell bringup: rule node, ONNX node (hybrid by default), optional synthetic camera.

    ros2 launch weld_vision_ros weld_cell.launch.py
    ros2 launch weld_vision_ros weld_cell.launch.py use_sim_camera:=true
    ros2 launch weld_vision_ros weld_cell.launch.py model_path:=/opt/weld/models/v3.onnx mode:=ml
    ros2 launch weld_vision_ros weld_cell.launch.py models_dir:=bundled model_path:=weld_demo.onnx
    ros2 launch weld_vision_ros weld_cell.launch.py camera:=realsense   # realsense-ros 4.x topics
    ros2 launch weld_vision_ros weld_cell.launch.py dashboard:=true \
        dashboard_args:='--token-file /etc/weld/dashboard.token'     # operator page on :8090
    ros2 launch weld_vision_ros weld_cell.launch.py report:=true \
        acceptance_table:=/opt/weld/acceptance/level_c_checked.yaml reports_dir:=/var/lib/weld/reports
    ros2 launch weld_vision_ros weld_cell.launch.py namespace:=cell_2 \
        color_topic:=/cam2/color/image_raw depth_topic:=/cam2/aligned_depth_to_color/image_raw \
        camera_info_topic:=/cam2/color/camera_info

Every node reads its parameters from one YAML file (params_file, default
config/weld_cell.yaml); the arguments below override single values. The arguments are
checked before anything starts (weld_vision_ros.ros.launch_args): a bad one stops the
launch with one line naming it. The inference nodes respawn if they die.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from weld_vision_ros.ros import codec
from weld_vision_ros.ros.launch_args import CAMERA_PRESETS, LaunchArgumentError, dds_environment, plan_cell_launch

PACKAGE = 'weld_vision_ros'

ARGUMENTS = (
    ('params_file', PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'weld_cell.yaml']),
     'YAML with every node\'s parameters (/**/node_name: ros__parameters: ...)'),
    ('namespace', '', 'Namespace for all nodes and their relative topics'),
    ('use_sim_camera', 'false', 'Start the synthetic RGB-D camera instead of a real one'),
    ('camera', 'default', 'Camera topic preset: ' + ', '.join(CAMERA_PRESETS)
     + ' (realsense: realsense-ros 4.x /camera/camera/...; orbbec: OrbbecSDK_ROS2)'),
    ('color_topic', '', f'Color image topic (rgb8/bgr8); empty: the preset\'s ({codec.COLOR_TOPIC})'),
    ('depth_topic', '', f'Depth aligned to color (16UC1 mm or 32FC1 m); empty: the preset\'s ({codec.DEPTH_TOPIC})'),
    ('camera_info_topic', '', f'Color camera_info topic; empty: the preset\'s ({codec.CAMERA_INFO_TOPIC})'),
    ('model_path', '', 'ONNX model for the ONNX node; empty keeps the params file value'),
    ('models_dir', '', 'Directory the ONNX node may load models from; empty keeps the params '
     'file value; bundled: the installed config/models (with weld_demo.onnx)'),
    ('mode', '', 'ONNX node mode: rule, ml or hybrid; empty keeps the params file value'),
    ('report', 'false', 'Start the per-weld report node (weld/event, camera/pose -> weld/report)'),
    ('acceptance_table', '', 'Acceptance table YAML the reports are graded against; empty keeps the '
     'params file value (config/acceptance/iso5817_example.yaml is an example to check)'),
    ('reports_dir', '', 'Folder the reports are written to; empty keeps the params file value'),
    ('review', 'false', 'Start the review recorder (frames where rules and model disagree, low '
     'confidence, unknown appearance -> review bags for labelling)'),
    ('log_level', 'info', 'Log level of every node'),
    ('dashboard', 'false', 'Also serve the operator dashboard (weld-vision dashboard, its own process, '
     'on 127.0.0.1:8090 by default); the rule node then publishes the annotated debug image'),
    ('dashboard_args', '', "Arguments of the dashboard, e.g. '--port 8090 --token-file FILE "
     "--models-dir /opt/weld/models' (weld-vision dashboard --help)"),
    ('dds_profile', EnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', default_value=PathJoinSubstitution(
        [FindPackageShare(PACKAGE), 'config', 'fastdds_large_shm.xml'])),
     'Fast DDS XML profile of the nodes (default: FASTDDS_DEFAULT_PROFILES_FILE if set, else '
     'the shipped 16 MB shared-memory profile that RGB-D frames need); empty: Fast DDS defaults'),
)


def _nodes(context):
    cfg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    try:
        plan = plan_cell_launch(cfg, FindPackageShare(PACKAGE).perform(context))
    except LaunchArgumentError as exc:
        raise RuntimeError(str(exc)) from None
    params_file, remaps = plan.params_file, plan.remaps
    ros_args = ['--ros-args', '--log-level', cfg['log_level']]
    env = []
    if cfg['dds_profile']:
        env += [SetEnvironmentVariable(k, v) for k, v in dds_environment(cfg['dds_profile'])]
    common = dict(package=PACKAGE, namespace=cfg['namespace'], output='screen', arguments=ros_args)
    dashboard = ([ExecuteProcess(cmd=plan.dashboard_cmd, name='weld_dashboard', output='screen')]
                 if plan.dashboard_cmd else [])
    return env + dashboard + [
        Node(executable='synthetic_camera_node', name='synthetic_camera_node',
             parameters=[params_file], remappings=remaps,
             condition=IfCondition(str(plan.use_sim_camera).lower()), **common),
        Node(executable='rule_defect_node', name='rule_defect_node',
             parameters=[params_file, plan.rule_overrides],
             remappings=remaps, respawn=True, respawn_delay=2.0, **common),
        Node(executable='onnx_defect_node', name='onnx_defect_node',
             parameters=[params_file, plan.onnx_overrides], remappings=remaps, respawn=True,
             respawn_delay=2.0, **common),
        Node(executable='weld_report_node', name='weld_report_node',
             parameters=[params_file, plan.report_overrides], respawn=True, respawn_delay=2.0,
             condition=IfCondition(str(plan.report).lower()), **common),
        Node(executable='review_recorder_node', name='review_recorder_node', parameters=[params_file],
             remappings=remaps, respawn=True, respawn_delay=2.0,
             condition=IfCondition(str(plan.review).lower()), **common),
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)])
