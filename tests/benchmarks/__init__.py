"""Speed benchmarks, not correctness tests.

``test_step_cost.py`` is the pytest-benchmark suite (collected; the default run disables timing,
so it is a quick smoke test); the other modules are scripts, run as
``python -m tests.benchmarks.NAME``.
"""
