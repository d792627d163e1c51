"""Test suite of weld_vision_ros (tiers: core without ROS, nodes across processes, bags end to end)."""
