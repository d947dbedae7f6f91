"""Helpers shared by the entry points (train, eval, sample)."""
