"""Live plots of one run: loss per step, probabilities per step, top-k bars before and after.

Every plot item is created once; updates only call ``setData`` / ``setOpts`` with slices of the
preallocated history arrays. A dashed line marks the first step whose image fools the model, a solid
one the movie's current frame.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

from .history import StepHistory

TRUE_COLOR = "#2e7d32"
OTHER_COLOR = "#c62828"
LOSS_COLOR = "#1565c0"
CLEAN_BAR = "#90a4ae"


class LivePlots(QWidget):
    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.glw = pg.GraphicsLayoutWidget()
        pal = self.palette()
        bg = pal.color(QPalette.ColorRole.Base)
        fg = pal.color(QPalette.ColorRole.Text)
        self.glw.setBackground(bg)
        lay.addWidget(self.glw)
        pen_axis = pg.mkPen(fg)
        self.fg = fg
        self.loss_plot = self.glw.addPlot(0, 0, title="Loss")
        self.prob_plot = self.glw.addPlot(0, 1, title="Probability")
        self.before_plot = self.glw.addPlot(0, 2, title="Top-5 before")
        self.after_plot = self.glw.addPlot(0, 3, title="Top-5 after")
        for p in (self.loss_plot, self.prob_plot, self.before_plot, self.after_plot):
            p.titleLabel.setText(p.titleLabel.text, color=fg.name(), size="10pt")
            for ax in ("left", "bottom"):
                a = p.getAxis(ax)
                a.setPen(pen_axis)
                a.setTextPen(pen_axis)
            p.setMenuEnabled(False)
        for p in (self.loss_plot, self.prob_plot):
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setLabel("bottom", "step")
        for col, stretch in enumerate((3, 3, 2, 2)):
            self.glw.ci.layout.setColumnStretchFactor(col, stretch)
        self.prob_plot.setYRange(0, 1, padding=0.02)
        self.prob_plot.getViewBox().setLimits(yMin=-0.05, yMax=1.05)
        self.set_targeted(False)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen(LOSS_COLOR, width=2), name="loss", antialias=True)
        self.true_curve = self.prob_plot.plot(pen=pg.mkPen(TRUE_COLOR, width=2), name="true class", antialias=True)
        self.other_curve = self.prob_plot.plot(pen=pg.mkPen(OTHER_COLOR, width=2), name="top other class", antialias=True)
        self.flip_lines = []
        self.cursor_lines = []
        for p, where in ((self.loss_plot, 0.92), (self.prob_plot, 0.12)):   # where the curves are not
            fl = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#ef6c00", width=2, style=Qt.PenStyle.DashLine),
                                 label="flip", labelOpts={"position": where, "color": "#ef6c00"})
            fl.hide()
            p.addItem(fl, ignoreBounds=True)
            self.flip_lines.append(fl)
            cl = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(fg, width=1))
            cl.hide()
            p.addItem(cl, ignoreBounds=True)
            self.cursor_lines.append(cl)
        # top-k: horizontal bars, class names on the left axis
        self.before_bars = pg.BarGraphItem(x0=[], y=[], height=0.7, width=[], brushes=[], pen=pg.mkPen(None))
        self.after_bars = pg.BarGraphItem(x0=[], y=[], height=0.7, width=[], brushes=[], pen=pg.mkPen(None))
        self.before_plot.addItem(self.before_bars)
        self.after_plot.addItem(self.after_bars)
        for p in (self.before_plot, self.after_plot):
            p.setXRange(0, 1, padding=0.02)
            p.getViewBox().invertY(True)
            p.setMouseEnabled(x=False, y=False)
            p.hideButtons()
            p.getAxis("bottom").setTicks([[(0.0, "0"), (0.5, "50%"), (1.0, "100%")]])
            p.getAxis("left").setWidth(40)
        self.class_names: list[str] = []
        self.k = 5

    def set_class_names(self, names: Sequence[str]) -> None:
        self.class_names = [str(n) for n in names]
        fm = self.fontMetrics()
        longest = max((fm.horizontalAdvance(n[:14]) for n in self.class_names), default=20)
        for p in (self.before_plot, self.after_plot):
            p.getAxis("left").setWidth(min(130, longest + 16))

    def _name(self, i: int) -> str:
        return self.class_names[i] if 0 <= i < len(self.class_names) else ("" if i < 0 else str(i))

    def set_targeted(self, targeted: bool, target_name: str = "") -> None:
        """The probability plot's title doubles as its legend."""
        other = f"target {target_name[:10]}" if targeted else "top other"
        self.prob_plot.setTitle(f"P(<span style='color:{TRUE_COLOR}'>true</span>) · "
                                f"P(<span style='color:{OTHER_COLOR}'>{other}</span>)", color=self.fg.name(), size="10pt")

    def clear(self) -> None:
        for c in (self.loss_curve, self.true_curve, self.other_curve):
            c.setData([], [])
        for ln in self.flip_lines + self.cursor_lines:
            ln.hide()
        for p in (self.loss_plot, self.prob_plot):
            p.enableAutoRange(x=True)
        self.set_bars(self.before_bars, self.before_plot, [], [], -1, None)
        self.set_bars(self.after_bars, self.after_plot, [], [], -1, None)
        self.loss_plot.enableAutoRange()

    def set_expected(self, frames: int) -> None:
        """A run is starting: fix the step axis to its length so the curves grow across it."""
        for p in (self.loss_plot, self.prob_plot):
            p.enableAutoRange(x=False)
            p.setXRange(0, max(1, frames), padding=0.02)
        self.loss_plot.enableAutoRange(y=True)

    def update_curves(self, h: StepHistory) -> None:
        n = h.n
        x = h.x
        self.loss_curve.setData(x, h.loss[:n])
        self.true_curve.setData(x, h.true_prob[:n])
        self.other_curve.setData(x, h.other_prob[:n])
        for fl in self.flip_lines:
            if h.first_flip >= 0:
                fl.show()
                fl.setValue(h.first_flip)
                fl.label.setFormat(f"flip @ {h.first_flip}")
            else:
                fl.hide()

    def set_curves(self, loss: np.ndarray, true_prob: np.ndarray, other_prob: np.ndarray, first_flip: int) -> None:
        """Curves from arrays (a batch row's recorded history)."""
        x = np.arange(len(loss))
        self.loss_curve.setData(x, loss)
        self.true_curve.setData(x, true_prob)
        self.other_curve.setData(x, other_prob)
        for fl in self.flip_lines:
            if first_flip >= 0:
                fl.show()
                fl.setValue(first_flip)
                fl.label.setFormat(f"flip @ {first_flip}")
            else:
                fl.hide()

    def set_cursor(self, i: Optional[int]) -> None:
        for cl in self.cursor_lines:
            if i is None:
                cl.hide()
            else:
                cl.setValue(i)
                cl.show()

    def set_bars(self, item: pg.BarGraphItem, plot: pg.PlotItem, labels: Sequence[int], probs: Sequence[float],
                 true_label: int, target: Optional[int]) -> None:
        k = len(labels)
        ys = np.arange(k, dtype=float)
        brushes = []
        for rank, lab in enumerate(labels):
            if lab == true_label:
                brushes.append(pg.mkBrush(TRUE_COLOR))
            elif (target is not None and lab == target) or (rank == 0 and true_label >= 0):
                brushes.append(pg.mkBrush(OTHER_COLOR))
            else:
                brushes.append(pg.mkBrush(CLEAN_BAR))
        item.setOpts(x0=np.zeros(k), y=ys, width=np.nan_to_num(np.asarray(probs, float)), height=0.7,
                     brushes=brushes)
        plot.getAxis("left").setTicks([[(float(y), self._name(int(lab))[:14]) for y, lab in zip(ys, labels)]])
        plot.setYRange(-0.5, max(k, self.k) - 0.5, padding=0)

    def set_before(self, labels: Sequence[int], probs: Sequence[float], true_label: int,
                   target: Optional[int]) -> None:
        self.set_bars(self.before_bars, self.before_plot, labels, probs, true_label, target)

    def set_after(self, labels: Sequence[int], probs: Sequence[float], true_label: int,
                  target: Optional[int]) -> None:
        self.set_bars(self.after_bars, self.after_plot, labels, probs, true_label, target)

    def curve_lengths(self) -> tuple[int, int, int]:
        def n(c) -> int:
            x, _ = c.getData()
            return 0 if x is None else len(x)
        return n(self.loss_curve), n(self.true_curve), n(self.other_curve)
