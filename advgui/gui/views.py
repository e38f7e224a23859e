"""Original | adversarial | difference, side by side, with linked zoom and pan.

Images are drawn at fixed levels 0–255; the difference is a signed diverging heatmap at fixed ±ε
(divided by the amplification), never scaled to the data. A :class:`TripleView` is self-contained, so
the Explore tab can later stack a second one for another model and link all views together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QWidget
from superqt import QLabeledDoubleSlider

from .display import DIFF_CMAP, diff_limit, fmt_prob, signed_diff, to_display
from .widgets import ConfidenceBars, DiffLegend, heading_font

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


@dataclass
class DisplayState:
    """What the three views show at one moment (one movie frame), as plain values. Shared by the Explore
    views, the presentation (demo) window and the comparison PNG, so they always agree."""

    name: str = ""
    clean: Optional[np.ndarray] = None       # (C, H, W) float in [0, 1]
    adv: Optional[np.ndarray] = None         # (C, H, W) float in [0, 1] or None before a run
    eps: Optional[float] = None
    amplification: float = 1.0
    true_name: str = ""
    label_source: str = "folder"
    clean_top: Sequence[tuple[str, float, str]] = ()   # (class name, prob, role)
    adv_top: Sequence[tuple[str, float, str]] = ()
    clean_pred: str = ""
    clean_conf: float = float("nan")
    adv_pred: str = ""
    adv_conf: float = float("nan")
    success: Optional[bool] = None
    linf: float = float("nan")
    l2: float = float("nan")
    frame_text: str = ""
    attack_text: str = ""

    def diff(self) -> Optional[np.ndarray]:
        if self.clean is None or self.adv is None:
            return None
        return signed_diff(self.adv, self.clean)

    @property
    def limit255(self) -> float:
        return diff_limit(self.eps, self.amplification)


class ImagePane(QWidget):
    """One image in its own ViewBox, a title, and a caption (prediction and confidence) below."""

    def __init__(self, title: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QGridLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        self.title = QLabel(title)
        self.title.setFont(heading_font(self.font(), 1.05))
        self.title.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setBackground(None)
        self.glw.ci.setContentsMargins(0, 0, 0, 0)
        self.glw.setMinimumSize(120, 120)
        self.vb = self.glw.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.vb.setDefaultPadding(0.0)
        # no levels here: pyqtgraph 0.14 then ignores the levels of the first setImage call
        self.item = pg.ImageItem()
        self.vb.addItem(self.item)
        self.caption = QLabel(" ")
        self.caption.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.caption.setFont(heading_font(self.font(), 1.15))
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        self.sub = QLabel(" ")
        self.sub.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        for lab in (self.title, self.caption, self.sub):
            lab.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            lab.setMinimumWidth(40)
        lay.addWidget(self.title, 0, 0)
        lay.addWidget(self.glw, 1, 0)
        lay.addWidget(self.caption, 2, 0)
        lay.addWidget(self.sub, 3, 0)
        lay.setRowStretch(1, 1)
        self._shape: Optional[tuple] = None
        self._source: object = None
        self._levels: tuple = ()

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

    def __init__(self, parent: Optional[QWidget] = None) -> None:
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
        self.cmap = pg.colormap.get(DIFF_CMAP)
        self.diff.item.setColorMap(self.cmap)
        # linked zoom and pan
        for p in (self.adv, self.diff):
            p.vb.setXLink(self.orig.vb)
            p.vb.setYLink(self.orig.vb)
        # the difference pane: legend and amplification instead of confidence bars
        self.legend = DiffLegend()
        self.amp = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.amp.setRange(1.0, 64.0)
        self.amp.setValue(1.0)
        self.amp.setSingleStep(1.0)
        self.amp.setDecimals(0)
        self.amp.setToolTip("Amplify the difference: the colour scale ends at ±ε / amplification")
        amp_row = QWidget()
        al = QHBoxLayout(amp_row)
        al.setContentsMargins(0, 0, 0, 0)
        al.addWidget(QLabel("amplify ×"))
        al.addWidget(self.amp, 1)
        dl: QGridLayout = self.diff.layout()  # type: ignore[assignment]
        dl.addWidget(self.legend, 4, 0)
        dl.addWidget(amp_row, 5, 0)
        self.orig_bars = ConfidenceBars(3)
        self.adv_bars = ConfidenceBars(3)
        self.orig.layout().addWidget(self.orig_bars, 4, 0)
        self.adv.layout().addWidget(self.adv_bars, 4, 0)
        spacer_o, spacer_a = QWidget(), QWidget()
        for sp in (spacer_o, spacer_a):
            sp.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
            sp.setFixedHeight(amp_row.sizeHint().height())
        self.orig.layout().addWidget(spacer_o, 5, 0)
        self.adv.layout().addWidget(spacer_a, 5, 0)
        self.amp.valueChanged.connect(lambda v: self.amplification_changed.emit(float(v)))
        self.state = DisplayState()
        self.show_state(self.state)

    @property
    def amplification(self) -> float:
        return float(self.amp.value())

    def set_amplification(self, v: float) -> None:
        self.amp.setValue(max(1.0, min(64.0, v)))

    def show_state(self, st: DisplayState) -> None:
        self.state = st
        if st.clean is None:
            self.orig.set_image(None)
            self.adv.set_image(None)
            self.diff.set_image(None)
            self.orig.caption.setText("<span style='color:gray'>no image</span>")
            self.adv.caption.setText("<span style='color:gray'>press Run</span>")
            self.diff.caption.setText(" ")
            self.orig.sub.setText(" ")
            self.adv.sub.setText(" ")
            self.diff.sub.setText(" ")
            self.orig_bars.set_items([])
            self.adv_bars.set_items([])
            self.legend.set_limit(st.limit255)
            return
        if st.clean is not self.orig._source:
            self.orig.set_image(to_display(st.clean), source=st.clean)
        wrong_clean = st.label_source == "folder" and st.clean_pred != st.true_name
        col = "#c62828" if wrong_clean else ""
        self.orig.caption.setText(f"<span style='color:{col}'>{_esc(st.clean_pred)}</span> "
                                  f"<span style='font-weight:normal'>{fmt_prob(st.clean_conf)}</span>")
        src = "true" if st.label_source == "folder" else "label (clean prediction)"
        self.orig.sub.setText(f"{src}: {st.true_name}")
        self.orig_bars.set_items(st.clean_top)
        lim = st.limit255
        self.legend.set_limit(lim)
        if st.adv is None:
            self.adv.set_image(None)
            self.diff.set_image(None)
            self.adv.caption.setText("<span style='color:gray'>press Run</span>")
            self.adv.sub.setText(st.attack_text or " ")
            self.diff.caption.setText(" ")
            self.diff.sub.setText(" ")
            self.adv_bars.set_items([])
            return
        self.adv.set_image(to_display(st.adv))
        self.diff.set_image(st.diff(), levels=(-lim, lim))
        mark = ""
        if st.success is True:
            mark = " <span style='color:#c62828'>✔ fooled</span>"
        elif st.success is False:
            mark = " <span style='color:#2e7d32'>✘ holds</span>"
        self.adv.caption.setText(f"{_esc(st.adv_pred)} <span style='font-weight:normal'>{fmt_prob(st.adv_conf)}"
                                 f"</span>{mark}")
        self.adv.sub.setText(st.frame_text or " ")
        self.adv_bars.set_items(st.adv_top)
        self.diff.caption.setText(f"L∞ {st.linf * 255:.2f}/255 · L2 {st.l2:.3f}")
        self.diff.sub.setText(f"scale ±{lim:.3g}/255" + (f" (ε/{st.amplification:g})" if st.amplification != 1
                                                         else " (±ε)"))

    def auto_range(self) -> None:
        self.orig.vb.autoRange(padding=0)

    def view_range(self) -> list:
        return self.orig.vb.viewRange()


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
