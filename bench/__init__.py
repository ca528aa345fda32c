"""Benchmarks, each run as a module from the repository root: `python -m bench.claim`, ...

Each measures its own baseline in the same run. `bench.targets` holds the apps `bench.api`
serves beside the real one.
"""
