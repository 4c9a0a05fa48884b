"""`tbh train`: options and run config (config), held-out validation (validation), early stopping
(stopping), TBH's loop (loop), TBH against the baselines (compare), what it prints (report), and
the verb that strings them together (fit)."""
