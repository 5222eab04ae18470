"""Errors a user can act on.

Every stage raises :class:`OmniError` for bad input (a missing file, a wrong
column, an unknown option value). The CLI prints its message as one line and exits
with ``exit_code``; anything else is a bug and gets a traceback under ``--debug``.
"""
from __future__ import annotations


class OmniError(Exception):
    """A problem with the user's input or workspace, reported as one line."""

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
