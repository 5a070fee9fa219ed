"""Benchmarks (see run.py); a package so that bench.server is one module tree for mypy."""
