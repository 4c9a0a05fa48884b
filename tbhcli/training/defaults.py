"""Defaults of `tbh train` shared by the CLI, the Python verb and the options (imports nothing)."""

PRESET = "fast"
VAL_FRACTION = 0.1  # of the training features, held out for validation
VAL_EVERY = 100  # steps between validations
PATIENCE = 300  # steps without a held-out gain before stopping
MIN_STEPS = 500  # never stop before this step
