"""Weld-cell bringup: rule node, ONNX node (hybrid by default), optional synthetic camera.

    ros2 launch weld_vision_ros weld_cell.launch.py
    ros2 launch weld_vision_ros weld_cell.launch.py use_sim_camera:=true
    ros2 launch weld_vision_ros weld_cell.launch.py model_path:=/opt/weld/models/v3.onnx mode:=ml
    ros2 launch weld_vision_ros weld_cell.launch.py namespace:=cell_2 \
        color_topic:=/cam2/color/image_raw depth_topic:=/cam2/aligned_depth_to_color/image_raw \
        camera_info_topic:=/cam2/color/camera_info

Every node reads its parameters from one YAML file (params_file, default
config/weld_cell.yaml); the arguments below override single values. The inference
nodes respawn if they die.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from weld_vision_ros.core.cascade import MODES
from weld_vision_ros.ros import codec

PACKAGE = 'weld_vision_ros'

ARGUMENTS = (
    ('params_file', PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'weld_cell.yaml']),
     'YAML with every node\'s parameters (node_name: ros__parameters: ...)'),
    ('namespace', '', 'Namespace for all nodes and their relative topics'),
    ('use_sim_camera', 'false', 'Start the synthetic RGB-D camera instead of a real one'),
    ('color_topic', codec.COLOR_TOPIC, 'Color image topic (rgb8/bgr8)'),
    ('depth_topic', codec.DEPTH_TOPIC, 'Depth aligned to color (16UC1 mm or 32FC1 m)'),
    ('camera_info_topic', codec.CAMERA_INFO_TOPIC, 'Color camera_info topic'),
    ('model_path', '', 'ONNX model for the ONNX node; empty keeps the params file value'),
    ('mode', '', 'ONNX node mode: rule, ml or hybrid; empty keeps the params file value'),
    ('log_level', 'info', 'Log level of every node'),
    ('dds_profile', EnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', default_value=PathJoinSubstitution(
        [FindPackageShare(PACKAGE), 'config', 'fastdds_large_shm.xml'])),
     'Fast DDS XML profile of the nodes (default: FASTDDS_DEFAULT_PROFILES_FILE if set, else '
     'the shipped 16 MB shared-memory profile that RGB-D frames need); empty: Fast DDS defaults'),
)


def _nodes(context):
    cfg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params_file = cfg['params_file']
    # Fail at launch with one clear line instead of nodes respawning on a bad value or
    # running on code defaults (launch_ros only warns about a missing params file).
    if not os.path.isfile(params_file):
        raise RuntimeError(f'params_file {params_file!r} is not a file')
    if cfg['mode'] not in ('',) + tuple(MODES):
        raise RuntimeError(f"mode must be one of {', '.join(MODES)} (or empty: the params file's), got {cfg['mode']!r}")
    if cfg['use_sim_camera'].lower() not in ('true', 'false'):
        raise RuntimeError(f"use_sim_camera must be 'true' or 'false', got {cfg['use_sim_camera']!r}")
    remaps = [(codec.COLOR_TOPIC, cfg['color_topic']), (codec.DEPTH_TOPIC, cfg['depth_topic']),
              (codec.CAMERA_INFO_TOPIC, cfg['camera_info_topic'])]
    ros_args = ['--ros-args', '--log-level', cfg['log_level']]
    onnx_overrides = {'mode': cfg['mode']} if cfg['mode'] else {}
    if cfg['model_path']:
        onnx_overrides['model_path'] = cfg['model_path']
    env = []
    if cfg['dds_profile']:
        env.append(SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', cfg['dds_profile']))
    common = dict(package=PACKAGE, namespace=cfg['namespace'], output='screen', arguments=ros_args)
    return env + [
        Node(executable='synthetic_camera_node', name='synthetic_camera_node',
             parameters=[params_file], remappings=remaps,
             condition=IfCondition(cfg['use_sim_camera']), **common),
        Node(executable='rule_defect_node', name='rule_defect_node', parameters=[params_file],
             remappings=remaps, respawn=True, respawn_delay=2.0, **common),
        Node(executable='onnx_defect_node', name='onnx_defect_node',
             parameters=[params_file, onnx_overrides], remappings=remaps, respawn=True,
             respawn_delay=2.0, **common),
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)])
