"""Messages for the user: what went wrong (or right), with the error's code and details.

Core errors (:class:`advgui.core.errors.UserError`) carry a stable ``code`` and ``details``; a front end words
the advice for itself from them (the window offers a checkbox, a field or a button where the command line
would say "--trust-code" or "--resume"). Any other exception becomes a short readable line; unexpected ones
are logged with their traceback.
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("advgui.session")


@dataclass
class Message:
    text: str                       # the message as the core (or the session) worded it
    kind: str = "error"             # error | warning | info
    code: str = ""                  # the core error's code ("needs-trust", "folder-not-empty", …) or ""
    details: dict[str, Any] = field(default_factory=dict)
    context: str = ""               # model | model-b | images | attack | batch | export | harden | settings

    def __str__(self) -> str:
        return self.text


def describe_error(e: BaseException, device: str = "") -> str:
    """A one-paragraph message a user can act on, for any exception from the core or torch."""
    from advgui.core.errors import UserError
    name = type(e).__name__
    text = str(e).strip()
    if isinstance(e, MemoryError) or name == "OutOfMemoryError" or "out of memory" in text.lower():
        where = f" on {device}" if device else ""
        return (f"Out of memory{where}. Try a smaller batch size, fewer restarts or steps, a smaller model, "
                f"or the CPU device. ({text.splitlines()[0] if text else name})")
    if isinstance(e, (UserError, OSError)) or name in ("ValueError", "NonFiniteError"):
        return text or name
    log.error("unexpected error in a background job:\n%s", "".join(traceback.format_exception(e)))
    first = text.splitlines()[0] if text else ""
    return f"{name}: {first}" if first else name


def message_from(e: BaseException, context: str, device: str = "", kind: str = "error") -> Message:
    code = str(getattr(e, "code", "") or "")
    details = dict(getattr(e, "details", {}) or {})
    return Message(describe_error(e, device), kind, code, details, context)
