"""The Evaluate tab: a view of ``session.evaluate`` — the standard (or quick) robustness suite on the window's
model and images: a row per stage with its progress, the headline robust accuracy with its 95% interval, the
sanity flags in plain words, the RobustBench-style card, a fooled image into Explore, and Save results…
(robustness.json and card.json). The suite itself is :mod:`advgui.core.suite`."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFrame, QHBoxLayout, QHeaderView, QLabel,
                               QMessageBox, QProgressBar, QPushButton,
                               QSizePolicy, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from advgui.session import Session
from advgui.session.evaluate import SUITE_NAMES, EvaluateRequest, StageRow

from .widgets import ElidedLabel, EpsEditor, heading_font, plain, plain_tip, scrolled_page

COLUMNS = ["Stage", "Progress", "Robust accuracy", "Seconds", "Passes fwd / bwd", "Queries"]
TIPS = ["The attack of each stage, in order; each attacks only the images still robust before it. Sanity probes "
        "follow the stages", "This stage's progress", "Images still robust after this stage (whole set), with the "
        "95% Wilson interval; ≈ while the stage runs", "Wall time of the stage",
        "Images through the model's forward / backward passes in this stage",
        "Model queries per image, summed (score-based stages: Square)"]
STATUS_COLORS = {"done": "#2e7d32", "cancelled": "#ef6c00", "skipped": "#757575", "running": "#1565c0"}
BAR_COLORS = {"done": "#a5d6a7", "cancelled": "#ffcc80", "skipped": "#e0e0e0", "running": "#90caf9"}
# what each sanity flag means, in a few plain words (the core's message gives the details)
FLAG_TITLES = {
    "probabilities": "The model returns probabilities, not logits",
    "randomness": "The model is random: the same input gives different outputs",
    "gradient-vanishing": "Gradients vanish on some images (masked gradients)",
    "gradient-nonfinite": "NaN or infinite outputs or gradients",
    "gradient-shattered": "Gradients point in unrelated directions a grey level apart (shattered)",
    "zero-gradients": "The model's output has no usable input gradient",
    "non-finite": "The model returns NaN or infinite values",
    "blackbox-beats-whitebox": "The black-box attack beat the gradient attacks (obfuscated gradients)",
    "budget-eps": "Accuracy is not monotone in ε",
    "budget-steps": "More attack budget did worse",
    "few-images": "Too few images for a precise number",
}
CARD_KEYS = ["name", "architecture", "dataset", "threat_model", "eps", "clean_acc", "autoattack_acc", "advgui_ci95",
             "advgui_suite", "advgui_n_images", "advgui_complete", "number_forward_passes", "additional_data",
             "advgui_warnings", "footnote", "link", "authors", "venue", "reported"]


def _pct(v: float) -> str:
    return "–" if v != v else f"{100 * v:.1f}%"


def _interval(k: int, n: int) -> str:
    from advgui.core.sanity import wilson_interval
    lo, hi = wilson_interval(k, n)
    return f"{100 * lo:.1f}–{100 * hi:.1f}"


class EvaluateTab(QWidget):
    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.e = session.evaluate
        lay = scrolled_page(self)
        # -- what to run
        row = QHBoxLayout()
        self.suite = QComboBox()
        for key, text in SUITE_NAMES.items():
            self.suite.addItem(key.capitalize(), key)
            self.suite.setItemData(self.suite.count() - 1, text, Qt.ItemDataRole.ToolTipRole)
        self.suite.setToolTip("quick: APGD-CE (50 steps) → APGD-T (3 targets) → Square (1000 queries), for a first "
                              "look; standard: APGD-CE (100) → APGD-T (9 targets) → APGD-T top-3 restart → Square "
                              "(5000 queries), the number to report")
        self.eps = EpsEditor()
        self.eps.setToolTip("The threat model's budget. L∞: per pixel, in pixel units (images in 0–1) and in /255 "
                            "steps; L2: of the whole image")
        self.norm = QComboBox()
        self.norm.addItem("L∞", "linf")
        self.norm.addItem("L2", "l2")
        self.max_images = QSpinBox()
        self.max_images.setRange(0, 10_000_000)
        self.max_images.setSingleStep(50)
        self.max_images.setSpecialValueText("all")
        self.max_images.setToolTip("Evaluate at most this many of the open images (a fixed random subset); "
                                   "about 1000 images give a ±3-point interval")
        for label, w in (("Suite", self.suite), ("Norm", self.norm), ("Images", self.max_images)):
            row.addWidget(QLabel(label))
            row.addWidget(w)
        row.addStretch(1)
        lay.addLayout(row)
        brow = QHBoxLayout()
        brow.addWidget(QLabel("ε"))
        brow.addWidget(self.eps)
        brow.addStretch(1)
        self.run_btn = QPushButton("▶ Evaluate")
        self.run_btn.setToolTip("Run the suite on the open model and images in the background")
        self.cancel_btn = QPushButton("■ Cancel")
        self.cancel_btn.setToolTip("Stop at the running attack's next step; finished stages are kept and the "
                                   "result is an upper bound")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("not started")
        brow.addWidget(self.run_btn)
        brow.addWidget(self.cancel_btn)
        lay.addLayout(brow)
        lay.addWidget(self.progress)
        self.what = ElidedLabel("")
        lay.addWidget(self.what)
        # -- the headline
        self.headline = plain(QLabel("No evaluation yet."))
        self.headline.setFont(heading_font(self.font(), 1.35))
        self.headline.setWordWrap(True)
        self.headline.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.subline = plain(QLabel("Choose the suite and ε, then press Evaluate. The suite attacks every image "
                                    "with several complementary attacks; an image counts as robust only if it "
                                    "survives all of them."))
        self.subline.setWordWrap(True)
        self.subline.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.headline.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.headline)
        lay.addWidget(self.subline)
        # -- the sanity flags, right under the number they qualify
        self.flags_title = QLabel("Sanity checks")
        self.flags_title.setFont(heading_font(self.font(), 1.0))
        lay.addWidget(self.flags_title)
        self.flags = QFrame()
        self.flags.setFrameShape(QFrame.Shape.StyledPanel)
        self.flags_lay = QVBoxLayout(self.flags)
        self.flags_lay.setContentsMargins(6, 4, 6, 4)
        self.flags_lay.setSpacing(4)
        lay.addWidget(self.flags)
        # -- stages
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for c, tip in enumerate(TIPS):
            self.table.horizontalHeaderItem(c).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        fm = self.fontMetrics()
        for c, text in enumerate(["APGD-T top-3 restart", "running 100%", "100.0% (99.9–100.0)", "0000.0",
                                  "000000 / 000000", "Queries"]):
            hh.resizeSection(c, fm.horizontalAdvance(text) + 18)
        self.table.verticalHeader().setDefaultSectionSize(fm.height() + 8)
        self.table.setMinimumWidth(120)       # a narrow window scrolls the table sideways, not the tab
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        lay.addWidget(self.table)
        # -- actions
        bottom = QHBoxLayout()
        self.fooled = QComboBox()
        self.fooled.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.fooled.setMinimumContentsLength(12)
        self.fooled.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.fooled.setToolTip("The images the suite fooled: the stage that did it, the true class → the adversarial "
                               "prediction")
        self.open_btn = QPushButton("Show in Explore")
        self.open_btn.setToolTip("Show the chosen image and its stored adversarial image (re-checked) in the "
                                 "Explore views")
        self.save_btn = QPushButton("Save results…")
        self.save_btn.setToolTip("Write robustness.json (every number, per image) and card.json into a folder")
        bottom.addWidget(QLabel("Fooled"))
        bottom.addWidget(self.fooled, 1)
        bottom.addWidget(self.open_btn)
        lay.addLayout(bottom)
        bottom = QHBoxLayout()                  # the files on a row of their own: the tab fits 1024 px
        bottom.addStretch(1)
        bottom.addWidget(self.save_btn)
        from .report_button import ReportButton
        e_ = session.evaluate
        self.report = ReportButton(session, lambda: [f] if (f := e_.last_folder()) else [],
                                   [e_.saved, e_.started, e_.finished],
                                   tip="Write one self-contained HTML file (or a PDF) with this evaluation's numbers, "
                                       "flags and card, for people without advgui",
                                   missing="Save the results first: the report is made from their folder")
        bottom.addWidget(self.report)
        lay.addLayout(bottom)
        card_title = QLabel("Card (RobustBench's fields; card.json)")
        card_title.setFont(heading_font(self.font(), 1.0))
        lay.addWidget(card_title)
        self.card = QTableWidget(0, 2)
        self.card.setHorizontalHeaderLabels(["field", "value"])
        self.card.verticalHeader().setVisible(False)
        self.card.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.card.setWordWrap(True)
        self.card.horizontalHeader().resizeSection(0, fm.horizontalAdvance("number_forward_passes") + 16)
        self.card.horizontalHeader().setStretchLastSection(True)
        self.card.setMinimumHeight(6 * (fm.height() + 8))
        self.card.setMinimumWidth(120)
        lay.addWidget(self.card, 1)
        self._show_request(self.e.request)
        self._eps_set = False
        self.run_btn.clicked.connect(lambda: self.e.run(self.request()))
        self.cancel_btn.clicked.connect(self._cancel)
        self.open_btn.clicked.connect(self._open)
        self.save_btn.clicked.connect(self.save_dialog)
        e = self.e
        e.started.connect(self._started)
        e.prepared.connect(self._prepared)
        e.stage_changed.connect(self._stage)
        e.progress.connect(self._progress)
        e.finished.connect(self._finished)
        e.failed.connect(self._failed)
        e.saved.connect(lambda p: self.subline.setText(f"Saved {p['json']} and {Path(p['card']).name}."))
        session.model_changed.connect(self._model)
        session.images_changed.connect(lambda _o: self._set_running(self.e.running))
        self._set_running(False)
        self._show_flags(None)

    # -- inputs ------------------------------------------------------------------------------------------------------
    def _show_request(self, r: EvaluateRequest) -> None:
        self.suite.setCurrentIndex(max(0, self.suite.findData(r.suite)))
        self.eps.setValue(r.eps)
        self.norm.setCurrentIndex(max(0, self.norm.findData(r.norm)))
        self.max_images.setValue(r.max_images)

    def request(self) -> EvaluateRequest:
        return replace(self.e.request, suite=self.suite.currentData() or "quick", eps=float(self.eps.value()),
                       norm=self.norm.currentData() or "linf", max_images=self.max_images.value())

    def _model(self, m: Any) -> None:
        # a model's first evaluation starts from the ε set in the Attack panel (unless one was remembered)
        if not self._eps_set and not self.s.settings.get_dict("evaluate"):
            eps = self.s.attack.value("eps")
            if eps:
                self.eps.setValue(float(eps))
        self._eps_set = True
        self._set_running(self.e.running)

    def _set_running(self, running: bool) -> None:
        ready = self.s.model is not None and self.s.images is not None
        self.run_btn.setEnabled(not running and ready)
        self.cancel_btn.setEnabled(running)
        for w in (self.suite, self.eps, self.norm, self.max_images):
            w.setEnabled(not running)
        res = self.e.latest()
        self.save_btn.setEnabled(not running and res is not None)
        self.open_btn.setEnabled(not running and self.fooled.count() > 0)
        self.fooled.setEnabled(not running and self.fooled.count() > 0)

    # -- the run ------------------------------------------------------------------------------------------------------
    def _started(self, r: EvaluateRequest) -> None:
        self.table.setRowCount(0)
        self.fooled.clear()
        self.card.setRowCount(0)
        self._show_flags(None)
        self.progress.setValue(0)
        self.progress.setFormat("decoding the images…")
        self.headline.setText("Evaluating…")
        self.subline.setText(f"{self.s.model_name}: {r.describe()}.")
        self._set_running(True)

    def _prepared(self, info: Any) -> None:
        self.what.setText(f"{self.s.model_name} on {info.n} images · {info.note}"
                          + (f" · {len(info.skipped)} unreadable, left out" if info.skipped else ""))
        self.table.setRowCount(0)
        for r in info.stages:
            self._stage(r)

    def _row_of(self, r: StageRow) -> int:
        for i in range(self.table.rowCount()):
            if self.table.item(i, 0).data(Qt.ItemDataRole.UserRole) == r.index:
                return i
        i = self.table.rowCount()
        self.table.insertRow(i)
        bar = QProgressBar()
        bar.setRange(0, 1000)
        bar.setTextVisible(True)
        self.table.setCellWidget(i, 1, bar)
        for c in range(len(COLUMNS)):
            if c != 1:
                it = QTableWidgetItem("")
                if c >= 2:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, c, it)
        self.table.item(i, 0).setData(Qt.ItemDataRole.UserRole, r.index)
        return i

    def _stage(self, r: StageRow) -> None:
        i = self._row_of(r)
        name = ("check: " if r.probe else "") + r.label
        self.table.item(i, 0).setText(name)
        self.table.item(i, 0).setToolTip(plain_tip(name + (f"\n{r.note}" if r.note else "")))
        bar = self.table.cellWidget(i, 1)
        status = r.status
        bar.setValue(int(1000 * (1.0 if status in ("done", "skipped") else r.fraction)))
        bar.setFormat(f"running {100 * r.fraction:.0f}%" if status == "running" else status)
        bar.setStyleSheet("QProgressBar { border: 1px solid #b0bec5; border-radius: 2px; text-align: center; }"
                          f"QProgressBar::chunk {{ background: {BAR_COLORS.get(status, '#cfd8dc')}; }}")
        bar.setToolTip(plain_tip(r.note or status))
        if status == "pending" or not r.n:
            acc = ""
        elif status == "running":
            acc = f"≈ {_pct(r.robust_accuracy)}"
        else:
            acc = f"{_pct(r.robust_accuracy)} ({_interval(r.robust, r.n)})"
        self.table.item(i, 2).setText(acc)
        self.table.item(i, 3).setText("" if status == "pending" else f"{r.seconds:.1f}")
        self.table.item(i, 4).setText(f"{r.forward_images} / {r.backward_images}" if status in ("done", "cancelled")
                                      and (r.forward_images or r.backward_images) else "")
        self.table.item(i, 5).setText(str(r.queries) if r.queries else "")
        color = QBrush(QColor(STATUS_COLORS.get(status, "#000000"))) if status in ("cancelled", "skipped") else None
        for c in (0, 2):
            if color is not None:
                self.table.item(i, c).setForeground(color)
        self._fit_table()

    def _fit_table(self) -> None:
        t = self.table
        h = t.horizontalHeader().height() + 2 * t.frameWidth() + 2
        h += sum(t.rowHeight(i) for i in range(t.rowCount()))
        if t.horizontalHeader().length() > t.viewport().width():     # room for the sideways scroll bar
            h += t.horizontalScrollBar().sizeHint().height()
        t.setFixedHeight(h)

    def resizeEvent(self, ev: Any) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        self._fit_table()

    def _progress(self, p: Any) -> None:
        self.progress.setValue(int(1000 * p.overall))
        if p.kind == "decode":
            self.progress.setFormat(p.label + "…")
        elif p.kind in ("start", "checks"):
            self.progress.setFormat("checking the model and its gradients…")
        elif p.stage_index >= 0:
            self.progress.setFormat(f"stage {p.stage_index + 1}/{p.n_stages}: {p.label} · %p%")
        elif p.kind == "probe":
            self.progress.setFormat(f"sanity probe: {p.label}")
        if p.kind not in ("decode",) and p.n:
            self.headline.setText(f"Robust so far: ≤ {_pct((p.robust - p.fooled_live) / p.n)} of {p.n} images "
                                  f"· {p.elapsed:.0f} s")

    def _cancel(self) -> None:
        self.e.cancel()
        self.progress.setFormat("cancelling…")
        self.cancel_btn.setEnabled(False)

    def _failed(self, msg: Any) -> None:
        self.progress.setFormat("cancelled" if msg.kind == "info" else "failed")
        self.headline.setText("No result.")
        self.subline.setText(msg.text)
        self._set_running(False)

    def _finished(self, res: Any) -> None:
        rep = res.report
        for r in self.e.rows:
            self._stage(r)
        lo, hi = rep.ci95
        self.progress.setValue(self.progress.maximum() if not rep.cancelled else self.progress.value())
        self.progress.setFormat(f"cancelled after {rep.seconds:.1f} s" if rep.cancelled else
                                f"finished in {rep.seconds:.1f} s")
        bound = "≤ " if rep.cancelled else ""
        self.headline.setText(f"Robust accuracy {bound}{_pct(rep.robust_accuracy)}  (95% interval "
                              f"{100 * lo:.1f}–{100 * hi:.1f}%)  ·  clean {_pct(rep.clean_accuracy)}")
        from advgui.core.eps import as_255_fraction
        eps_txt = f"{rep.eps:.4g}" + (f" = {as_255_fraction(rep.eps)}" if rep.norm == "linf" and
                                       as_255_fraction(rep.eps) else "")
        labels = "true labels" if rep.label_source == "labels" else "clean predictions as labels"
        sub = (f"{res.model_name}, {rep.n} images ({labels}), {'L∞' if rep.norm == 'linf' else 'L2'} ε {eps_txt}, "
               f"{rep.suite} suite: {' → '.join(st.label for st in rep.stages)}; per-image worst case over every "
               f"stage and sanity probe.")
        if rep.cancelled:
            sub = ("INCOMPLETE: cancelled before every stage finished, so this is an upper bound — a complete run "
                   "can only find more adversarial images. ") + sub
        self.subline.setText(sub)
        self._show_flags(rep.warnings)
        self._show_card(res.card)
        self.fooled.clear()
        names = self.s.class_names
        from advgui.session.display import class_name
        for k in res.fooled():
            path = rep.paths[k] if rep.paths else str(k)
            by = next((st.label for st in rep.stages if st.attack == rep.fooled_by[k]), rep.fooled_by[k])
            self.fooled.addItem(f"{path} · {by}: {class_name(names, int(rep.labels[k]))} → "
                                f"{class_name(names, int(rep.adv_pred[k]))}", k)
            self.fooled.setItemData(self.fooled.count() - 1, self.fooled.itemText(self.fooled.count() - 1),
                                    Qt.ItemDataRole.ToolTipRole)
        self._set_running(False)

    def _show_flags(self, warnings: Optional[list]) -> None:
        while self.flags_lay.count():
            w = self.flags_lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self._flag_texts: list[str] = []

        def add(text: str, color: str, tip: str = "") -> None:
            lab = plain(QLabel(text))
            lab.setWordWrap(True)
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lab.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            lab.setStyleSheet(f"color: {color};")
            lab.setToolTip(tip)
            self.flags_lay.addWidget(lab)
            self._flag_texts.append(text)

        if warnings is None:
            add("The sanity checks' flags appear here after a run: each one says why a number could be too high.",
                "#757575")
        elif not warnings:
            add("✔ No flags: no sign of masked gradients, randomness, probabilities or a budget problem.", "#2e7d32")
        for w in warnings or []:
            add(f"⚠ {FLAG_TITLES.get(w.code, w.code)} [{w.code}]\n{w.message}", "#8a5300", w.code)
        n = len(warnings or [])
        self.flags_title.setText("Sanity checks" + (f": {n} flag{'s' if n != 1 else ''}" if n else ""))
        self.flags.setStyleSheet("" if not n else "QFrame { background: #fff4e5; }")

    def flag_texts(self) -> list[str]:
        return list(self._flag_texts)

    def _show_card(self, card: dict) -> None:
        keys = [k for k in CARD_KEYS if k in card] + [k for k in card if k not in CARD_KEYS]
        self.card.setRowCount(len(keys))
        for i, k in enumerate(keys):
            v = card[k]
            if isinstance(v, list):
                text = ", ".join(str(x) for x in v) if k != "advgui_ci95" else f"{v[0]}–{v[1]}%"
            elif isinstance(v, bool):
                text = "yes" if v else "no"
            else:
                text = str(v)
            for c, t in enumerate((k, text)):
                it = QTableWidgetItem(t)
                it.setToolTip(t)
                self.card.setItem(i, c, it)
        self.card.resizeRowsToContents()

    def card_values(self) -> dict[str, str]:
        return {self.card.item(i, 0).text(): self.card.item(i, 1).text() for i in range(self.card.rowCount())}

    # -- actions -------------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        k = self.fooled.currentData()
        if k is not None:
            self.e.open_in_explore(int(k))

    def save_dialog(self) -> None:
        res = self.e.latest()
        if res is None:
            return
        start = res.folder or str(Path.cwd() / f"eval-{self.s.model_name or 'model'}")
        folder = QFileDialog.getExistingDirectory(self, "Save robustness.json and card.json into a folder", start)
        if folder:
            self.save_to(folder)

    def save_to(self, folder: str) -> None:
        """Save into ``folder``, asking first when it already holds results."""
        there = [n for n in ("robustness.json", "card.json") if (Path(folder) / n).exists()]
        if not there:
            self.e.save(folder)
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Replace the results?",
                          f"{folder} already holds {' and '.join(there)}. Replace them?", parent=self)
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel)
        box.buttonClicked.connect(lambda b: box.standardButton(b) == QMessageBox.StandardButton.Yes
                                  and self.e.save(folder))
        self._question = box
        box.open()
