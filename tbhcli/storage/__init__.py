"""Codes on disk: the zarr store (layout, commits, lock) and `tbh index` (image folder -> store)."""
