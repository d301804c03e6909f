"""Benchmarks: speed (TTFT, throughput, memory) and accuracy vs kept tokens."""
