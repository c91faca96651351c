"""The one error type nvhook raises: a cause and a fix, printed as a single line."""
from __future__ import annotations

# Container values reach the user's terminal through `docker run`: an error line holds no
# control character (escaped as \xNN, \uNNNN), no run of text longer than MAX_VALUE (a value
# is cut there, its length said), and at most MAX_LINE characters each for cause and fix.
MAX_VALUE = 200
MAX_LINE = 1000


class NvhookError(Exception):
    """A failure the user can act on.

    ``cause`` says what went wrong (with the offending value), ``fix`` says what to do.
    ``str()`` gives the one line that reaches the user (through runc's "error running hook"
    message, docker's stderr, or the terminal).
    """

    exit_code = 1

    def __init__(self, cause: str, fix: str = "") -> None:
        super().__init__(cause, fix)
        self.cause = _clean(cause)
        self.fix = _clean(fix)

    def __str__(self) -> str:
        return f"nvhook: {self.cause}" + (f"; fix: {self.fix}" if self.fix else "")


def quote(value: object) -> str:
    """``value`` as an error line shows it: repr(), cut at MAX_VALUE characters."""
    text = repr(value)
    return text if len(text) <= MAX_VALUE else _cut(text)


def _clean(text: str) -> str:
    """One line: whitespace runs made one space, control characters escaped, long runs of
    text (a value) cut, the whole bounded."""
    if len(text) > 64 * MAX_LINE:             # do not even split a multi-megabyte value
        text = text[:32 * MAX_LINE] + " " + text[-MAX_VALUE:]
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if len(text) > MAX_VALUE:
        text = " ".join(w if len(w) <= MAX_VALUE else _cut(w) for w in text.split(" "))
    if len(text) > MAX_LINE:
        text = text[:MAX_LINE] + f"… ({len(text) - MAX_LINE} more characters)"
    return text


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _cut(word: str) -> str:
    return f"{word[:MAX_VALUE]}…({len(word)} characters)"
