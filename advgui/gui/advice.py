"""The window's own wording for problems the core reports with a code (see docs/errors.md).

The core's message is worded for the command line ("re-run with --trust-code", "pass --resume"). In the
window the answer is a checkbox, a field or a button, so each code known here gets a sentence and, where
one click can answer it, a banner button. Unknown codes show the core's message as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PySide6.QtWidgets import QMessageBox

from advgui.session import Message, Session

Action = tuple[str, Callable[[], Any]]


def _name(p: Any) -> str:
    return Path(str(p)).name if p else "the file"


def banner(session: Session, msg: Message, open_dialog: Callable[..., Any]) -> tuple[str, list[Action]]:
    """(text, buttons) for the banner."""
    d, code = msg.details, msg.code
    path = d.get("path") or d.get("file") or ""
    if msg.context in ("model", "model-b"):
        if code == "needs-trust":
            what = {"torchscript": "a TorchScript program", "pickle": "a pickled Python object",
                    "hf-remote-code": "a Hugging Face model with its own code"}.get(d.get("format"), "a file with code")
            return (f"{_name(path)} is {what}: opening it runs code from the file, so advgui did not open it. "
                    "Open it only if you trust where it came from.",
                    [("Open it anyway…", lambda: open_dialog(path=str(path)))])
        if code == "needs-arch":
            guess = (d.get("guesses") or [""])[0]
            return (f"{_name(path)} holds only weights (a state_dict)"
                    + (f"; they look like {guess.split(':', 1)[-1]}" if guess else "")
                    + ". Choose the architecture they belong to.",
                    [("Choose the architecture…", lambda: open_dialog(path=str(path)))])
        if code in ("needs-weights", "download-refused", "download-failed"):
            arch = str(d.get("arch", "")).split(":", 1)[-1]
            return (f"The pretrained weights of {arch or 'this architecture'} are not on this computer"
                    + (f" (expected at {d['cache_path']})" if d.get("cache_path") else "")
                    + ". Choose a weights file, or allow the download.",
                    [("Open model…", lambda: open_dialog(arch=str(d.get("arch", ""))))])
        if code == "onnx-dynamic-shape":
            return (f"{_name(path)} does not fix its input size. Choose one in the Open model dialog.",
                    [("Choose the input size…", lambda: open_dialog(path=str(path)))])
        if code == "needs-extra":
            extra = d.get("extra", "models")
            return (f"This model needs the optional '{extra}' packages. Install them with: "
                    f"pip install 'advgui[{extra}]', then open it again.", [])
    if code == "black-box-only":
        return (f"{d.get('attack', 'This attack')} needs gradients, which this model does not have "
                f"({d.get('reason') or 'it runs outside torch'}). Choose a score-based attack such as Square.", [])
    return msg.text, []


def folder_question(msg: Message) -> tuple[str, list[tuple[str, str, QMessageBox.ButtonRole]]]:
    """The question to ask when an export folder is in use: text and (label, mode, role) buttons."""
    d = msg.details
    yes = QMessageBox.ButtonRole.AcceptRole
    danger = QMessageBox.ButtonRole.DestructiveRole
    if msg.code == "parameters-differ":
        key, old, new = d.get("key", "settings"), d.get("old"), d.get("new")
        return (f"This folder holds an interrupted export made with a different {key} ({old!r} there, {new!r} now).\n\n"
                "Resume it with the settings it recorded, or overwrite it with the current ones?",
                [("Resume with its settings", "resume-recorded", yes), ("Overwrite", "overwrite", danger)])
    state = d.get("state") or {}
    if state:
        run = state.get("run") or {}
        done, total = state.get("done", "?"), state.get("total", "?")
        return (f"This folder holds an interrupted advgui export ({run.get('attack', '?')}, seed {run.get('seed', '?')}"
                f"; {done} of {total} images written).\n\nResume it with the settings it recorded, or overwrite it?",
                [("Resume", "resume-recorded", yes), ("Overwrite", "overwrite", danger)])
    if d.get("advgui_export", True) is False or msg.code == "not-an-advgui-export":
        found = ", ".join(map(str, d.get("found", [])[:5]))
        return (f"This folder is not empty and was not written by advgui{f' (it holds {found})' if found else ''}.\n\n"
                "advgui never deletes files it did not write. Choose another (or a new, empty) folder.",
                [("Choose another folder…", "other", yes)])
    return (f"{msg.text}\n\nResume the earlier export, or overwrite what advgui wrote there?",
            [("Resume", "resume", yes), ("Overwrite", "overwrite", danger), ("Choose another folder…", "other", yes)])
