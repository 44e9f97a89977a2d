"""Errors a user can fix. The run prints them as one line instead of a traceback."""
import math


class ConfigError(ValueError):
    """A setting that cannot work (unknown name, impossible value, modules that do not exist)."""


class DataError(ValueError):
    """Data that is missing or malformed (files, columns, labels), or unreachable offline."""


def is_int(v) -> bool:
    """An integer setting (YAML's ``true`` is a bool, not a count)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite real-valued setting (an int or a float; not a bool, not a string such as ``abc``, not
    nan or inf, which every range check would otherwise let through or turn into a silent no-op)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
