"""Chaos test modules: every experiment in faults/experiments run against the cluster."""
