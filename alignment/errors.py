"""The one error type the project raises for problems a user can fix."""

from __future__ import annotations


class AlignmentError(Exception):
    """A problem with the user's input, config or environment.

    The CLI prints the message without a traceback (``debug=true`` shows it). Messages say what was
    wrong, where (file and line, or config key) and what to do.
    """


class RunInterrupted(AlignmentError):
    """The user stopped a run with Ctrl-C (SIGINT). The message says what was kept and how to resume.

    ``exit_code`` 130 is the shell's code for a process ended by SIGINT (128 + 2).
    """

    exit_code = 130
