"""Benchmarks: each prints a table and JSON, every figure beside a baseline measured in the same run."""
