"""Simulators with ground truth, one module per task."""
