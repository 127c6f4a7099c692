"""Exceptions that the CLI turns into exit statuses.

``BadInput`` -> exit 2 with a single stderr line naming the file and the problem (no traceback).
``TaskFailed`` -> exit 1 (a task ran but could not complete, or a regression failed).
"""

from __future__ import annotations

from os import PathLike


class BadInput(Exception):
    """The user gave input we cannot use. ``str(exc)`` is the one line printed on stderr."""

    def __init__(self, path: str | PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class TaskFailed(Exception):
    """A task (or a regression check) failed; exit status 1."""
