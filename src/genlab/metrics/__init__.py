"""Metrics: likelihood units and evaluation helpers."""
