"""`tbh train`: presets, config and validation (fit) over TBH's training loop (loop)."""
