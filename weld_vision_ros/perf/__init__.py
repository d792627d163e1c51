"""Measuring tools of the benchmarks (benchmarks/): stamps read from CDR bytes, latency and
drop windows, /proc sampling, the report, and the executor probe. No rclpy at import."""
