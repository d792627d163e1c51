"""Benchmarks of weld_vision_ros (each `bench_*.py` is a script; helpers live beside them)."""
