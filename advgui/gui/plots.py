"""Live plots of one run: loss per step and probabilities per step (pyqtgraph), and the top-5 classes before
and after as painted bars that elide long class names (full names in their tooltips).

Every plot item is created once; updates only call ``setData`` with slices of the preallocated history
arrays. A dashed line marks the first step whose image fools the model, a solid one the movie's frame.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from advgui.session.records import StepHistory

from .widgets import ConfidenceBars, ElidedLabel

TRUE_COLOR = "#2e7d32"
OTHER_COLOR = "#c62828"
LOSS_COLOR = "#1565c0"


def _bars_box(title: str) -> tuple[QWidget, ConfidenceBars]:
    box = QWidget()
    lay = QVBoxLayout(box)
    lay.setContentsMargins(4, 4, 4, 4)
    lab = QLabel(title)
    lab.setAlignment(Qt.AlignmentFlag.AlignHCenter)
    bars = ConfidenceBars(5)
    lay.addWidget(lab)
    lay.addWidget(bars)
    lay.addStretch(1)
    return box, bars


class LivePlots(QWidget):
    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.caption = ElidedLabel("")
        self.caption.hide()
        outer.addWidget(self.caption)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(row, 1)
        pal = self.palette()
        fg = pal.color(QPalette.ColorRole.Text)
        self.fg = fg
        # two plot widgets in a Qt layout (not one pyqtgraph grid), so they always share the width equally
        self.loss_widget = pg.PlotWidget(title="Loss")
        self.prob_widget = pg.PlotWidget()
        self.loss_plot = self.loss_widget.getPlotItem()
        self.prob_plot = self.prob_widget.getPlotItem()
        for w, p in ((self.loss_widget, self.loss_plot), (self.prob_widget, self.prob_plot)):
            w.setBackground(pal.color(QPalette.ColorRole.Base))
            w.setMinimumWidth(80)
            p.titleLabel.setText(p.titleLabel.text, color=fg.name(), size="10pt")
            for ax in ("left", "bottom"):
                a = p.getAxis(ax)
                a.setPen(pg.mkPen(fg))
                a.setTextPen(pg.mkPen(fg))
                a.enableAutoSIPrefix(False)
                # fewer labelled ticks on a narrow plot than pyqtgraph's default, so numbers never run together
                a.setStyle(textFillLimits=[(0, 0.7), (2, 0.45), (4, 0.25), (6, 0.12)])
            p.getAxis("left").setWidth(40)
            p.setMenuEnabled(False)
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setLabel("bottom", "step")
        self.prob_plot.setYRange(0, 1, padding=0.02)
        self.prob_plot.getViewBox().setLimits(yMin=-0.05, yMax=1.05)
        self.set_targeted(False)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen(LOSS_COLOR, width=2), antialias=True)
        self.true_curve = self.prob_plot.plot(pen=pg.mkPen(TRUE_COLOR, width=2), antialias=True)
        self.other_curve = self.prob_plot.plot(pen=pg.mkPen(OTHER_COLOR, width=2), antialias=True)
        self.flip_lines, self.cursor_lines = [], []
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
        self.unit = "steps"
        self._x: Optional[np.ndarray] = None      # the x of each point drawn (frame index, or queries)
        before_box, self.before = _bars_box("Top-5 before")
        after_box, self.after = _bars_box("Top-5 after")
        for box in (before_box, after_box):
            box.setMaximumWidth(260)
        row.addWidget(self.loss_widget, 3)
        row.addWidget(self.prob_widget, 3)
        row.addWidget(before_box, 2)
        row.addWidget(after_box, 2)

    def set_caption(self, text: str) -> None:
        """A line above the plots (e.g. which model the curves belong to when comparing)."""
        self.caption.setText(text)
        self.caption.setVisible(bool(text))

    def set_unit(self, unit: str) -> None:
        """What the x axis counts: "steps" (frames) or "queries" (score-based attacks such as Square)."""
        if unit != self.unit:
            self.unit = unit
            for p in (self.loss_plot, self.prob_plot):
                p.setLabel("bottom", "queries" if unit == "queries" else "step")

    def set_targeted(self, targeted: bool, target_name: str = "") -> None:
        """The probability plot's title doubles as its legend (the target's name is shortened there)."""
        short = target_name if len(target_name) <= 12 else target_name[:11] + "…"
        other = f"target {short}" if targeted else "other"
        import html
        self.prob_plot.setTitle(f"P: <span style='color:{TRUE_COLOR}'>true</span> · "
                                f"<span style='color:{OTHER_COLOR}'>{html.escape(other)}</span>",
                                color=self.fg.name(), size="10pt")
        self.prob_widget.setToolTip(f"Probability of the true class (green) and of the "
                                    f"{'target ' + target_name if targeted else 'strongest other class'} (red)")

    def clear(self) -> None:
        for c in (self.loss_curve, self.true_curve, self.other_curve):
            c.setData([], [])
        self._x = None
        for ln in self.flip_lines + self.cursor_lines:
            ln.hide()
        for p in (self.loss_plot, self.prob_plot):
            p.enableAutoRange(x=True)
        self.loss_plot.enableAutoRange()
        self.before.set_items([])
        self.after.set_items([])

    def set_expected(self, frames: int) -> None:
        """A run is starting: fix the step axis to its length so the curves grow across it."""
        for p in (self.loss_plot, self.prob_plot):
            p.enableAutoRange(x=False)
            p.setXRange(0, max(1, frames), padding=0.02)
        self.loss_plot.enableAutoRange(y=True)

    def update_curves(self, h: StepHistory) -> None:
        n = h.n
        self.set_curves(h.loss[:n], h.true_prob[:n], h.other_prob[:n], h.first_flip, x=h.x)

    def set_curves(self, loss: np.ndarray, true_prob: np.ndarray, other_prob: np.ndarray, first_flip: int,
                   x: Optional[np.ndarray] = None) -> None:
        """``first_flip`` is a point index; ``x`` the points' positions (default: their indices)."""
        x = np.arange(len(loss)) if x is None else np.asarray(x)
        self._x = x
        self.loss_curve.setData(x, loss)
        self.true_curve.setData(x, true_prob)
        self.other_curve.setData(x, other_prob)
        at = self._at(first_flip)
        for fl in self.flip_lines:
            fl.setVisible(first_flip >= 0)
            if first_flip >= 0:
                fl.setValue(at)
                fl.label.setFormat(f"flip @ {at:g}" + (" queries" if self.unit == "queries" else ""))

    def _at(self, i: int) -> float:
        """The x position of point ``i``."""
        x = self._x
        return float(x[i]) if x is not None and 0 <= i < len(x) else float(i)

    def set_cursor(self, i: Optional[int]) -> None:
        for cl in self.cursor_lines:
            cl.setVisible(i is not None)
            if i is not None:
                cl.setValue(self._at(i))

    def set_bars(self, before: Sequence[tuple[str, float, str]], after: Sequence[tuple[str, float, str]]) -> None:
        self.before.set_items(before)
        self.after.set_items(after)

    def curve_lengths(self) -> tuple[int, int, int]:
        def n(c) -> int:
            x, _ = c.getData()
            return 0 if x is None else len(x)
        return n(self.loss_curve), n(self.true_curve), n(self.other_curve)
