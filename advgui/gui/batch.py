"""The Batch tab: the attack over the whole open set in the background, a sortable results table whose
rows open the image in the Explore views, a summary line, and the adversarial-set export."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton,
                               QSpinBox, QTableView, QVBoxLayout, QWidget)

if TYPE_CHECKING:
    from .workers import BatchRows

COLUMNS = ["Image", "True", "Clean", "Adversarial", "Fooled", "8-bit", "L∞/255", "L2", "Flip"]
TIPS = ["Image file (relative to the opened folder)", "True label (folder name), or the clean prediction",
        "Prediction on the original image and its confidence", "Prediction on the adversarial image",
        "The attack succeeded (on the float result)", "Still fooled after rounding to 8-bit pixels",
        "Largest change of any pixel, in /255 steps", "Euclidean size of the perturbation (pixel units)",
        "First step at which the prediction flipped"]


class ResultsModel(QAbstractTableModel):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[BatchRows, int]] = []
        self.class_names: list[str] = []

    def clear(self) -> None:
        self.beginResetModel()
        self.rows = []
        self.endResetModel()

    def add(self, b: BatchRows) -> None:
        n0 = len(self.rows)
        self.beginInsertRows(QModelIndex(), n0, n0 + len(b) - 1)
        self.rows += [(b, j) for j in range(len(b))]
        self.endInsertRows()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return TIPS[section]
        return None

    def name(self, i: int) -> str:
        return self.class_names[i] if 0 <= i < len(self.class_names) else str(i)

    def value(self, r: int, c: int) -> Any:
        b, j = self.rows[r]
        if c == 0:
            return b.names[j]
        if c == 1:
            return int(b.labels[j])
        if c == 2:
            return int(b.clean_pred[j])
        if c == 3:
            return int(b.adv_pred[j])
        if c == 4:
            return bool(b.success[j])
        if c == 5:
            return bool(b.success8[j])
        if c == 6:
            return float(b.linf[j]) * 255
        if c == 7:
            return float(b.l2[j])
        if c == 8:
            return int(b.first_success_step[j])
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r, c = index.row(), index.column()
        b, j = self.rows[r]
        v = self.value(r, c)
        if role == Qt.ItemDataRole.DisplayRole:
            if c == 1:
                src = "" if b.label_sources[j] == "folder" else " (pred)"
                return self.name(v) + src
            if c == 2:
                return f"{self.name(v)}  {100 * float(b.clean_conf[j]):.0f}%"
            if c == 3:
                return f"{self.name(v)}  {100 * float(b.adv_conf[j]):.0f}%"
            if c in (4, 5):
                return "yes" if v else "no"
            if c == 6:
                return f"{v:.2f}"
            if c == 7:
                return f"{v:.3f}"
            if c == 8:
                return "–" if v < 0 else str(v)
            return str(v)
        if role == Qt.ItemDataRole.UserRole:       # sort key
            return v
        if role == Qt.ItemDataRole.ForegroundRole and c in (4, 5):
            return QBrush(QColor("#c62828" if v else "#2e7d32"))
        if role == Qt.ItemDataRole.TextAlignmentRole and c >= 4:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and c == 0:
            return b.names[j]
        return None


def summary_text(s: Any) -> str:
    """The summary line from the core's SetSummary (its own numbers, only formatted here)."""
    if s is None or not s.n:
        return "No results yet."
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    what = "hit the target" if s.targeted else "success"
    med = s.median_linf
    med_txt = "" if med != med else f" · median L∞ of successes {med * 255:.2f}/255"
    return (f"<b>{s.n} images</b> · accuracy {pct(s.clean_accuracy)} → <b>{pct(s.adv_accuracy)}</b> "
            f"(8-bit: {pct(s.adv8_accuracy)}) · {what} {pct(s.success_rate)} "
            f"(8-bit: {pct(s.success_rate8)}){med_txt} · {s.elapsed:.1f} s")


class BatchTab(QWidget):
    run_requested = Signal(int)          # batch size
    stop_requested = Signal()
    export_requested = Signal()
    row_opened = Signal(object, int)     # BatchRows, row within it

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        top = QHBoxLayout()
        self.run_btn = QPushButton("▶ Attack all images")
        self.run_btn.setToolTip("Run the attack chosen on the left over the whole open image set")
        self.stop_btn = QPushButton("■ Stop")
        self.stop_btn.setEnabled(False)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 4096)
        self.batch_size.setValue(64)
        self.batch_size.setToolTip("Images per batch (smaller uses less memory)")
        self.export_btn = QPushButton("Export adversarial set…")
        self.export_btn.setEnabled(False)
        self.export_btn.setToolTip("Write the adversarial images and a manifest, as the command line does")
        top.addWidget(self.run_btn)
        top.addWidget(self.stop_btn)
        top.addWidget(QLabel("batch size"))
        top.addWidget(self.batch_size)
        top.addStretch(1)
        lay.addLayout(top)
        self.attack_label = QLabel("")
        self.attack_label.setWordWrap(True)
        lay.addWidget(self.attack_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        lay.addWidget(self.progress)
        self.summary = QLabel("No results yet. Choose an attack on the left and press “Attack all images”.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.summary)
        self.model = ResultsModel()
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        hh.resizeSection(0, 200)
        for c in range(1, len(COLUMNS)):
            hh.resizeSection(c, max(60, self.fontMetrics().horizontalAdvance(COLUMNS[c]) + 24))
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        lay.addWidget(self.table, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(QLabel("Click a row to open that image in the Explore views."))
        bottom.addStretch(1)
        bottom.addWidget(self.export_btn)
        lay.addLayout(bottom)
        self.set_running(False)
        self.run_btn.clicked.connect(lambda: self.run_requested.emit(self.batch_size.value()))
        self.stop_btn.clicked.connect(self.stop_requested)
        self.export_btn.clicked.connect(self.export_requested)
        self.table.activated.connect(self._open)
        self.table.clicked.connect(self._open)
        self.results: list[BatchRows] = []
        self.summary_obj: Any = None
        self.done_images = 0

    def set_class_names(self, names: Sequence[str]) -> None:
        self.model.class_names = list(names)

    def set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.batch_size.setEnabled(not running)
        if running:
            self.export_btn.setEnabled(False)

    def start(self, total: int, attack_text: str) -> None:
        self.results = []
        self.summary_obj = None
        self.model.clear()
        self.set_progress(0.0, total)
        self.attack_label.setText(attack_text)
        self.summary.setText("Running…")
        self.set_running(True)

    def add_rows(self, b: BatchRows) -> None:
        first = not self.results
        self.results.append(b)
        self.model.add(b)
        if first:   # fit the columns once, on the first batch (cheap, and no jumping afterwards)
            self.table.resizeColumnsToContents()
            hh = self.table.horizontalHeader()
            hh.resizeSection(0, min(hh.sectionSize(0), 260))

    def set_progress(self, done: float, total: int) -> None:
        """``done`` counts images, with the running batch's share as a fraction."""
        self.progress.setRange(0, max(1, total) * 100)
        self.progress.setValue(int(min(done, total) * 100))
        self.progress.setFormat(f"{int(done)} / {total} images")
        self.done_images = int(done)

    def finish(self, summary: Any, cancelled: bool) -> None:
        self.summary_obj = summary
        self.set_running(False)
        txt = summary_text(summary)
        if cancelled:
            txt = "<span style='color:#8a5300'>Stopped early.</span> " + txt
        self.summary.setText(txt)
        self.export_btn.setEnabled(bool(self.results))

    def fail(self, msg: str) -> None:
        self.set_running(False)
        self.summary.setText(f"<span style='color:#b3261e'>{msg}</span>")

    def _open(self, index: QModelIndex) -> None:
        src = self.proxy.mapToSource(index)
        if not src.isValid():
            return
        b, j = self.model.rows[src.row()]
        self.row_opened.emit(b, j)

    def row_count(self) -> int:
        return self.model.rowCount()

