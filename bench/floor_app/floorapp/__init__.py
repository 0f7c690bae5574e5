"""Flower's floor for bench/perf.py: same rounds and nodes as fedheart, clients that do no work."""
