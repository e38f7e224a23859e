"""Original | adversarial | difference, side by side, with linked zoom and pan.

Images are drawn at fixed levels 0–255; the difference is a signed diverging heatmap at fixed ±ε (divided by
the amplification), never scaled to the data. A :class:`TripleView` draws a
:class:`~advgui.session.display.DisplayState`; model B's row under it is another TripleView. Every text that
can hold user data (class and file names) is a plain-text label that elides, with the full text as tooltip.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QWidget
from superqt import QLabeledSlider

from advgui.session.display import DisplayState, fmt_prob

from .display import DIFF_CMAP, to_display
from .widgets import ConfidenceBars, DiffLegend, ElidedLabel, heading_font

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

FOOLED_COLOR = "#c62828"
HOLDS_COLOR = "#2e7d32"


class ImagePane(QWidget):
    """One image in its own ViewBox: a title above; the prediction, a verdict and a sub-caption below."""

    def __init__(self, title: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QGridLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        self.title = ElidedLabel(title)
        self.title.setFont(heading_font(self.font(), 1.05))
        self.title.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setBackground(None)
        self.glw.ci.setContentsMargins(0, 0, 0, 0)
        self.glw.setMinimumSize(90, 90)
        self.vb = self.glw.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.vb.setDefaultPadding(0.0)
        # no levels here: pyqtgraph 0.14 then ignores the levels of the first setImage call
        self.item = pg.ImageItem()
        self.vb.addItem(self.item)
        row = QWidget()
        rl = QHBoxLayout(row)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.setSpacing(6)
        self.caption = ElidedLabel(" ")
        self.caption.setFont(heading_font(self.font(), 1.15))
        self.caption.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.verdict = QLabel("")
        self.verdict.setTextFormat(Qt.TextFormat.PlainText)
        self.verdict.setFont(heading_font(self.font(), 1.0))
        self.verdict.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        rl.addWidget(self.caption, 1)
        rl.addWidget(self.verdict, 0)
        self.sub = ElidedLabel(" ")
        self.sub.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        lay.addWidget(self.title, 0, 0)
        lay.addWidget(self.glw, 1, 0)
        lay.addWidget(row, 2, 0)
        lay.addWidget(self.sub, 3, 0)
        lay.setRowStretch(1, 1)
        self._shape: Optional[tuple] = None
        self._source: object = None
        self._levels: tuple = ()

    def set_verdict(self, success: Optional[bool]) -> None:
        if success is None:
            self.verdict.setText("")
            self.verdict.hide()
            return
        self.verdict.setText("✔ fooled" if success else "✘ holds")
        self.verdict.setStyleSheet(f"color: {FOOLED_COLOR if success else HOLDS_COLOR};")
        self.verdict.show()

    def set_image(self, disp: Optional[np.ndarray], levels: tuple[float, float] = (0, 255),
                  source: object = None) -> None:
        """Show ``disp``; ``source`` identifies the data it came from, so an unchanged image (the original,
        during a run) is not converted and repainted again at every redraw."""
        if disp is None:
            self.item.clear()
            self._shape = None
            self._source = None
            return
        if source is not None and source is self._source and levels == self._levels:
            return
        self._source, self._levels = source, levels
        self.item.setImage(disp, autoLevels=False, levels=levels)
        if tuple(self.item.getLevels()) != tuple(levels):
            self.item.setLevels(levels)  # fixed scale, whatever pyqtgraph did with the first image
        if self._shape != disp.shape[:2]:
            self._shape = disp.shape[:2]
            self.vb.autoRange(padding=0)


class TripleView(QWidget):
    """The three linked views and their captions, plus the amplification control of the difference."""

    amplification_changed = Signal(float)

    def __init__(self, parent: Optional[QWidget] = None, bars: int = 3, amplifier: bool = True) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(6)
        self.orig = ImagePane("Original")
        self.adv = ImagePane("Adversarial")
        self.diff = ImagePane("Difference")
        self.diff.title.setToolTip("adversarial − original, signed: blue darker, red brighter")
        for p in (self.orig, self.adv, self.diff):
            lay.addWidget(p, 1)
        grey = pg.ColorMap([0.0, 1.0], [(0, 0, 0), (255, 255, 255)])
        self.orig.item.setColorMap(grey)
        self.adv.item.setColorMap(grey)
        self.diff.item.setColorMap(pg.colormap.get(DIFF_CMAP))
        for p in (self.adv, self.diff):          # linked zoom and pan
            p.vb.setXLink(self.orig.vb)
            p.vb.setYLink(self.orig.vb)
        self.legend = DiffLegend()
        self.amp = QLabeledSlider(Qt.Orientation.Horizontal)
        self.amp.setRange(1, 64)
        self.amp.setValue(1)
        self.amp.setToolTip("Amplify the difference: the colour scale ends at ±ε / amplification")
        self.amp_row = QWidget()
        al = QHBoxLayout(self.amp_row)
        al.setContentsMargins(0, 0, 0, 0)
        al.addWidget(QLabel("amplify ×"))
        al.addWidget(self.amp, 1)
        dl: QGridLayout = self.diff.layout()  # type: ignore[assignment]
        dl.addWidget(self.legend, 4, 0)
        dl.addWidget(self.amp_row, 5, 0)
        self.amp_row.setVisible(amplifier)
        self.orig_bars = ConfidenceBars(bars)
        self.adv_bars = ConfidenceBars(bars)
        self.orig.layout().addWidget(self.orig_bars, 4, 0)
        self.adv.layout().addWidget(self.adv_bars, 4, 0)
        self.amp.valueChanged.connect(lambda v: self.amplification_changed.emit(float(v)))
        self.state = DisplayState()
        self.show_state(self.state)

    @property
    def amplification(self) -> float:
        return float(self.amp.value())

    def set_amplification(self, v: float) -> None:
        self.amp.setValue(int(round(max(1.0, min(64.0, v)))))

    def show_state(self, st: DisplayState) -> None:
        self.state = st
        lim = st.limit255
        self.legend.set_limit(lim)
        if st.clean is None:
            for p in (self.orig, self.adv, self.diff):
                p.set_image(None)
                p.set_verdict(None)
                p.sub.setText(" ")
            self.orig.caption.setText("no image")
            self.adv.caption.setText("press Run")
            self.diff.caption.setText(" ")
            self.orig_bars.set_items([])
            self.adv_bars.set_items([])
            return
        if st.clean is not self.orig._source:
            self.orig.set_image(to_display(st.clean), source=st.clean)
        self.orig.caption.setText(f"{st.clean_pred}  {fmt_prob(st.clean_conf)}")
        self.orig.caption.setStyleSheet(f"color: {FOOLED_COLOR};" if st.clean_wrong else "")
        self.orig.set_verdict(None)
        src = "true" if st.label_source == "folder" else "label (clean prediction)"
        self.orig.sub.setText(f"{src}: {st.true_name}")
        self.orig_bars.set_items(st.clean_top)
        if st.adv is None:
            self.adv.set_image(None)
            self.diff.set_image(None)
            self.adv.caption.setText("press Run")
            self.adv.set_verdict(None)
            self.adv.sub.setText(st.attack_text or " ")
            self.diff.caption.setText(" ")
            self.diff.sub.setText(f"scale ±{lim:.3g}/255")
            self.adv_bars.set_items([])
            return
        self.adv.set_image(to_display(st.adv))
        self.diff.set_image(st.diff(), levels=(-lim, lim))
        self.adv.caption.setText(f"{st.adv_pred}  {fmt_prob(st.adv_conf)}")
        self.adv.set_verdict(st.success)
        self.adv.sub.setText(st.frame_text or " ")
        self.adv_bars.set_items(st.adv_top)
        self.diff.caption.setText(f"L∞ {st.linf * 255:.2f}/255 · L2 {st.l2:.3f}")
        amp = st.amplification
        self.diff.sub.setText(f"scale ±{lim:.3g}/255" + (f" (ε/{amp:g})" if amp != 1 else " (±ε)"))

    def set_titles(self, prefix: str = "", color: str = "") -> None:
        for pane, what in ((self.orig, "Original"), (self.adv, "Adversarial"), (self.diff, "Difference")):
            pane.title.setText(f"{prefix} · {what}" if prefix else what)
            pane.title.setStyleSheet(f"color: {color};" if color else "")

    def auto_range(self) -> None:
        self.orig.vb.autoRange(padding=0)

    def view_range(self) -> list:
        return self.orig.vb.viewRange()

    def labels(self) -> list[QLabel]:
        """Every text label of the three panes (for the layout tests)."""
        return [w for p in (self.orig, self.adv, self.diff) for w in (p.title, p.caption, p.sub, p.verdict)]
