"""Benchmarks: `python -m bench.<name>` prints markdown tables of medians and ratios."""
