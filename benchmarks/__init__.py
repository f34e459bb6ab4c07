"""Benchmark scripts: speed, memory and design-choice measurements (run with ``python benchmarks/NAME.py``)."""
