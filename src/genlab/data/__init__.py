"""LightningDataModules: one module per source, all serving batches from in-memory tensors."""

from genlab.data.spec import DataSpec

__all__ = ["DataSpec"]
