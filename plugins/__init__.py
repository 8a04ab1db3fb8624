"""The built-in plugins of sde-bench, installed as ``bench_plugins``.

They load through the entry-point group ``sde_bench`` exactly like a third party's package.
"""
