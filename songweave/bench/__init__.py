"""Benchmarks of the training step, the loader and the arrangement (speed and memory, never
checked by timed tests)."""
