"""The one exception type for mistakes a user can fix (bad paths, shapes, options)."""


class TbhError(Exception):
    """A user error: the CLI prints its message as one red line and exits with status 1.

    Write the message as one sentence that says what went wrong and what to do next.
    Programming errors must not use this type, so they keep their tracebacks.
    """
