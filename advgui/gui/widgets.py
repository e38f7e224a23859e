"""Small reusable widgets: the message banner, an eliding label, the ε editor, a file-path field, confidence
bars, the difference legend.

User data (class names, file names, error texts quoting them) is only ever shown as plain text here: a class
name such as ``<img src=... width=6000>`` must not become markup."""
from __future__ import annotations

import html
from typing import Optional, Sequence

from PySide6.QtCore import QEvent, QRectF, QSize, Qt, QTimer, Signal
from PySide6 import QtGui
from PySide6.QtGui import QColor, QFont, QLinearGradient, QPainter, QPalette, QValidator
from PySide6.QtWidgets import (QBoxLayout, QDoubleSpinBox, QFileDialog, QFrame, QHBoxLayout, QLabel, QLayout,
                               QLineEdit, QPushButton, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from advgui.core.eps import parse_eps


def plain_tip(text: str) -> str:
    """``text`` as a tooltip that shows it literally. Qt draws a tooltip as rich text when it looks like markup
    (``Qt.mightBeRichText``): a file called ``<img src=/dev/zero>.png`` would otherwise be loaded as an image
    when the mouse rests on it. Such text is escaped and kept on its own lines."""
    if not text or not QtGui.Qt.mightBeRichText(text):
        return text
    return "<p style='white-space:pre'>" + html.escape(text, quote=False) + "</p>"


def plain(label: QLabel) -> QLabel:
    """Make ``label`` show its text literally, whatever it contains."""
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


class ElidedLabel(QLabel):
    """A one-line plain-text label that elides what does not fit and shows the whole text as its tooltip, so
    long class or file names never push a layout wider than the window."""

    def __init__(self, text: str = "", parent: Optional[QWidget] = None,
                 mode: Qt.TextElideMode = Qt.TextElideMode.ElideRight) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(20)
        self._full = ""
        self._mode = mode
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt API
        self._full = str(text)
        self._refit()

    def full_text(self) -> str:
        return self._full

    def is_elided(self) -> bool:
        return super().text() != self._full

    def resizeEvent(self, ev) -> None:  # noqa: N802
        super().resizeEvent(ev)
        self._refit()

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(20, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802
        fm = self.fontMetrics()
        return QSize(fm.horizontalAdvance(self._full) + 4, super().sizeHint().height())

    def _refit(self) -> None:
        width = max(10, self.width() - 2)
        shown = self.fontMetrics().elidedText(self._full, self._mode, width)
        super().setText(shown)
        self.setToolTip(plain_tip(self._full) if shown != self._full else "")


def scrolled_page(page: QWidget) -> QVBoxLayout:
    """Give a tab page a scrolling content area (a short screen scrolls it rather than widening the window's
    minimum size); returns the content's layout."""
    outer = QVBoxLayout(page)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    content = QWidget()
    scroll.setWidget(content)
    outer.addWidget(scroll)
    lay = QVBoxLayout(content)
    lay.setContentsMargins(6, 6, 6, 6)
    lay.setSpacing(4)
    return lay


class SideBySide(QWidget):
    """Two layouts side by side, or one above the other when the width is not enough for both (the Harden tab's
    settings at 1024 px): the page never needs more than the wider of the two."""

    def __init__(self, first: QLayout, second: QLayout, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.parts = (first, second)
        self.box = QBoxLayout(QBoxLayout.Direction.LeftToRight, self)
        self.box.setContentsMargins(0, 0, 0, 0)
        self.box.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)   # our minimumSizeHint decides
        self.box.addLayout(first, 1)
        self.box.addLayout(second, 1)

    def side_by_side_width(self) -> int:
        return sum(p.minimumSize().width() for p in self.parts) + max(0, self.box.spacing())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(max(p.minimumSize().width() for p in self.parts), self.box.minimumSize().height())

    def resizeEvent(self, ev) -> None:  # noqa: N802 - Qt API
        wide = ev.size().width() >= self.side_by_side_width()
        d = QBoxLayout.Direction.LeftToRight if wide else QBoxLayout.Direction.TopToBottom
        if self.box.direction() != d:
            self.box.setDirection(d)
            self.updateGeometry()              # the height the page needs changed
        super().resizeEvent(ev)


class PanelScroll(QScrollArea):
    """A side panel that scrolls vertically on a short screen but is never cut horizontally: its minimum width
    follows the panel's (which changes with the chosen attack's form)."""

    def __init__(self, panel: QWidget, full_height: bool = False) -> None:
        super().__init__()
        self.full_height = full_height        # never shorter than the panel wants (the Model panel is small)
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(panel)
        panel.installEventFilter(self)

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 - Qt API
        if ev.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()            # the panel's minimum width may have changed: the dock follows
        return False

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        w = self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width() + 2
        h = min(320, self.widget().sizeHint().height() + 4) if self.full_height else 80
        return QSize(max(240, w), h)


# -- error / info banner --------------------------------------------------------------------------------------

class Banner(QFrame):
    """A message strip at the top of the window: errors stay until closed, notices fade after a while.
    A message may offer buttons (``actions``: (label, callback) pairs) that answer it in place."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 6, 6)
        self.icon = QLabel()
        self.label = plain(QLabel())
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.buttons = QHBoxLayout()
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        lay.addWidget(self.icon)
        lay.addWidget(self.label, 1)
        lay.addLayout(self.buttons)
        lay.addWidget(close)
        self.messages: list[str] = []
        self.kind = ""
        self._fade = QTimer(self)
        self._fade.setSingleShot(True)
        self._fade.timeout.connect(self.hide)
        self.hide()

    def show_message(self, text: str, kind: str = "error", actions: Sequence[tuple[str, object]] = ()) -> None:
        self.messages.append(text)
        self.kind = kind
        colors = {"error": ("#fdecea", "#b3261e", "⚠"), "warning": ("#fff4e5", "#8a5300", "⚠"),
                  "info": ("#e8f1fd", "#1a4f8b", "ℹ")}
        bg, fg, icon = colors.get(kind, colors["info"])
        self.setStyleSheet(f"#banner {{ background: {bg}; border: 1px solid {fg}; border-radius: 4px; }}"
                           f"#banner QLabel {{ color: {fg}; }}")
        self.icon.setText(icon)
        self.label.setText(text)
        while self.buttons.count():
            w = self.buttons.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        for label, callback in actions:
            b = QPushButton(label)
            b.clicked.connect(self.hide)
            b.clicked.connect(callback)
            self.buttons.addWidget(b)
        self.show()
        if kind == "info" and not actions:
            self._fade.start(8000)
        else:
            self._fade.stop()

    def action_labels(self) -> list[str]:
        return [self.buttons.itemAt(i).widget().text() for i in range(self.buttons.count())
                if self.buttons.itemAt(i).widget() is not None]

    def click(self, label: str) -> None:
        """Press the banner's button ``label`` (as a user would)."""
        for i in range(self.buttons.count()):
            w = self.buttons.itemAt(i).widget()
            if isinstance(w, QPushButton) and w.text() == label:
                w.click()
                return
        raise KeyError(label)

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


# -- ε ------------------------------------------------------------------------------------------------------

def parse_eps_text(text: str) -> float:
    """``0.0314``, ``8/255`` -> float (the core's parser: one way to read ε everywhere)."""
    return parse_eps(text)


class EpsSpinBox(QDoubleSpinBox):
    """A spin box that also accepts fractions such as ``8/255``."""

    def validate(self, text: str, pos: int):  # noqa: D401 - Qt API
        s = text.strip()
        if not s or s.endswith("/") or s in (".", "-"):
            return QValidator.State.Intermediate, text, pos
        try:
            v = parse_eps_text(s)
        except (ValueError, ZeroDivisionError):
            return QValidator.State.Invalid, text, pos
        if v > self.maximum():
            return QValidator.State.Intermediate, text, pos
        return QValidator.State.Acceptable, text, pos

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt API
        try:
            return parse_eps_text(text)
        except (ValueError, ZeroDivisionError):
            return self.value()


class EpsEditor(QWidget):
    """ε shown twice, in pixel units 0–1 and in /255 steps; editing either updates the other."""

    valueChanged = Signal(float)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.unit = EpsSpinBox()
        wide = self.fontMetrics().horizontalAdvance("0.0000") + 34     # the text and the arrows
        self.unit.setMinimumWidth(wide)
        self.unit.setDecimals(4)
        self.unit.setRange(0.0, 1.0)
        self.unit.setSingleStep(1 / 255)
        self.unit.setToolTip("ε in pixel units (images in 0–1). Fractions like 8/255 are accepted.")
        self.unit.setKeyboardTracking(False)
        self.b255 = QDoubleSpinBox()
        self.b255.setMinimumWidth(wide)
        self.b255.setDecimals(2)
        self.b255.setRange(0.0, 255.0)
        self.b255.setSingleStep(1.0)
        self.b255.setToolTip("ε in 8-bit steps: 8/255 changes each pixel by at most 8 levels (L∞).")
        self.b255.setKeyboardTracking(False)
        lay.setSpacing(3)
        lay.addWidget(self.unit, 1)
        lay.addWidget(QLabel("="))
        lay.addWidget(self.b255, 1)
        lay.addWidget(QLabel("/255"))
        self._sync = False
        self.unit.valueChanged.connect(self._from_unit)
        self.b255.valueChanged.connect(self._from_255)

    def setMaximum(self, v: float) -> None:  # noqa: N802 - Qt style
        self.unit.setMaximum(v)
        self.b255.setMaximum(v * 255)

    def _from_unit(self, v: float) -> None:
        if self._sync:
            return
        self._sync = True
        self.b255.setValue(v * 255)
        self._sync = False
        self.valueChanged.emit(v)

    def _from_255(self, v: float) -> None:
        if self._sync:
            return
        self._sync = True
        self.unit.setValue(v / 255)
        self._sync = False
        self.valueChanged.emit(v / 255)

    def value(self) -> float:
        # the /255 box is exact for k/255 values; the 0–1 box is rounded to 4 decimals
        v255 = self.b255.value() / 255
        return v255 if abs(v255 - self.unit.value()) < 1e-4 else self.unit.value()

    def setValue(self, v: float) -> None:  # noqa: N802
        self._sync = True
        self.unit.setValue(v)
        self.b255.setValue(v * 255)
        self._sync = False
        self.valueChanged.emit(self.value())


# -- a path field -----------------------------------------------------------------------------------------------

class PathEdit(QWidget):
    """A line edit with a browse button; emits ``chosen`` when a path is picked or typed."""

    chosen = Signal(str)

    def __init__(self, placeholder: str, file_filter: str = "", folder: bool = False,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setClearButtonEnabled(True)
        self.button = QPushButton("…")
        self.button.setFixedWidth(32)
        self.button.setToolTip("Browse")
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.button)
        self.filter = file_filter
        self.folder = folder
        self.button.clicked.connect(self.browse)
        self.edit.editingFinished.connect(lambda: self.chosen.emit(self.edit.text().strip()))

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, t: str) -> None:  # noqa: N802
        self.edit.setText(t)

    def browse(self) -> None:
        if self.folder:
            p = QFileDialog.getExistingDirectory(self, "Choose a folder", self.text())
        else:
            p, _ = QFileDialog.getOpenFileName(self, "Choose a file", self.text(), self.filter)
        if p:
            self.edit.setText(p)
            self.chosen.emit(p)


# -- confidence bars --------------------------------------------------------------------------------------------

class ConfidenceBars(QWidget):
    """Top-k classes as horizontal bars with names and percentages (painted; scales with the font)."""

    def __init__(self, rows: int = 3, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.rows = rows
        self.items: list[tuple[str, float, str]] = []   # name, prob, role ("true", "target", "")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_items(self, items: Sequence[tuple[str, float, str]]) -> None:
        items = [(n, round(float(p), 3), r) for n, p, r in list(items)[: self.rows]]
        if items != self.items:          # at 0.1% resolution: nothing visible changes otherwise
            self.items = items
            # names are elided when painted: the tooltip has them whole
            self.setToolTip(plain_tip("\n".join(f"{n}: {'–' if p != p else f'{100 * p:.1f}%'}"
                                                for n, p, _r in items)))
            self.update()

    def elided_names(self) -> list[str]:
        """The names that do not fit and are shown shortened (all of them are in the tooltip)."""
        fm = self.fontMetrics()
        name_w = self._name_width(fm)
        return [n for n, _p, _r in self.items if fm.horizontalAdvance(n) > name_w - 6]

    def _name_width(self, fm) -> int:
        return min(int(self.width() * 0.42), max((fm.horizontalAdvance(n) for n, _, _ in self.items), default=40) + 8)

    def sizeHint(self) -> QSize:  # noqa: N802
        h = self.fontMetrics().height()
        return QSize(200, int(self.rows * (h + 6)))

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(70, self.sizeHint().height())

    def paintEvent(self, _ev) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = self.fontMetrics()
        h = fm.height() + 6
        w = self.width()
        name_w = self._name_width(fm)
        pct_w = fm.horizontalAdvance("100.0%") + 6
        bar_w = max(10, w - name_w - pct_w)
        pal = self.palette()
        text_color = pal.color(QPalette.ColorRole.WindowText)
        track = pal.color(QPalette.ColorRole.Mid)
        track.setAlpha(60)
        for i, (name, prob, role) in enumerate(self.items):
            y = i * h
            color = {"true": QColor("#2e7d32"), "target": QColor("#c62828"),
                     "wrong": QColor("#c62828")}.get(role, QColor("#607d8b"))
            p.setPen(text_color)
            elided = fm.elidedText(name, Qt.TextElideMode.ElideRight, name_w - 6)
            p.drawText(QRectF(0, y, name_w - 6, h), int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                       elided)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(track)
            p.drawRoundedRect(QRectF(name_w, y + 3, bar_w, h - 6), 3, 3)
            p.setBrush(color)
            frac = 0.0 if prob != prob else max(0.0, min(1.0, prob))
            p.drawRoundedRect(QRectF(name_w, y + 3, max(2.0, bar_w * frac), h - 6), 3, 3)
            p.setPen(text_color)
            p.drawText(QRectF(name_w + bar_w + 4, y, pct_w, h),
                       int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                       "–" if prob != prob else f"{100 * prob:.1f}%")
        p.end()


# -- the difference legend ---------------------------------------------------------------------------------------

class DiffLegend(QWidget):
    """A horizontal colour bar −limit … 0 … +limit (limit in /255 units) under the difference view."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.limit = 8.0
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        from .display import colormap_stops
        self.stops = colormap_stops()

    def set_limit(self, limit255: float) -> None:
        self.limit = limit255
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(160, self.fontMetrics().height() * 2 + 6)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(90, self.sizeHint().height())

    def paintEvent(self, _ev) -> None:  # noqa: N802
        p = QPainter(self)
        fm = self.fontMetrics()
        w, bar_h = self.width(), max(8, fm.height() - 4)
        grad = QLinearGradient(0, 0, w, 0)
        for t, c in self.stops:
            grad.setColorAt(t, c)
        p.fillRect(QRectF(0, 0, w, bar_h), grad)
        p.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        lim = self.limit
        txt = f"{lim:.3g}/255"
        y = bar_h + 2
        p.drawText(QRectF(0, y, w / 3, fm.height()), int(Qt.AlignmentFlag.AlignLeft), f"−{txt}")
        p.drawText(QRectF(w / 3, y, w / 3, fm.height()), int(Qt.AlignmentFlag.AlignHCenter), "0")
        p.drawText(QRectF(2 * w / 3, y, w / 3, fm.height()), int(Qt.AlignmentFlag.AlignRight), f"+{txt}")
        p.end()


def heading_font(base: QFont, scale: float = 1.15, bold: bool = True) -> QFont:
    f = QFont(base)
    if f.pointSizeF() > 0:
        f.setPointSizeF(f.pointSizeF() * scale)
    f.setBold(bold)
    return f
