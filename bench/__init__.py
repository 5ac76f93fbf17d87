"""Benchmarks: accuracy on unseen classes (``bench.accuracy``); later parity and throughput."""
