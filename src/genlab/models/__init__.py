"""Generative models, one module per family, all implementing ``genlab.models.base.GenerativeModel``."""
