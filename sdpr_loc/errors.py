"""The project's error base for problems the user can fix (a file, a map, a model, an argument).

``sdpr-loc`` reports a :class:`UserError` as one line and exit status 2 instead of a traceback;
anything else is a bug and keeps its traceback. Error families (``BagError``, ``MapError``,
``CheckpointError``, ``ModelError``) also derive from ``ValueError``, so ``except ValueError``
code keeps working.
"""
from __future__ import annotations

__all__ = ["UserError", "UsageError"]


class UserError(Exception):
    """Bad input from the user; the message names the file or argument and the problem."""


class UsageError(UserError, ValueError):
    """An argument or parameter value that parses but cannot be used (unknown method, bad device)."""
