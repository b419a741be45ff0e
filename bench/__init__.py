"""Benchmarks of larpix-daq: figures, not tests.

Each ``bench/bench_*.py`` module defines ``TITLE`` and ``run(quick: bool) -> list[Row]``;
``python -m bench [NAME ...] [--quick]`` runs them and prints one table per module.
"""
