"""Errors that the command line turns into one clear message (and a non-zero exit), never a stack trace."""

from hydra.errors import CompactHydraException


class GenlabError(Exception):
    """Base class: a user-facing problem whose message names the problem and the fix."""


class ConfigError(GenlabError, ValueError):
    """An override or configuration value that cannot work (unknown choice, impossible size)."""


class DataError(GenlabError, RuntimeError):
    """A data file or folder that is missing, truncated or corrupt."""


class Diverged(GenlabError, RuntimeError):
    """Training produced a non-finite loss, or one that grew by orders of magnitude (``status: diverged``).

    Attributes:
        checkpoint: the last checkpoint with finite weights (``""`` when none was written), set by ``train.py``.
    """

    checkpoint: str = ""


class Interrupted(GenlabError, RuntimeError):
    """Fitting was stopped from outside (SIGTERM, Ctrl+C, a launcher's exit) after saving ``checkpoint``
    (``status: interrupted``; the run resumes with ``ckpt_path=last`` or ``auto``). The exit code is
    ``128 + signal`` (143 for SIGTERM), as a shell reports a process killed by that signal.
    """

    checkpoint: str = ""
    exit_code: int = 143


class JobFailed(CompactHydraException):
    """Raised at the end of a failed multirun job, so that Hydra records the job as failed and goes on with the
    next one; Hydra prints its one-line message when the sweep ends."""
