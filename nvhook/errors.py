"""The one error type nvhook raises: a cause and a fix, printed as a single line."""
from __future__ import annotations


class NvhookError(Exception):
    """A failure the user can act on.

    ``cause`` says what went wrong (with the offending value), ``fix`` says what to do.
    ``str()`` gives the one line that reaches the user (through runc's "error running hook"
    message, docker's stderr, or the terminal).
    """

    exit_code = 1

    def __init__(self, cause: str, fix: str = "") -> None:
        super().__init__(cause, fix)
        self.cause = " ".join(cause.split())
        self.fix = " ".join(fix.split())

    def __str__(self) -> str:
        return f"nvhook: {self.cause}" + (f"; fix: {self.fix}" if self.fix else "")
