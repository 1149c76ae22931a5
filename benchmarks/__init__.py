"""Benchmarks of the weekly pipeline against the source database's own floor (``python -m
benchmarks.run``)."""
