"""Benchmark scripts (run as ``python -m tests.benchmarks.NAME``; not collected by pytest)."""
