"""Errors a user can fix. The run prints them as one line instead of a traceback."""


class ConfigError(ValueError):
    """A setting that cannot work (unknown name, impossible value, modules that do not exist)."""


class DataError(ValueError):
    """Data that is missing or malformed (files, columns, labels), or unreachable offline."""
