"""The GAN tab's live views: generator, discriminator and attack losses per batch, the held-out success rate per
epoch (float and 8-bit), and a grid of generated adversarial images. Plot items are created once (``setData``);
the grid paints its images and captions (class names are drawn as plain text, never markup)."""
from __future__ import annotations

import html
import math
from typing import Any, Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QToolTip, QVBoxLayout, QWidget

G_COLOR = "#1565c0"
D_COLOR = "#757575"
ADV_COLOR = "#c62828"
FLOAT_COLOR = "#2e7d32"
BIT8_COLOR = "#ef6c00"
BATCH_COLOR = "#a5d6a7"
FOOLED = "#c62828"


class GanPlots(QWidget):
    """Losses per batch (G's total, D's, the attack loss on the model) and the share of images fooled: per
    training batch (thin), and per epoch on held-out images (float and after 8-bit rounding)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.glw = pg.GraphicsLayoutWidget()
        bg = self.palette().color(QPalette.ColorRole.Base)
        self.fg = self.palette().color(QPalette.ColorRole.Text)
        self.glw.setBackground(bg)
        lay.addWidget(self.glw)
        self.loss_plot = self.glw.addPlot(0, 0)
        self.succ_plot = self.glw.addPlot(0, 1)
        pen_axis = pg.mkPen(self.fg)
        for p in (self.loss_plot, self.succ_plot):
            for ax in ("left", "bottom"):
                a = p.getAxis(ax)
                a.setPen(pen_axis)
                a.setTextPen(pen_axis)
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setMenuEnabled(False)
            p.setLabel("bottom", "epoch")
        # titles double as legends (a legend box would hide the newest points)
        self._title(self.loss_plot, f"Losses: <span style='color:{G_COLOR}'>G</span> · "
                    f"<span style='color:{D_COLOR}'>D</span> · <span style='color:{ADV_COLOR}'>attack</span>")
        self._title(self.succ_plot, f"Fooled: <span style='color:{FLOAT_COLOR}'>held-out</span> · "
                    f"<span style='color:{BIT8_COLOR}'>8-bit</span> · <span style='color:{BATCH_COLOR}'>batch</span>")
        self.succ_plot.setYRange(0, 1, padding=0.03)
        self.succ_plot.getViewBox().setLimits(yMin=-0.05, yMax=1.05)
        self.succ_plot.getAxis("left").setTicks([[(v / 100, f"{v}%") for v in range(0, 101, 25)]])
        self.g_curve = self.loss_plot.plot(pen=pg.mkPen(G_COLOR, width=1.5))
        self.d_curve = self.loss_plot.plot(pen=pg.mkPen(D_COLOR, width=1.5))
        self.adv_curve = self.loss_plot.plot(pen=pg.mkPen(ADV_COLOR, width=1.5))
        self.batch_curve = self.succ_plot.plot(pen=pg.mkPen(BATCH_COLOR, width=1))
        self.float_curve = self.succ_plot.plot(pen=pg.mkPen(FLOAT_COLOR, width=2), symbol="o", symbolSize=10,
                                               symbolBrush=FLOAT_COLOR, symbolPen=None)
        self.bit8_curve = self.succ_plot.plot(pen=pg.mkPen(BIT8_COLOR, width=2, style=Qt.PenStyle.DashLine),
                                              symbol="s", symbolSize=5, symbolBrush=BIT8_COLOR, symbolPen=None)
        self.redraws = 0

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(420, 220)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(200, 160)

    def _title(self, plot: Any, text: str) -> None:
        plot.setTitle(text, color=self.fg.name(), size="10pt")

    def reset(self, epochs: int) -> None:
        for c in (self.g_curve, self.d_curve, self.adv_curve, self.batch_curve, self.float_curve, self.bit8_curve):
            c.setData([], [])
        for p in (self.loss_plot, self.succ_plot):
            p.enableAutoRange(x=False)
            p.setXRange(0, max(1, epochs), padding=0.02)
        self.loss_plot.enableAutoRange(y=True)

    def set_losses(self, series: Any) -> None:
        """Redraw the per-batch curves from the session's arrays (called at most ~10 times a second)."""
        x = series["x"]
        self.g_curve.setData(x, series["loss_g"])
        self.d_curve.setData(x, series["loss_d"])
        self.adv_curve.setData(x, series["loss_adv"])
        self.batch_curve.setData(x, series["success"])
        self.redraws += 1

    def set_epochs(self, records: Sequence[Any]) -> None:
        ep = np.array([r.epoch for r in records], float)
        for curve, key in ((self.float_curve, "val_success"), (self.bit8_curve, "val_success8")):
            v = np.array([getattr(r, key) for r in records], float)
            ok = np.isfinite(v)
            curve.setData(ep[ok], v[ok])

    def curve_lengths(self) -> dict[str, int]:
        def n(c: Any) -> int:
            x, _ = c.getData()
            return 0 if x is None else len(x)
        return {"g": n(self.g_curve), "d": n(self.d_curve), "attack": n(self.adv_curve), "batch": n(self.batch_curve),
                "held_out": n(self.float_curve), "held_out8": n(self.bit8_curve)}


def _qimage(chw: np.ndarray) -> QImage:
    """A (C, H, W) uint8 image as a QImage (grey or RGB), owning its pixels."""
    a = np.ascontiguousarray(chw[0] if chw.shape[0] == 1 else np.moveaxis(chw[:3], 0, -1))
    h, w = a.shape[:2]
    if a.ndim == 2:
        return QImage(a.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class ExampleGrid(QWidget):
    """Pairs of held-out images — clean, then the generator's adversarial image (8-bit, as an export writes it) —
    with a caption ``true → now`` (red when fooled). Sizes itself to its width (height for width)."""

    GAP = 8
    MIN_IMG = 36
    MAX_IMG = 72

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._images: list[tuple[QImage, QImage]] = []
        self._captions: list[str] = []
        self._tips: list[str] = []
        self._fooled: list[bool] = []
        self.placeholder = "The generated images of each epoch appear here."
        sp = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        sp.setHeightForWidth(True)
        self.setSizePolicy(sp)
        self.setMouseTracking(True)

    def set_examples(self, ex: Any, names: Sequence[str]) -> None:
        def name(i: int) -> str:
            return str(names[i]) if 0 <= i < len(names) else str(i)
        self._images = [(_qimage(ex.clean[i]), _qimage(ex.adv[i])) for i in range(len(ex.adv))]
        self._fooled = [bool(v) for v in ex.success]
        self._captions = [f"{name(int(t))} → {name(int(p))}" for t, p in zip(ex.labels, ex.adv_pred)]
        self._tips = [f"true {name(int(t))} · clean prediction {name(int(c))} · adversarial prediction "
                      f"{name(int(p))} ({'fooled' if f else 'holds'})"
                      for t, c, p, f in zip(ex.labels, ex.clean_pred, ex.adv_pred, self._fooled)]
        self.updateGeometry()
        self.update()

    def clear(self, text: str = "") -> None:
        self._images, self._captions, self._tips, self._fooled = [], [], [], []
        if text:
            self.placeholder = text
        self.updateGeometry()
        self.update()

    def captions(self) -> list[str]:
        return list(self._captions)

    # -- geometry ----------------------------------------------------------------------------------------------
    def _layout(self, width: int) -> tuple[int, int, int]:
        """(columns, image side, row height) for ``width``."""
        k = max(1, len(self._images))
        cap = self.fontMetrics().height() + 2
        cols = max(1, min(k, int((width + self.GAP) // (2 * self.MIN_IMG + 2 + self.GAP))))
        rows = math.ceil(k / cols)
        while cols > 1 and math.ceil(k / (cols - 1)) == rows:      # as few columns as the same rows need
            cols -= 1
        side = int(min(self.MAX_IMG, ((width + self.GAP) / cols - self.GAP - 2) / 2))
        return cols, max(8, side), max(8, side) + cap + self.GAP

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt API
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt API
        if not self._images:
            return self.fontMetrics().height() * 3
        cols, _side, row_h = self._layout(width)
        return math.ceil(len(self._images) / cols) * row_h

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(360, self.heightForWidth(360))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(2 * self.MIN_IMG + 4, self.fontMetrics().height() * 3)

    def _cell_rects(self) -> list[tuple[QRect, QRect, QRect]]:
        cols, side, row_h = self._layout(self.width())
        cell_w = (self.width() + self.GAP) / cols
        out = []
        for i in range(len(self._images)):
            r, c = divmod(i, cols)
            x, y = int(c * cell_w), r * row_h
            out.append((QRect(x, y, side, side), QRect(x + side + 2, y, side, side),
                        QRect(x, y + side + 1, 2 * side + 2, row_h - side - self.GAP)))
        return out

    # -- painting and tooltips ---------------------------------------------------------------------------------
    def paintEvent(self, _ev: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        text_color = self.palette().color(QPalette.ColorRole.Text)
        if not self._images:
            p.setPen(QColor(D_COLOR))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
            return
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)    # pixels stay pixels
        fm = self.fontMetrics()
        for (clean, adv), (rc, ra, rt), cap, fooled in zip(self._images, self._cell_rects(), self._captions,
                                                           self._fooled):
            p.drawImage(rc, clean)
            p.drawImage(ra, adv)
            p.setPen(QColor(FOOLED) if fooled else text_color)
            p.drawText(rt, int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop),
                       fm.elidedText(cap, Qt.TextElideMode.ElideRight, rt.width()))
        p.end()

    def event(self, ev: Any) -> bool:
        if ev.type() == ev.Type.ToolTip:
            pos = ev.pos()
            for i, (rc, ra, rt) in enumerate(self._cell_rects()):
                if rc.contains(pos) or ra.contains(pos) or rt.contains(pos):
                    # escaped: a class name is text, never markup
                    QToolTip.showText(ev.globalPos(), f"<p style='white-space:pre'>{html.escape(self._tips[i])}</p>",
                                      self)
                    return True
            QToolTip.hideText()
            ev.ignore()
            return True
        return super().event(ev)
