"""The Harden tab's plots: training loss per batch (and per epoch), validation accuracy per epoch, and the
final robustness curves of the starting and the trained model. Every item is created once (``setData``)."""
from __future__ import annotations

from typing import Any, Optional  # noqa: F401

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

CLEAN_COLOR = "#455a64"
FGSM_COLOR = "#ef6c00"
PGD_COLOR = "#c62828"
LOSS_COLOR = "#1565c0"
START_COLOR = "#757575"
TRAINED_COLOR = "#2e7d32"


def _eps_tick(e: float) -> str:
    return "0" if e == 0 else f"{e:.3g}"


class HardenPlots(QWidget):
    """Training loss per batch (and per epoch), validation accuracy per epoch, and the final robustness curves.
    Every plot item is created once and updated with ``setData``."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._np, self._pg = np, pg
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.glw = pg.GraphicsLayoutWidget()
        bg = self.palette().color(QPalette.ColorRole.Base)
        fg = self.palette().color(QPalette.ColorRole.Text)
        self.fg = fg
        self.glw.setBackground(bg)
        lay.addWidget(self.glw)
        self.loss_plot = self.glw.addPlot(0, 0)
        self.acc_plot = self.glw.addPlot(0, 1)
        self.rob_plot = self.glw.addPlot(1, 0, colspan=2)
        pen_axis = pg.mkPen(fg)
        for p in (self.loss_plot, self.acc_plot, self.rob_plot):
            for ax in ("left", "bottom"):
                a = p.getAxis(ax)
                a.setPen(pen_axis)
                a.setTextPen(pen_axis)
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setMenuEnabled(False)
        self._title(self.loss_plot, "Training loss")
        self._title(self.acc_plot, "Validation accuracy")
        self._title(self.rob_plot, "Robustness: worst case of FGSM and PGD")
        self.loss_plot.setLabel("bottom", "epoch")
        self.acc_plot.setLabel("bottom", "epoch")
        self.rob_plot.setLabel("bottom", "ε (pixel units, images in 0–1)")
        for p in (self.acc_plot, self.rob_plot):
            p.setYRange(0, 1, padding=0.03)
            p.getViewBox().setLimits(yMin=-0.05, yMax=1.05)
            p.getAxis("left").setTicks([[(v / 100, f"{v}%") for v in range(0, 101, 25)]])
        self.rob_plot.getAxis("bottom").enableAutoSIPrefix(False)
        for i in (0, 1):
            self.glw.ci.layout.setRowStretchFactor(i, 1)
            self.glw.ci.layout.setColumnStretchFactor(i, 1)
        self.batch_curve = self.loss_plot.plot(pen=pg.mkPen("#90caf9", width=1), name="batch")
        self.epoch_loss = self.loss_plot.plot(pen=pg.mkPen(LOSS_COLOR, width=2), symbol="o", symbolSize=6,
                                              symbolBrush=LOSS_COLOR, symbolPen=None, name="epoch mean")
        # the validation plot's title is its legend (a legend box would hide the last epoch's points)
        self.clean_curve = self._acc_curve("clean", CLEAN_COLOR)
        self.fgsm_curve = self._acc_curve("FGSM", FGSM_COLOR)
        self.pgd_curve = self._acc_curve("PGD", PGD_COLOR)
        # bottom left: robustness curves start high at ε = 0, so that corner stays empty
        self.rob_legend = self.rob_plot.addLegend(offset=(8, -8), labelTextColor=fg, brush=pg.mkBrush(bg),
                                                  verSpacing=-6)
        self.start_curve = self.rob_plot.plot(pen=pg.mkPen(START_COLOR, width=2, style=Qt.PenStyle.DashLine),
                                              symbol="s", symbolSize=7, symbolBrush=START_COLOR, symbolPen=None,
                                              name="start model")
        self.trained_curve = self.rob_plot.plot(pen=pg.mkPen(TRAINED_COLOR, width=3), symbol="o", symbolSize=8,
                                                symbolBrush=TRAINED_COLOR, symbolPen=None, name="trained model")
        self.eps_line = pg.InfiniteLine(angle=90, movable=False, label="training ε",
                                        pen=pg.mkPen("#ef6c00", width=1, style=Qt.PenStyle.DotLine),
                                        labelOpts={"position": 0.08, "color": "#ef6c00"})
        self.eps_line.hide()
        self.rob_plot.addItem(self.eps_line, ignoreBounds=True)
        # the suite comparison: both robust accuracies with their 95% intervals
        self.suite_bars = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), top=np.zeros(0), bottom=np.zeros(0), beam=0.12,
                                          pen=pg.mkPen(fg, width=1.5))
        self.suite_bars.hide()
        self.rob_plot.addItem(self.suite_bars)
        self.waiting = pg.TextItem("the curves of both models appear here after training", color=START_COLOR,
                                   anchor=(0.5, 0.5))
        self.rob_plot.addItem(self.waiting, ignoreBounds=True)
        self.waiting.setPos(0.5, 0.5)
        self.rob_plot.setXRange(0, 1, padding=0.02)
        self._batch_x = np.zeros(0)
        self._batch_y = np.zeros(0)
        self.n_batches = 0
        self.epochs = 1

    def sizeHint(self) -> Any:  # noqa: N802 - Qt API
        # modest: the tab scrolls when its content's preferred height exceeds the window, and the plots are
        # what should give way (they stretch to fill whatever is left)
        return QSize(480, 300)

    def _title(self, plot: Any, text: str) -> None:
        plot.setTitle(text, color=self.fg.name(), size="10pt")

    def _acc_curve(self, name: str, color: str) -> Any:
        return self.acc_plot.plot(pen=self._pg.mkPen(color, width=2), symbol="o", symbolSize=7, symbolBrush=color,
                                  symbolPen=None, name=name)

    def reset(self, epochs: int, eps: float, steps: int, n_batches_hint: int = 0) -> None:
        """A new run: every curve, the robustness legend and its ticks go back to their empty state."""
        np = self._np
        self.epochs = max(1, epochs)
        self._batch_x = np.zeros(max(64, n_batches_hint))
        self._batch_y = np.zeros(max(64, n_batches_hint))
        self.n_batches = 0
        for c in (self.batch_curve, self.epoch_loss, self.clean_curve, self.fgsm_curve, self.pgd_curve,
                  self.start_curve, self.trained_curve):
            c.setData([], [])
        for p in (self.loss_plot, self.acc_plot):
            p.enableAutoRange(x=False)
            p.setXRange(0, self.epochs, padding=0.02)
        self.acc_plot.setXRange(0.5, self.epochs + 0.5, padding=0)
        self.acc_plot.getAxis("bottom").setTicks(None if self.epochs > 12 else
                                                 [[(float(e), str(e)) for e in range(1, self.epochs + 1)]])
        self.loss_plot.enableAutoRange(y=True)
        self._title(self.acc_plot, f"Validation accuracy at ε {eps:.3g}: <span style='color:{CLEAN_COLOR}'>clean"
                    f"</span> · <span style='color:{FGSM_COLOR}'>FGSM</span> · "
                    f"<span style='color:{PGD_COLOR}'>PGD-{steps}</span>")
        self.clear_robustness("the curves of both models appear here after training")

    def clear_robustness(self, text: str = "") -> None:
        self.start_curve.setData([], [])
        self.trained_curve.setData([], [])
        self.eps_line.hide()
        self.suite_bars.hide()
        self.rob_legend.setVisible(True)
        self.rob_plot.setLabel("bottom", "ε (pixel units, images in 0–1)")
        for item, label in ((self.start_curve, "start model"), (self.trained_curve, "trained model")):
            self.rob_legend.getLabel(item).setText(label, color=self.fg.name())
        self.rob_plot.getAxis("bottom").setTicks(None)
        self._title(self.rob_plot, "Robustness: worst case of FGSM and PGD")
        self.waiting.setText(text)
        self.waiting.setVisible(bool(text))
        self.rob_plot.setXRange(0, 1, padding=0.02)
        self.waiting.setPos(0.5, 0.5)

    def add_batches(self, points: list[tuple[float, float]]) -> None:
        np = self._np
        if not points:
            return
        need = self.n_batches + len(points)
        if need > len(self._batch_x):
            cap = max(need, 2 * len(self._batch_x))
            self._batch_x = np.resize(self._batch_x, cap)
            self._batch_y = np.resize(self._batch_y, cap)
        for x, y in points:
            self._batch_x[self.n_batches] = x
            self._batch_y[self.n_batches] = y
            self.n_batches += 1
        n = self.n_batches
        self.batch_curve.setData(self._batch_x[:n], self._batch_y[:n])

    def set_epochs(self, records: list[Any]) -> None:
        np = self._np
        ep = np.array([r.epoch for r in records], float)
        self.epoch_loss.setData(ep, np.array([r.train_loss for r in records], float))
        for curve, key in ((self.clean_curve, "val_clean_acc"), (self.fgsm_curve, "val_fgsm_acc"),
                           (self.pgd_curve, "val_pgd_acc")):
            v = np.array([getattr(r, key) for r in records], float)
            ok = np.isfinite(v)
            curve.setData(ep[ok], v[ok])

    def set_robustness(self, pair: Any, start_label: str, trained_label: str, train_eps: float) -> None:
        np = self._np
        x = np.array(pair.eps, float)
        self.suite_bars.hide()
        self.start_curve.setData(x, np.array(pair.start.worst, float))
        self.trained_curve.setData(x, np.array(pair.trained.worst, float))
        for item, label in ((self.start_curve, start_label), (self.trained_curve, trained_label)):
            self.rob_legend.getLabel(item).setText(label, color=self.fg.name())
        self.waiting.hide()
        self.eps_line.setValue(train_eps)
        self.eps_line.show()
        self.rob_plot.setXRange(0, max(x) if len(x) else 1, padding=0.03)
        self.rob_plot.getAxis("bottom").setTicks([[(float(e), _eps_tick(e)) for e in x]])
        self._title(self.rob_plot, f"Robustness on {pair.n} validation images: worst case of FGSM and "
                    f"PGD-{pair.steps}")

    def set_suite(self, pair: Any, start_label: str, trained_label: str) -> None:
        """Both models' robust accuracy under the evaluation suite, with their 95% intervals, side by side."""
        np = self._np
        y = np.array([pair.start.robust, pair.trained.robust], float)
        lo = np.array([pair.start.ci95[0], pair.trained.ci95[0]], float)
        hi = np.array([pair.start.ci95[1], pair.trained.ci95[1]], float)
        self.start_curve.setData([0.0], y[:1])
        self.trained_curve.setData([1.0], y[1:])
        self.suite_bars.setData(x=np.array([0.0, 1.0]), y=y, top=hi - y, bottom=y - lo)
        self.suite_bars.show()
        for item, label, v in ((self.start_curve, start_label, y[0]), (self.trained_curve, trained_label, y[1])):
            self.rob_legend.getLabel(item).setText(f"{label}: {100 * v:.1f}%", color=self.fg.name())
        self.rob_legend.setVisible(False)       # the ticks name both models (a legend would cover a point)
        self.waiting.hide()
        self.eps_line.hide()
        self.rob_plot.setXRange(-0.6, 1.6, padding=0)
        self.rob_plot.setLabel("bottom", "")
        self.rob_plot.getAxis("bottom").setTicks([[(0.0, f"{start_label}: {100 * y[0]:.1f}%"),
                                                   (1.0, f"{trained_label}: {100 * y[1]:.1f}%")]])
        self._title(self.rob_plot, f"Robustness on {pair.n} validation images: {pair.suite} suite at ε "
                    f"{pair.eps:.3g}, 95% intervals")

    def curve_lengths(self) -> dict[str, int]:
        def n(c: Any) -> int:
            x, _ = c.getData()
            return 0 if x is None else len(x)
        return {"batch": n(self.batch_curve), "epoch_loss": n(self.epoch_loss), "clean": n(self.clean_curve),
                "fgsm": n(self.fgsm_curve), "pgd": n(self.pgd_curve), "start": n(self.start_curve),
                "trained": n(self.trained_curve)}

    def legend_texts(self) -> list[str]:
        return [label.text for _sample, label in self.rob_legend.items]
