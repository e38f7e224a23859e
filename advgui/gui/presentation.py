"""Presentation mode: full screen, large type, the three images with their confidence bars, and one key to
attack the next image. It shows the same DisplayState as the Explore views; every text is plain text."""
from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QPalette, QPixmap
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from advgui.session.display import DisplayState, fmt_prob

from .display import diff_rgb, qimage, to_display, to_uint8
from .widgets import ConfidenceBars, ElidedLabel


class _Picture(QLabel):
    """An image that keeps its aspect ratio and scales with the window (nearest-neighbour for tiny inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setMinimumSize(120, 120)
        self._pm: Optional[QPixmap] = None

    def set_array(self, arr) -> None:
        self._pm = None if arr is None else QPixmap.fromImage(qimage(arr))
        self._rescale()

    def resizeEvent(self, ev) -> None:  # noqa: N802
        super().resizeEvent(ev)
        self._rescale()

    def _rescale(self) -> None:
        if self._pm is None:
            self.clear()
            return
        small = max(self._pm.width(), self._pm.height()) * 2 < min(self.width(), self.height())
        self.setPixmap(self._pm.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                       Qt.TransformationMode.FastTransformation if small
                                       else Qt.TransformationMode.SmoothTransformation))


class PresentationWindow(QWidget):
    next_requested = Signal()
    closed = Signal()

    TITLES = ("What the model sees", "After a tiny change", "The change")

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("advgui — presentation")
        pal = self.palette()
        for role, color in ((QPalette.ColorRole.Window, "#111418"), (QPalette.ColorRole.WindowText, "#f1f3f4"),
                            (QPalette.ColorRole.Mid, "#5f6368")):
            pal.setColor(role, QColor(color))
        self.setPalette(pal)
        self.setAutoFillBackground(True)
        base = QFont(self.font())
        base.setPointSizeF(max(16.0, base.pointSizeF() * 1.8))
        self.setFont(base)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(40, 30, 40, 24)
        self.title = QLabel("Can a tiny change fool a neural network?")
        tf = QFont(base)
        tf.setPointSizeF(base.pointSizeF() * 1.6)
        tf.setBold(True)
        self.title.setFont(tf)
        self.subtitle = ElidedLabel("")
        self.subtitle.setStyleSheet("color: #9aa0a6;")
        lay.addWidget(self.title)
        lay.addWidget(self.subtitle)
        grid = QGridLayout()
        grid.setHorizontalSpacing(40)
        self.pictures = [_Picture() for _ in range(3)]
        self.heads = [ElidedLabel(t) for t in self.TITLES]
        self.preds = [ElidedLabel(" ") for _ in range(3)]
        self.bars = [ConfidenceBars(3) for _ in range(2)]
        pf = QFont(base)
        pf.setPointSizeF(base.pointSizeF() * 1.5)
        pf.setBold(True)
        for c in range(3):
            self.heads[c].setAlignment(Qt.AlignmentFlag.AlignHCenter)
            self.heads[c].setStyleSheet("color: #9aa0a6;")
            self.preds[c].setAlignment(Qt.AlignmentFlag.AlignHCenter)
            if c < 2:
                self.preds[c].setFont(pf)
            grid.addWidget(self.heads[c], 0, c)
            grid.addWidget(self.pictures[c], 1, c)
            grid.addWidget(self.preds[c], 2, c)
            grid.setColumnStretch(c, 1)
        grid.addWidget(self.bars[0], 3, 0)
        grid.addWidget(self.bars[1], 3, 1)
        self.diff_note = ElidedLabel(" ")
        self.diff_note.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.diff_note.setStyleSheet("color: #9aa0a6;")
        grid.addWidget(self.diff_note, 3, 2)
        grid.setRowStretch(1, 1)
        lay.addLayout(grid, 1)
        self.hint = QLabel("Space or → : attack the next image   ·   Esc : leave")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.hint.setStyleSheet("color: #9aa0a6;")
        lay.addWidget(self.hint)
        # labels with a style sheet do not inherit the window's font: give them theirs
        for lab in (self.subtitle, self.hint, self.diff_note, *self.heads):
            lab.setFont(base)
        self.state: Optional[DisplayState] = None

    def show_state(self, st: DisplayState) -> None:
        self.state = st
        self.subtitle.setText(f"{st.attack_text}   ·   {st.name}   ·   {st.frame_text}".strip(" ·"))
        if st.clean is None:
            for pic in self.pictures:
                pic.set_array(None)
            return
        self.pictures[0].set_array(to_uint8(to_display(st.clean)))
        self.preds[0].setText(f"“{st.clean_pred}”  {fmt_prob(st.clean_conf)}")
        self.heads[2].setText("The change" + (f" (amplified ×{st.amplification:g})" if st.amplification > 1 else ""))
        self.bars[0].set_items(st.clean_top)
        if st.adv is None:
            self.pictures[1].set_array(None)
            self.pictures[2].set_array(None)
            self.preds[1].setText("…")
            self.preds[2].setText(" ")
            self.bars[1].set_items([])
            self.diff_note.setText(" ")
            return
        self.pictures[1].set_array(to_uint8(to_display(st.adv)))
        self.preds[1].setStyleSheet(f"color: {'#ef5350' if st.success else '#f1f3f4'};")
        self.preds[1].setText(f"“{st.adv_pred}”  {fmt_prob(st.adv_conf)}")
        self.bars[1].set_items(st.adv_top)
        diff = st.diff()
        self.pictures[2].set_array(diff_rgb(diff, st.limit255))
        self.preds[2].setText(f"at most {st.linf * 255:.0f}/255 per pixel")
        self.diff_note.setText(f"blue − / red +, scale ±{st.limit255:.3g}/255")

    def keyPressEvent(self, ev: QKeyEvent) -> None:  # noqa: N802
        k = ev.key()
        if k in (Qt.Key.Key_Space, Qt.Key.Key_Right, Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_PageDown):
            self.next_requested.emit()
        elif k in (Qt.Key.Key_Escape, Qt.Key.Key_Q, Qt.Key.Key_F11):
            self.close()
        else:
            super().keyPressEvent(ev)

    def closeEvent(self, ev) -> None:  # noqa: N802
        self.closed.emit()
        super().closeEvent(ev)
