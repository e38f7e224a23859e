"""Explanation overlays and detector scores in the Explore tab: views of ``session.explain`` and
``session.detect``.

- :class:`OverlayLayer` puts one colour-mapped ImageItem above the original and one above the adversarial image,
  in the same ViewBoxes, so they zoom and pan with the views. The colour map is inferno with an alpha ramp:
  where the map is zero the image shows through; the opacity slider scales the whole layer.
- :class:`ExplainBar` holds the controls (on/off, method, which classes, opacity, the detector menu) and two
  lines: the method with the faithfulness and overlap numbers, and the detector's scores.

The maps are computed by the session in jobs; this module only draws what it is told.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from advgui.session import Session
from advgui.session.explain import CLASS_KINDS, METHODS

from .detector import DetectorButton
from .views import TripleView
from .widgets import ElidedLabel

OVERLAY_CMAP = "inferno"
OVERLAY_TIP = ("Where the model found evidence for the class: bright yellow = most, transparent = none "
               "(each map scaled to its own maximum)")


def overlay_lut(name: str = OVERLAY_CMAP, n: int = 256) -> np.ndarray:
    """(n, 4) uint8 RGBA: the colour map, its alpha rising from 0 (no evidence) to opaque at 80% of the top."""
    lut = np.asarray(pg.colormap.get(name).getLookupTable(0.0, 1.0, n, alpha=True), np.uint8).copy()
    lut[:, 3] = np.round(255 * np.clip(np.linspace(0.0, 1.0, n) / 0.8, 0.0, 1.0)).astype(np.uint8)
    return lut


class OverlayLayer:
    """The two overlay images over a TripleView's original and adversarial panes."""

    def __init__(self, session: Session, views: TripleView) -> None:
        self.x = session.explain
        lut = overlay_lut()
        self.items: dict[str, pg.ImageItem] = {}
        for key, pane in (("orig", views.orig), ("adv", views.adv)):
            it = pg.ImageItem()
            it.setZValue(10)
            it.setLookupTable(lut)
            it.setVisible(False)
            pane.vb.addItem(it)
            self.items[key] = it
        self.shown: dict[str, Any] = {"orig": None, "adv": None}     # cache keys of the maps drawn
        self.x.changed.connect(self.show)
        self.show(self.x.state)

    def show(self, st: Any) -> None:
        for key in ("orig", "adv"):
            it = self.items[key]
            m = st.orig if key == "orig" else st.adv
            mkey = st.orig_key if key == "orig" else st.adv_key
            if not st.enabled or m is None:
                it.setVisible(False)
                self.shown[key] = None
                continue
            if mkey != self.shown[key] or mkey is None:
                it.setImage(m, autoLevels=False, levels=(0.0, 1.0))
                self.shown[key] = mkey
            it.setOpacity(st.opacity)
            it.setVisible(True)

    def visible(self, key: str) -> bool:
        return self.items[key].isVisible()


class ExplainBar(QWidget):
    """Overlay controls, the numbers, and the detector's scores of the images on show."""

    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.x = session.explain
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        lay.setSpacing(0)
        row = QHBoxLayout()
        row.setSpacing(6)
        self.toggle = QCheckBox("Explain")
        self.method = QComboBox()
        for key, text in METHODS.items():
            self.method.addItem(text, key)
        self.method.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method.setMinimumContentsLength(5)
        self.method.setToolTip("Grad-CAM: the last convolutional feature map's evidence (one backward pass to "
                               "that layer); saliency: the input gradient's size per pixel")
        self.classes = QComboBox()
        for key, text in CLASS_KINDS.items():
            self.classes.addItem(text, key)
        self.classes.setToolTip("Which class each map explains: the true class on the original and the "
                                "adversarial class on the adversarial image, or one class on both")
        self.classes.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.classes.setMinimumContentsLength(5)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setMaximumWidth(110)
        self.opacity.setMinimumWidth(40)
        self.opacity.setToolTip("Opacity of the overlays")
        self.opacity_label = QLabel("◐")
        self.opacity_label.setToolTip("Opacity of the overlays")
        self.detector = DetectorButton(session)
        row.addWidget(self.toggle)
        row.addWidget(self.method)
        row.addWidget(self.classes, 1)
        row.addWidget(self.opacity_label)
        row.addWidget(self.opacity, 1)
        row.addStretch(0)
        row.addWidget(self.detector)
        lay.addLayout(row)
        # one line each, so that new text never changes the layout (a live run updates them)
        self.info = ElidedLabel("")
        self.numbers = ElidedLabel("")
        self.scores = ElidedLabel("")
        lay.addWidget(self.info)
        lay.addWidget(self.numbers)
        lay.addWidget(self.scores)
        self.toggle.toggled.connect(self.x.set_enabled)
        self.method.activated.connect(lambda i: self.x.set_method(self.method.itemData(i)))
        self.classes.activated.connect(lambda i: self.x.set_class_kind(self.classes.itemData(i)))
        self.opacity.valueChanged.connect(lambda v: self.x.set_opacity(v / 100))
        self.x.options_changed.connect(self.sync)
        self.x.changed.connect(self._state)
        d = session.detect
        d.scores_changed.connect(self._scores)
        d.changed.connect(lambda _i: self._scores(None))
        d.busy_changed.connect(lambda _w: self._scores(None))
        d.fit_progress.connect(lambda stage, done, total: self.scores.setText(
            f"Fitting the detector: {stage} {done}/{total}…"))
        d.failed.connect(lambda msg: (self.scores.setText(f"Detector: {msg.text}"), self.scores.setVisible(True)))
        session.model_changed.connect(lambda _m: self.sync())
        self.sync()
        self._state(self.x.state)
        self._scores(None)

    # -- from the session ------------------------------------------------------------------------------------------
    def sync(self) -> None:
        """The controls as the session says (availability, method, class choice, opacity)."""
        x = self.x
        why = x.unavailable_reason
        widgets = (self.toggle, self.method, self.classes, self.opacity, self.opacity_label)
        for w in widgets:
            w.blockSignals(True)
        self.toggle.setChecked(x.enabled and not why)
        self.toggle.setEnabled(not why)
        self.toggle.setToolTip(why or "Overlay attribution maps on the original and the adversarial image; "
                                      "they follow the attack movie. " + OVERLAY_TIP)
        for w in widgets[1:]:
            w.setEnabled(not why and x.enabled)
        gc_item = self.method.model().item(0) if isinstance(self.method.model(), QStandardItemModel) else None
        reason = x.gradcam_reason
        if gc_item is not None:
            gc_item.setEnabled(not reason)
            gc_item.setToolTip(reason)
        self.method.setCurrentIndex(max(0, self.method.findData(x.method_used)))
        self.method.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method.setMinimumContentsLength(5)
        self.method.setToolTip(reason or self.method.toolTip())
        self.classes.setCurrentIndex(max(0, self.classes.findData(x.class_kind)))
        self.opacity.setValue(int(round(100 * x.opacity)))
        for w in widgets:
            w.blockSignals(False)
        if why:
            self.info.setText(why)
            self.info.setVisible(True)
            self.numbers.setVisible(False)

    def _state(self, st: Any) -> None:
        numbers = ""
        if st.note:
            self.info.setText(st.note)
        elif not st.enabled:
            self.info.setText("")
        else:
            lag = "" if st.current or not st.for_frame or st.live else f" · map of {st.for_frame} (computing the frame on show)"
            self.info.setText(f"{st.method_text} · {st.class_text}{lag}" if st.class_text else st.method_text)
            numbers = st.numbers_text
        self.numbers.setText(numbers)
        for w in (self.info, self.numbers):
            if w.isVisible() != bool(w.full_text()):
                w.setVisible(bool(w.full_text()))

    def _scores(self, fs: Any) -> None:
        d = self.s.detect
        if fs is not None:
            self.scores.setText(fs.text() + ("" if fs.current else " (computing the frame on show)"))
        elif d.doing:
            self.scores.setText(f"Detector: {d.doing}…")
        elif d.info is not None:
            self.scores.setText(d.info.text())
        else:
            self.scores.setText("")
        if self.scores.isVisible() != bool(self.scores.full_text()):
            self.scores.setVisible(bool(self.scores.full_text()))
