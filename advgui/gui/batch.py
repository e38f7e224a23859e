"""The Batch tab: a view of ``session.batch`` — the attack over the whole open set, a sortable results table
whose rows open the image in the Explore views, a summary line, and the export of the adversarial set with a
real progress bar (images written of the total, rate, time left) and a cancel that leaves a resumable
folder."""
from __future__ import annotations

from typing import Any, Optional

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QHeaderView,
                               QLabel, QLineEdit, QMessageBox, QProgressBar, QPushButton, QSpinBox, QTableView,
                               QVBoxLayout, QWidget)

from advgui.session import Session
from advgui.session.records import BatchRows

from .detector import DetectorButton, DetectorColumns
from .widgets import ElidedLabel, plain, plain_tip

COLUMNS = ["Image", "True", "Clean", "Adversarial", "Fooled", "8-bit", "L∞/255", "L2", "Flip"]
TIPS = ["Image file (relative to the opened folder)", "True label (folder name), or the clean prediction",
        "Prediction on the original image and its confidence", "Prediction on the adversarial image",
        "The attack succeeded (on the float result)", "Still fooled after rounding to 8-bit pixels",
        "Largest change of any pixel, in /255 steps", "Euclidean size of the perturbation (pixel units)",
        "First step at which the prediction flipped"]


class ResultsModel(QAbstractTableModel):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.s = session
        self.rows: list[tuple[BatchRows, int]] = []
        self.det = DetectorColumns(session)          # the detector's score columns, when one is loaded
        session.detect.changed.connect(lambda _i: (self.beginResetModel(), self.endResetModel()))
        session.detect.batch_scores_added.connect(self._scores_added)

    def _scores_added(self, _indices: Any) -> None:
        n = self.det.count()
        if n and self.rows:
            self.dataChanged.emit(self.index(0, len(COLUMNS)), self.index(len(self.rows) - 1, len(COLUMNS) + n - 1))

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
        return len(COLUMNS) + self.det.count()

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal:
            if section >= len(COLUMNS):
                return self.det.header(section - len(COLUMNS), role)
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return TIPS[section]
        return None

    def name(self, i: int) -> str:
        from advgui.session.display import class_name
        return class_name(self.s.class_names, i)

    def value(self, r: int, c: int) -> Any:
        b, j = self.rows[r]
        res = b.result
        return (b.names[j], int(b.labels[j]), int(res.clean_pred[j]), int(res.adv_pred[j]), bool(res.success[j]),
                bool(res.success8[j]), float(res.linf[j]) * 255, float(res.l2[j]),
                int(res.first_success_step[j]))[c]

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r, c = index.row(), index.column()
        b, j = self.rows[r]
        if c >= len(COLUMNS):
            return self.det.data(b.indices[j], c - len(COLUMNS), role)
        v = self.value(r, c)
        if role == Qt.ItemDataRole.DisplayRole:
            if c == 1:
                src = "" if b.label_sources[j] == "folder" else " (pred)"
                return self.name(v) + src
            if c == 2:
                return f"{self.name(v)}  {100 * float(b.result.clean_conf[j]):.0f}%"
            if c == 3:
                return f"{self.name(v)}  {100 * float(b.result.adv_conf[j]):.0f}%"
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
        if role == Qt.ItemDataRole.ToolTipRole and c in (0, 1, 2, 3):
            return plain_tip(self.data(index, Qt.ItemDataRole.DisplayRole))
        return None


def summary_text(s: Any) -> str:
    """The summary line from the core's SetSummary (its own numbers, only formatted here)."""
    if s is None or not s.n:
        return "No results yet."
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    what = "hit the target" if s.targeted else "success"
    med = s.median_linf
    med_txt = "" if med != med else f" · median L∞ of successes {med * 255:.2f}/255"
    return (f"{s.n} images · accuracy {pct(s.clean_accuracy)} → {pct(s.adv_accuracy)} "
            f"(8-bit: {pct(s.adv8_accuracy)}) · {what} {pct(s.success_rate)} "
            f"(8-bit: {pct(s.success_rate8)}){med_txt} · {s.elapsed:.1f} s")




def _duration(sec: Optional[float]) -> str:
    if sec is None or sec != sec:
        return "–"
    sec = int(round(sec))
    return f"{sec // 60}:{sec % 60:02d}" if sec >= 60 else f"{sec} s"


class BatchTab(QWidget):
    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.b = session.batch
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        top = QHBoxLayout()
        self.run_btn = QPushButton("▶ Attack all images")
        self.run_btn.setToolTip("Run the attack chosen on the left over the whole open image set (Ctrl+B)")
        self.stop_btn = QPushButton("■ Stop")
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 4096)
        self.batch_size.setValue(self.b.batch_size)
        self.batch_size.setPrefix("batch ")
        self.batch_size.setToolTip("Images per batch (smaller uses less memory)")
        top.addWidget(self.run_btn)
        top.addWidget(self.stop_btn)
        top.addWidget(self.batch_size)
        self.cluster = QLineEdit(self.b.cluster)
        self.cluster.setPlaceholderText("this computer")
        self.cluster.setClearButtonEnabled(True)
        self.cluster.setMaximumWidth(220)
        self.cluster.setToolTip("Where to run: empty for this computer, or a Ray cluster (the 'cluster' extra): "
                                "local:2 (two workers here), auto, ray://host:10001. Same results, table and "
                                "export either way")
        top.addWidget(QLabel("run on"))
        top.addWidget(self.cluster)
        top.addStretch(1)
        top.addWidget(DetectorButton(session))
        lay.addLayout(top)
        self.attack_label = ElidedLabel("")
        lay.addWidget(self.attack_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        lay.addWidget(self.progress)
        self.summary = QLabel("No results yet. Choose an attack on the left and press “Attack all images”.")
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.summary)
        self.model = ResultsModel(session)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
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
        hint = ElidedLabel("Click a row to open that image in the Explore views.")
        bottom.addWidget(hint, 1)
        self.export_progress = QProgressBar()
        self.export_progress.setMinimumWidth(140)
        self.export_progress.hide()
        self.cancel_export_btn = QPushButton("Cancel export")
        self.cancel_export_btn.hide()
        self.export_btn = QPushButton("Export adversarial set…")
        self.export_btn.setToolTip("Write the adversarial images and a manifest, as the command line does (Ctrl+E)")
        bottom.addWidget(self.export_progress)
        bottom.addWidget(self.cancel_export_btn)
        bottom.addWidget(self.export_btn)
        from .report_button import ReportButton
        self.report = ReportButton(session, session.report.latest_runs,
                                   [session.batch.export_finished, session.batch.export_cancelled,
                                    session.batch.export_started])
        bottom.addWidget(self.report)
        lay.addLayout(bottom)
        self.run_btn.clicked.connect(lambda: self.b.run(self.batch_size.value(), cluster=self.cluster.text()))
        self.cluster.editingFinished.connect(lambda: self.b.set_cluster(self.cluster.text()))
        self.stop_btn.clicked.connect(self.b.stop)
        self.export_btn.clicked.connect(self.export_dialog)
        self.cancel_export_btn.clicked.connect(self.b.cancel_export)
        self.table.activated.connect(self._open)
        self.table.clicked.connect(self._open)
        b = self.b
        b.started.connect(self._started)
        b.rows_added.connect(self._rows)
        b.progress.connect(self.set_progress)
        b.finished.connect(self._finished)
        b.failed.connect(lambda msg: (self.summary.setText(msg.text), self._set_running(False)))
        b.cleared.connect(self._cleared)
        b.export_started.connect(self._export_started)
        b.export_progress.connect(self._export_progress)
        b.export_finished.connect(lambda _p: self._export_ended("finished"))
        b.export_cancelled.connect(lambda _d: self._export_ended("cancelled"))
        b.export_failed.connect(self._export_failed)
        session.attack.changed.connect(self._attack_text)
        self._set_running(False)

    # -- the run ---------------------------------------------------------------------------------------------
    def _set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.batch_size.setEnabled(not running)
        self.cluster.setEnabled(not running)
        exporting = self.b.exporting
        self.export_btn.setEnabled(not running and not exporting and self.s.model is not None)

    def _attack_text(self) -> None:
        if not self.b.running:
            self.attack_label.setText(f"Attack: {self.s.attack.describe(self.s.class_names)} (set on the left)")

    def _started(self, total: int, text: str) -> None:
        self.model.clear()
        self.set_progress(0.0, total)
        self.attack_label.setText(f"Attack: {text}")
        self.summary.setText("Running…")
        self._set_running(True)

    def _rows(self, rows: BatchRows) -> None:
        first = not self.model.rows
        self.model.add(rows)
        if first:   # fit the columns once, on the first batch (no jumping afterwards)
            self.table.resizeColumnsToContents()
            hh = self.table.horizontalHeader()
            hh.resizeSection(0, min(hh.sectionSize(0), 260))
            for c in range(1, 4):
                hh.resizeSection(c, min(hh.sectionSize(c), 180))
            for c in range(len(COLUMNS), self.model.columnCount()):      # detector scores: fit "0.000 → 0.454 ⚑"
                hh.resizeSection(c, self.fontMetrics().horizontalAdvance("−00.0 ⚑ → 000.0 ⚑") + 12)

    def set_progress(self, done: float, total: int) -> None:
        self.progress.setRange(0, max(1, total) * 100)
        self.progress.setValue(int(min(done, total) * 100))
        self.progress.setFormat(f"{int(done)} / {total} images")

    def _finished(self, summary: Any, cancelled: bool) -> None:
        self._set_running(False)
        txt = summary_text(summary)
        self.summary.setText(("Stopped early. " if cancelled else "") + txt)

    def _cleared(self) -> None:
        self.model.clear()
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.summary.setText("No results yet. Choose an attack on the left and press “Attack all images”.")
        self._set_running(False)

    def _open(self, index: QModelIndex) -> None:
        src = self.proxy.mapToSource(index)
        if src.isValid():
            rows, j = self.model.rows[src.row()]
            self.b.open_row(rows, j)

    def row_count(self) -> int:
        return self.model.rowCount()

    # -- export ------------------------------------------------------------------------------------------------
    def export_dialog(self) -> "ExportDialog":
        dlg = ExportDialog(self.s, self)
        dlg.open()
        return dlg

    def _export_started(self, folder: str, total: int) -> None:
        self.export_progress.setRange(0, max(1, total))
        self.export_progress.setValue(0)
        self.export_progress.setFormat(f"0 / {total} images")
        self.export_progress.show()
        self.cancel_export_btn.show()
        self.cancel_export_btn.setEnabled(True)
        self.export_btn.setEnabled(False)

    def _export_progress(self, p: Any) -> None:
        self.export_progress.setMaximum(max(1, p.total))
        self.export_progress.setValue(p.written)
        rate = f" · {p.rate:.1f} img/s · {_duration(p.eta)} left" if p.written else ""
        self.export_progress.setFormat(f"{p.written} / {p.total} images{rate}")

    def _export_ended(self, how: str) -> None:
        self.cancel_export_btn.hide()
        if how == "finished":
            self.export_progress.setFormat(f"{self.export_progress.maximum()} images written")
        else:
            self.export_progress.setFormat(f"cancelled at {self.export_progress.value()} images: export again "
                                           "into the folder and choose Resume to finish")
        self._set_running(self.b.running)

    def _export_failed(self, msg: Any) -> None:
        self.export_progress.hide()
        self.cancel_export_btn.hide()
        self._set_running(self.b.running)
        from advgui.session.jobs import is_folder_question
        if is_folder_question(msg.code):
            self.ask_folder(msg)

    def ask_folder(self, msg: Any) -> None:
        """The chosen folder is in use: ask whether to resume, overwrite, or choose another one."""
        from .advice import folder_question
        text, buttons = folder_question(msg)
        box = QMessageBox(QMessageBox.Icon.Question, "Export folder in use", text, parent=self)
        box.setTextFormat(Qt.TextFormat.PlainText)
        chosen = {}
        for label, mode, role in buttons:
            chosen[box.addButton(label, role)] = mode
        box.addButton(QMessageBox.StandardButton.Cancel)
        self._question = box
        box.buttonClicked.connect(lambda b: self._answer(msg, chosen.get(b)))
        box.open()

    def _answer(self, msg: Any, mode: Optional[str]) -> None:
        folder = self.b.export_dir
        if mode == "resume-recorded":
            from advgui.session.jobs import read_export_state
            state = read_export_state(folder)
            if state:
                self.b.resume_interrupted(state)
        elif mode == "resume":
            self.b.export(folder, resume=True)
        elif mode == "overwrite":
            self.b.export(folder, overwrite=True)
        elif mode == "other":
            self.export_dialog()


class ExportDialog(QDialog):
    """Where to export: a folder path that may not exist yet (it is created), or one picked with Browse…
    (whose folder chooser can also create one); and what will be written."""

    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.setWindowTitle("Export the adversarial set")
        self.setMinimumWidth(480)
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.path = QLineEdit(session.settings.get_str("export/last_parent", ""))
        self.path.setPlaceholderText("a new or empty folder, e.g. ~/adv/pgd-8")
        browse = QPushButton("Browse…")
        row.addWidget(QLabel("Folder"))
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        lay.addLayout(row)
        b = session.batch
        req = b.request if b.results else session.attack.request()
        n = len(session.images.image_set) if session.images is not None else 0
        reuse = sum(len(r) for r in b.reusable_results(req))
        what = plain(QLabel(f"{n} images, {session.attack.describe(session.class_names) if not b.results else b.attack_text}"
                            + (f"; the {reuse} from the batch run are written as they are, the rest attacked now"
                               if reuse and reuse < n else "; written from the batch run" if reuse else
                               "; attacked now") + ". Files: clean/, adv/, adv_float/, manifest.csv, manifest.json."))
        what.setWordWrap(True)
        lay.addWidget(what)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.ok = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        lay.addWidget(self.buttons)
        browse.clicked.connect(self._browse)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.path.textChanged.connect(lambda t: self.ok.setEnabled(bool(t.strip())))
        self.ok.setEnabled(bool(self.path.text().strip()))

    def _browse(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Choose or create an export folder", self.path.text())
        if p:
            self.path.setText(p)

    def accept(self) -> None:
        import os
        text = os.path.expanduser(self.path.text().strip())
        if not text:
            return
        self.s.settings.set("export/last_parent", text)
        self.s.batch.export(text)
        super().accept()
