"""Record a labeled dataset on the cell.

    ros2 launch weld_vision_ros record_dataset.launch.py bag_dir:=/data/bags/weld_2026_11_22
    ros2 launch weld_vision_ros record_dataset.launch.py mode:=capture   # frame-by-frame
    ros2 launch weld_vision_ros record_dataset.launch.py namespace:=cell_2  # /cell_2/camera/...

mode:=stream (default) runs `ros2 bag record` on the camera topics and the label topic
(/weld/label, published by the operator or the robot controller while recording).
mode:=capture starts the dataset capture node instead: each call of its `~/capture`
service writes the latest synchronized frame with the given label into the bag.
`namespace` puts every node in it (their topics are relative, so they become
/<namespace>/camera/...) and records those topics: the bag then holds the namespaced names
(weld-train reads them with data.topics set to them).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from weld_vision_ros.ros.launch_args import (LaunchArgumentError, check_namespace, check_params_file,
                                             check_recorder, dds_environment, recorded_topics)

PACKAGE = 'weld_vision_ros'

ARGUMENTS = (
    ('params_file', PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'weld_cell.yaml']),
     'YAML with every node\'s parameters'),
    ('bag_dir', 'weld_dataset', 'Output bag folder (must not exist yet for stream mode)'),
    ('storage', 'mcap', 'rosbag2 storage: mcap or sqlite3'),
    ('mode', 'stream', 'stream: ros2 bag record; capture: the capture service node'),
    ('use_sim_camera', 'false', 'Start the synthetic camera (to try the recording)'),
    ('namespace', '', 'Namespace of the nodes and of the recorded topics (e.g. cell_2: /cell_2/camera/...)'),
    ('dds_profile', EnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', default_value=PathJoinSubstitution(
        [FindPackageShare(PACKAGE), 'config', 'fastdds_large_shm.xml'])),
     'Fast DDS XML profile (default: FASTDDS_DEFAULT_PROFILES_FILE if set, else the shipped '
     '16 MB shared-memory profile); empty: Fast DDS defaults'),
)


def _actions(context):
    cfg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    try:  # one clear line before anything starts (see weld_vision_ros.ros.launch_args)
        check_params_file(cfg['params_file'])
        sim = check_recorder(cfg['mode'], cfg['storage'], cfg['use_sim_camera'])
        namespace = check_namespace(cfg['namespace'])
        topics = recorded_topics(namespace)   # the dataset layout's relative topics, in the namespace
    except LaunchArgumentError as exc:
        raise RuntimeError(str(exc)) from None
    actions = []
    if cfg['dds_profile']:
        actions += [SetEnvironmentVariable(k, v) for k, v in dds_environment(cfg['dds_profile'])]
    actions += [Node(package=PACKAGE, executable='synthetic_camera_node', namespace=namespace,
                    name='synthetic_camera_node', parameters=[cfg['params_file']], output='screen',
                    condition=IfCondition(str(sim).lower()))]
    if cfg['mode'] == 'stream':
        actions.append(ExecuteProcess(
            cmd=['ros2', 'bag', 'record', '--storage', cfg['storage'], '-o', cfg['bag_dir'], *topics],
            output='screen'))
    else:
        actions.append(Node(package=PACKAGE, executable='dataset_capture_node', namespace=namespace,
                            name='dataset_capture_node',
                            parameters=[cfg['params_file'],
                                        {'bag_dir': cfg['bag_dir'], 'storage': cfg['storage']}],
                            output='screen'))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_actions)])
