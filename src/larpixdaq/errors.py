"""Exceptions shared across the package.

Every error raised at an edge (a file, a socket, the command line) says what was wrong and,
where there is one, what to do about it.
"""

from __future__ import annotations


class LarpixDaqError(Exception):
    """Base class of every error this package raises on purpose."""


class CommandError(LarpixDaqError):
    """A command-line command failed; the message is shown as a one-line reason."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class FormatError(LarpixDaqError, ValueError):
    """Input bytes or a file do not follow the format they claim to."""


class ConfigError(LarpixDaqError, ValueError):
    """A chip or network configuration names an unknown register or an out-of-range value."""
