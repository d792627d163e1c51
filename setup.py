"""pip install of the parts of weld_vision_ros that need no ROS 2.

`pip install .` on a desktop without ROS gives `weld_training` (bags -> dataset ->
training -> ONNX export) and the ROS-free core of `weld_vision_ros` (synthetic camera,
measurement, rules, ONNX inference), with their command-line tools. On the weld cell the
package is built with colcon from CMakeLists.txt instead, which adds the messages and nodes.
"""
from setuptools import find_packages, setup

setup(
    name='weld_vision_ros',
    version='0.1.0',
    description='Weld inspection for robotic weld cells: RGB-D measurement, defect '
                'classification, synthetic camera and training.',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['weld_vision_ros', 'weld_vision_ros.*',
                                    'weld_training', 'weld_training.*']),
    package_data={'weld_training': ['configs/*.yaml'], 'weld_vision_ros.dashboard': ['static/*']},
    data_files=[('share/weld_vision_ros/msg', ['msg/DefectRegion.msg', 'msg/BeadMeasurement.msg',
                                               'msg/WeldDefect.msg', 'msg/WeldLabel.msg',
                                               'msg/WeldGroundTruth.msg']),
                # Found at run time through weld_vision_ros.resources (prefix/share/...).
                ('share/weld_vision_ros/config', ['config/weld_cell.yaml', 'config/fastdds_large_shm.xml']),
                ('share/weld_vision_ros/config/models', ['config/models/weld_demo.onnx',
                                                         'config/models/weld_demo.md'])],
    install_requires=['numpy', 'opencv-python-headless', 'PyYAML', 'rosbags'],
    extras_require={
        'onnx': ['onnxruntime', 'onnx'],
        'dashboard': ['fastapi', 'uvicorn'],
        'train': ['torch', 'torchvision', 'onnx', 'onnxruntime', 'onnxscript', 'tensorboard',
                  'matplotlib', 'tqdm'],
    },
    entry_points={
        'console_scripts': [
            'weld-vision = weld_vision_ros.cli:main',
            'weld-sim = weld_vision_ros.simulator.sim_record:main',
            'weld-train = weld_training.cli:main',
        ],
    },
)
