"""Retrieval quality: metrics as pure functions over rankings, and `tbh evaluate`."""
