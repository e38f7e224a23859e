"""User-facing errors: one base class with a stable ``code`` and the ``details`` a front end needs.

``str(error)`` is the message the command line prints (one line naming the file and the reason, with the
command-line advice: "pass --resume ..."). ``code`` is a short stable identifier and ``details`` a dict of
plain values (paths, counts, option names), so the window can word the same problem as a checkbox, a
field or a button instead of repeating command-line flags. Codes in use are listed in docs/errors.md.
"""
from __future__ import annotations

from typing import Any


class UserError(ValueError):
    """A problem the user can fix (bad file, bad parameter, folder in use); never a bug of ours."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details

    @property
    def message(self) -> str:
        return str(self)
