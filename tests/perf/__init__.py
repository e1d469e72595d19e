"""Benchmarks, run on demand (python -m tests.perf.bench); not part of the unit suite."""
