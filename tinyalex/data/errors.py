"""The data layer's one error: a user mistake about data (missing path, unknown layout,
impossible subset...). Commands print its message on one line and exit with status 2,
without a traceback (commands/cli.py); the data layer itself imports no command code."""


class DataError(Exception):
    """A mistake about data the user can fix; its message says what and how."""
