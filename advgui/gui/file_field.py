"""A file parameter of an attack in the Attack panel (an AdvGAN generator): a path field with a browse button, and
under it one line about the chosen file — or why it cannot be used — as plain text."""
from __future__ import annotations

from typing import Any, Optional

from PySide6.QtWidgets import QVBoxLayout, QWidget

from advgui.session.attack_settings import FieldSpec

from .widgets import ElidedLabel, PathEdit


class FileField(QWidget):
    """A file parameter of an attack (an AdvGAN generator): a path field with a browse button, and under it one
    line about the chosen file (plain text), or why it cannot be used."""

    def __init__(self, f: FieldSpec, chosen: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(1)
        self.path = PathEdit("choose a file…", f.file_filter)
        self.path.chosen.connect(chosen)
        self.info = ElidedLabel("")
        self.info.setStyleSheet("color: palette(placeholder-text);")
        lay.addWidget(self.path)
        lay.addWidget(self.info)
        self.ok = True

    def show_value(self, path: str, info: str, ok: bool) -> None:
        if self.path.text() != path:
            self.path.setText(path)
        self.ok = ok
        self.info.setText(info if path else "no file chosen")
        self.info.setStyleSheet("color: palette(placeholder-text);" if ok else "color: #c62828;")
