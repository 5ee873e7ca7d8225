"""Measured truth: memory probes, the measurement store, fitting."""
