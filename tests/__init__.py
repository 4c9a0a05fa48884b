"""tbh's tests; helpers (tiny_workspace, code_stores, servers) are imported as `tests.NAME`."""
