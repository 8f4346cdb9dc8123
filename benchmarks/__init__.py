"""Benchmarks: scripts that print tables of ratios measured in the same run."""
