"""Model B's row under the Explore views: a view of ``session.compare``.

A header names both models (A: the window's model, B: chosen here, by default ``demo-robust``), and a second
row of views shows B's answers to the same attack on the same image. B's views follow A's zoom and pan (same
centre, same zoom relative to the whole image, each fitted to its own boxes) and A's amplification. Turned on
and off with View ▸ Compare with another model (Ctrl+Shift+M).
"""
from __future__ import annotations

from typing import Any, Optional

from PySide6.QtCore import QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from advgui.session import Session

from .views import TripleView
from .widgets import ElidedLabel

B_EXAMPLES = ["demo-robust", "demo"]
A_COLOR = "#1565c0"
B_COLOR = "#6a1b9a"


class CompareRow(QWidget):
    def __init__(self, session: Session, a_views: TripleView, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.c = session.compare
        self.a_views = a_views
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.setSpacing(2)
        head = QHBoxLayout()
        head.setSpacing(6)
        self.a_label = ElidedLabel("")
        self.spec = QComboBox()
        self.spec.setEditable(True)
        self.spec.addItems(B_EXAMPLES)
        self.spec.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.spec.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.spec.setMinimumContentsLength(12)
        self.spec.setEditText(self.c.spec)
        self.spec.setToolTip("Model B: demo, demo-robust, torchvision:ARCH, or a model file")
        self.open_btn = QPushButton("Open…")
        self.status = ElidedLabel("")
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Stop comparing (View ▸ Compare with another model)")
        b_head = QLabel("B =")
        b_head.setStyleSheet(f"color: {B_COLOR}; font-weight: bold;")
        head.addWidget(self.a_label, 2)
        head.addWidget(b_head)
        head.addWidget(self.spec, 1)
        head.addWidget(self.open_btn)
        head.addWidget(self.status, 2)
        head.addWidget(close)
        lay.addLayout(head)
        self.views = TripleView(amplifier=False)
        lay.addWidget(self.views, 1)
        self.action = QAction("Compare with another model", self)
        self.action.setCheckable(True)
        self.action.setShortcut(QKeySequence("Ctrl+Shift+M"))
        self.action.setToolTip("Run the same attack on the same image against a second model, shown under the "
                               "first (Ctrl+Shift+M)")
        self.action.toggled.connect(self.c.set_active)
        self.spec.activated.connect(lambda _i: self.c.load(self.spec.currentText()))
        self.spec.lineEdit().returnPressed.connect(lambda: self.c.load(self.spec.currentText()))
        self.open_btn.clicked.connect(self._open_file)
        close.clicked.connect(lambda: self.c.set_active(False))
        self.c.active_changed.connect(self._active)
        self.c.model_loading.connect(lambda spec: self.status.setText(f"loading {spec}…"))
        self.c.model_changed.connect(lambda _m: self._names())
        self.c.record_changed.connect(lambda _r: self.redraw())
        self.c.attacking.connect(self._attacking)
        self.c.failed.connect(self._failed)
        session.model_changed.connect(lambda _m: self._names())
        a_views.amplification_changed.connect(lambda v: (self.views.set_amplification(v), self.redraw()))
        a_views.orig.vb.sigRangeChanged.connect(lambda *_a: self._follow_a())
        a_views.orig.vb.sigResized.connect(lambda *_a: self._follow_a())
        self._syncing = False
        self.hide()

    def _open_file(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Open model B", "", "Models (*.pt *.pth *.ts *.safetensors *.onnx);;"
                                           "All files (*)")
        if p:
            self.spec.setEditText(p)
            self.c.load(p)

    def _active(self, on: bool) -> None:
        if self.action.isChecked() != on:
            self.action.setChecked(on)
        self.setVisible(on)
        self._names()
        if not on:
            self.a_views.set_titles()
        QTimer.singleShot(0, self.a_views.auto_range)

    def _names(self) -> None:
        a = self.s.model_name or "–"
        self.a_label.setText(f"A = {a} (above)")
        b = self.c.model_name
        if self.c.active:
            self.a_views.set_titles(f"A: {a}", A_COLOR)
        self.views.set_titles(f"B: {b}", B_COLOR)
        if self.c.model_b is not None:
            self.status.setText("same attack, same image" + ("" if self.c.same_classes else
                                                              " · B has other classes than A"))

    def _attacking(self) -> None:
        self.views.adv.caption.setText("attacking B…")

    def _failed(self, msg: Any) -> None:
        self.status.setText(f"Model B: {msg.text}")
        self.status.setStyleSheet("color: #b3261e;")

    def redraw(self) -> None:
        self.status.setStyleSheet("")
        self.views.show_state(self.c.state(self.a_views.amplification))
        self._follow_a()

    def _follow_a(self) -> None:
        """Give B's views A's centre and A's zoom (relative to fitting the whole image)."""
        if self._syncing or not self.isVisible():
            return
        a_img, b_img = self.a_views.orig.item.image, self.views.orig.item.image
        if a_img is None or b_img is None or a_img.shape[:2] != b_img.shape[:2]:
            return
        src, dst = self.a_views.orig.vb, self.views.orig.vb
        h, w = b_img.shape[:2]
        (x0, x1), (y0, y1) = src.viewRange()
        sw, sh, dw, dh = src.width(), src.height(), dst.width(), dst.height()
        if min(sw, sh, dw, dh, x1 - x0, y1 - y0) <= 0:
            return
        zoom = (sw / (x1 - x0)) / min(sw / w, sh / h)
        scale = zoom * min(dw / w, dh / h)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        self._syncing = True
        try:
            dst.setRange(xRange=(cx - dw / scale / 2, cx + dw / scale / 2),
                         yRange=(cy - dh / scale / 2, cy + dh / scale / 2), padding=0)
        finally:
            self._syncing = False

    def captions(self) -> tuple[str, str]:
        """(A's adversarial caption, B's adversarial caption) as shown."""
        return self.a_views.adv.caption.full_text(), self.views.adv.caption.full_text()
