"""Errors that the command line turns into one clear message (and exit code 2), never a stack trace."""


class GenlabError(Exception):
    """Base class: a user-facing problem whose message names the problem and the fix."""


class ConfigError(GenlabError, ValueError):
    """An override or configuration value that cannot work (unknown choice, impossible size)."""


class DataError(GenlabError, RuntimeError):
    """A data file or folder that is missing, truncated or corrupt."""
