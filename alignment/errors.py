"""The one error type the project raises for problems a user can fix."""

from __future__ import annotations


class AlignmentError(Exception):
    """A problem with the user's input, config or environment.

    The CLI prints the message without a traceback (``debug=true`` shows it). Messages say what was
    wrong, where (file and line, or config key) and what to do.
    """
