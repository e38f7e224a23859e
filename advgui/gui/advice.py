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
        if code in ("passphrase-needed", "wrong-passphrase"):
            # also after a restart: the remembered model is encrypted and its passphrase is never remembered
            return (f"{_name(path)} is encrypted"
                    + (": that passphrase does not open it" if code == "wrong-passphrase" else "")
                    + ". Give its passphrase in the Open model dialog; it is decrypted in memory only.",
                    [("Enter the passphrase…", lambda: open_dialog(path=str(path)))])
        if code == "onnx-dynamic-shape":
            return (f"{_name(path)} does not fix its input size. Choose one in the Open model dialog.",
                    [("Choose the input size…", lambda: open_dialog(path=str(path)))])
        if code == "needs-extra":
            extra = d.get("extra", "models")
            return (f"This model needs the optional '{extra}' packages. Install them with: "
                    f"pip install 'advgui[{extra}]', then open it again.", [])
    if code == "generator-missing":
        return ("AdvGAN needs a generator file: choose one under Generator in the Attack panel, or train one in "
                "the GAN tab.", [])
    if code == "black-box-only":
        return (f"{d.get('attack', 'This attack')} needs gradients, which this model does not have "
                f"({d.get('reason') or 'it runs outside torch'}). Choose a score-based attack such as Square.", [])
    return msg.text, []


def folder_question(msg: Message) -> tuple[str, list[tuple[str, str, QMessageBox.ButtonRole]]]:
    """The question to ask when an export folder is in use: text and (label, mode, role) buttons; modes are
    resume-recorded (its own recorded settings), resume (the current ones), overwrite and other."""
    d, code = msg.details, msg.code
    yes = QMessageBox.ButtonRole.AcceptRole
    danger = QMessageBox.ButtonRole.DestructiveRole
    other = ("Choose another folder…", "other", yes)
    if code == "parameters-differ":
        return (f"This folder holds an interrupted export made with a different {d.get('key', 'setting')} "
                f"({d.get('recorded')!r} there, {d.get('requested')!r} now).\n\n"
                "Resume it with the settings it recorded, or overwrite it with the current ones?",
                [("Resume with its settings", "resume-recorded", yes), ("Overwrite", "overwrite", danger), other])
    if code == "folder-not-empty" and (d.get("export") or {}).get("encrypted"):
        return ("This folder holds an encrypted advgui export (written with --encrypt). The window does not write "
                "encrypted exports: continue it on the command line (advgui attack … --resume, with its "
                "passphrase), or choose another folder.", [other])
    if code == "folder-not-empty" and d.get("export"):
        ex = d["export"]
        run = ex.get("run") or {}
        what = "a complete" if ex.get("complete") else "an interrupted"
        return (f"This folder holds {what} advgui export ({run.get('attack', '?')}, seed {run.get('seed', '?')}; "
                f"{ex.get('images', '?')} images written).\n\n"
                + ("Resume it with the settings it recorded, or overwrite it?" if not ex.get("complete") else
                   "Overwrite it (only the files its manifest lists are deleted)?"),
                ([("Resume", "resume-recorded", yes)] if not ex.get("complete") else [])
                + [("Overwrite", "overwrite", danger), other])
    if code == "folder-not-empty":
        found = ", ".join(map(str, (d.get("found") or [])[:5]))
        return (f"This folder is not empty and was not written by advgui{f' (it holds {found})' if found else ''}."
                "\n\nadvgui never deletes files it did not write. Choose another (or a new, empty) folder.", [other])
    if code == "folder-locked":
        return (f"Another advgui (process {d.get('pid', '?')} on {d.get('host', '?')}) is writing to this folder "
                "right now. Wait for it to finish, or choose another folder.", [other])
    if code == "unlisted-files":
        found = ", ".join(map(str, (d.get("found") or [])[:5]))
        return (f"This export folder also holds files advgui did not write ({found}); it will not delete them. "
                "Move them away, or choose another folder.", [other])
    if code in ("output-inside-input", "input-inside-output"):
        return ("The export folder and the image folder are inside each other: the export would be read back "
                "as images. Choose a folder outside the images.", [other])
    return msg.text, [other]
