"""tbh's tests; the helper modules (tiny_workspace, code_stores) are imported as `tests.NAME`."""
