"""The Harden tab: a view of ``session.harden`` — choose data, method, ε and epochs; train a copy of the
window's model in the background with live curves; then both models' robustness curves on one plot; save the
weights or open the trained model in Explore. (The pipeline itself is :mod:`advgui.core.harden`.)"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QSizePolicy, QSpinBox, QVBoxLayout, QWidget)

from advgui.session import Session
from advgui.session.harden import HOLD_OUT, METHODS, HardenRequest

from .widgets import ElidedLabel, EpsEditor, SideBySide, plain, scrolled_page

HOLD_OUT_TEXT = "(hold out 10% of the data)"
DATA_EXAMPLES = ["demo-digits", "demo-digits-test"]


def _combo(items: list[str], tip: str) -> QComboBox:
    c = QComboBox()
    c.setEditable(True)
    c.addItems(items)
    c.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
    c.setToolTip(tip)
    c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    c.setMinimumContentsLength(8)
    c.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    return c


def _row(*widgets: QWidget) -> QWidget:
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(4)
    for i, x in enumerate(widgets):
        lay.addWidget(x, 1 if i == 0 or isinstance(x, (QSpinBox, QDoubleSpinBox)) else 0)
    return w


def _pct(v: float) -> str:
    return "–" if v != v else f"{100 * v:.1f}%"


def _ci(ci: Any) -> str:
    return f"95% interval {100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


COMPARE = [("curves", "FGSM + PGD curves", "Worst case of FGSM and PGD at 0, ½, 1, 1½ and 2 times the training ε "
            "(the default; quick)"),
           ("quick", "Quick suite", "APGD-CE → APGD-T → Square at the training ε: both robust accuracies with 95% "
            "intervals (slower, stronger)"),
           ("standard", "Standard suite", "The AutoAttack-grade standard suite at the training ε (slowest, the "
            "number to report)")]


class HardenTab(QWidget):
    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.h = session.harden
        self.plots: Any = None
        lay = scrolled_page(self)
        left, right = QFormLayout(), QFormLayout()
        for f in (left, right):
            f.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.forms = SideBySide(left, right)        # one above the other on a narrow window
        lay.addWidget(self.forms)
        self.data = _combo(DATA_EXAMPLES, "demo-digits: the built-in handwritten digits (train split); or an "
                           "ImageFolder tree: one subfolder per class, named after the model's classes")
        self.data_btn = QPushButton("Folder…")
        left.addRow("Data", _row(self.data, self.data_btn))
        self.val = _combo(["demo-digits-test", HOLD_OUT_TEXT], "Validated after every epoch, and used for the final "
                          "robustness curves")
        self.val_btn = QPushButton("Folder…")
        right.addRow("Validation", _row(self.val, self.val_btn))
        self.method = QComboBox()
        for key, text, tip in METHODS:
            self.method.addItem(text, key)
            self.method.setItemData(self.method.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        left.addRow("Method", self.method)
        self.compare = QComboBox()
        for key, text, tip in COMPARE:
            self.compare.addItem(text, key)
            self.compare.setItemData(self.compare.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.compare.setToolTip("How the starting and the trained model are compared after training")
        self.eps = EpsEditor()
        self.eps.setToolTip("Training budget (L∞). Validation and the robustness curves use it too.")
        right.addRow("ε", self.eps)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.pgd_steps = QSpinBox()
        self.pgd_steps.setRange(1, 100)
        self.pgd_steps.setToolTip("PGD steps per training batch (step size 2.5·ε/steps)")
        left.addRow("Epochs", _row(self.epochs, QLabel("PGD steps"), self.pgd_steps))
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(5e-4)
        self.max_images = QSpinBox()
        self.max_images.setRange(0, 10_000_000)
        self.max_images.setSingleStep(100)
        self.max_images.setSpecialValueText("all")
        self.max_images.setToolTip("Train on at most this many images (a fixed random subset), for a quick run")
        right.addRow("Learning rate", _row(self.lr, QLabel("images"), self.max_images))
        left.addRow("Compare", self.compare)
        srow = QHBoxLayout()
        self.start_label = ElidedLabel("waiting for the model…")
        self.scratch = QCheckBox("from scratch")
        self.scratch.setToolTip("Re-initialise the weights instead of fine-tuning the loaded ones")
        srow.addWidget(QLabel("Start from"))
        srow.addWidget(self.start_label, 1)
        srow.addWidget(self.scratch)
        lay.addLayout(srow)
        brow = QHBoxLayout()
        self.train_btn = QPushButton("▶ Train")
        self.train_btn.setToolTip("Train a copy of the model in the background; the window keeps its model")
        self.cancel_btn = QPushButton("■ Cancel")
        self.cancel_btn.setToolTip("Stop after the current batch; the weights so far can still be saved")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("not started")
        brow.addWidget(self.train_btn)
        brow.addWidget(self.cancel_btn)
        brow.addWidget(self.progress, 1)
        lay.addLayout(brow)
        self.message = plain(QLabel())
        self.message.setWordWrap(True)
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.message.hide()
        lay.addWidget(self.message)
        self.plot_area = QVBoxLayout()
        self._placeholder = QLabel("Live curves appear here once training starts.")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.plot_area.addWidget(self._placeholder)
        lay.addLayout(self.plot_area, 1)
        bottom = QHBoxLayout()
        self.summary = plain(QLabel("Choose the data and the method, then press Train."))
        self.summary.setWordWrap(True)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.save_btn = QPushButton("Save weights…")
        self.open_btn = QPushButton("Open in Explore")
        self.open_btn.setToolTip("Make the trained model the window's model (saved under the advgui "
                                 "configuration folder unless you saved it already)")
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.save_btn)
        bottom.addWidget(self.open_btn)
        lay.addLayout(bottom)
        self._messages: list[str] = []
        self._show_request(self.h.request)
        self.data_btn.clicked.connect(lambda: self._pick_folder(self.data))
        self.val_btn.clicked.connect(lambda: self._pick_folder(self.val))
        self.method.currentIndexChanged.connect(lambda _i: self.pgd_steps.setEnabled(self.method.currentData() == "pgd"))
        self.data.currentTextChanged.connect(self._data_changed)
        self.train_btn.clicked.connect(lambda: self.h.start(self.request()))
        self.cancel_btn.clicked.connect(self._cancel)
        self.save_btn.clicked.connect(self.save_dialog)
        self.open_btn.clicked.connect(self.h.open_in_explore)
        h = self.h
        h.started.connect(self._started)
        h.data_ready.connect(self._data_ready)
        h.batch_added.connect(lambda x, y: self.ensure_plots().add_batches([(x, y)]))
        h.phase_changed.connect(self._phase)
        h.epoch_done.connect(self._epoch)
        h.trained.connect(self._trained)
        h.curves_ready.connect(self._curves)
        h.suite_ready.connect(self._suite)
        h.finished.connect(self._finished)
        h.failed.connect(lambda msg: self._note(msg.text))
        h.saved.connect(lambda p: self._note(f"Saved {p['weights']} (log: {Path(p['log_csv']).name}, "
                                             f"{Path(p['log_json']).name})."))
        session.model_changed.connect(self._model)
        self._set_running(False)

    # -- inputs ----------------------------------------------------------------------------------------------------
    def _show_request(self, r: HardenRequest) -> None:
        self.data.setEditText(r.data)
        self.val.setEditText(r.val or HOLD_OUT_TEXT)
        self.method.setCurrentIndex(max(0, self.method.findData(r.method)))
        self.eps.setValue(r.eps)
        self.epochs.setValue(r.epochs)
        self.pgd_steps.setValue(r.pgd_steps)
        self.lr.setValue(r.lr)
        self.max_images.setValue(r.max_images)
        self.scratch.setChecked(r.from_scratch)
        self.compare.setCurrentIndex(max(0, self.compare.findData(r.compare)))

    def request(self) -> HardenRequest:
        val = self.val.currentText().strip()
        return replace(self.h.request, data=self.data.currentText().strip() or "demo-digits",
                       val=HOLD_OUT if val in ("", HOLD_OUT_TEXT) else val, method=self.method.currentData() or "pgd",
                       eps=float(self.eps.value()), epochs=self.epochs.value(), pgd_steps=self.pgd_steps.value(),
                       lr=float(self.lr.value()), max_images=self.max_images.value(),
                       from_scratch=self.scratch.isChecked(), compare=self.compare.currentData() or "curves")

    def _pick_folder(self, combo: QComboBox) -> None:
        cur = combo.currentText().strip()
        p = QFileDialog.getExistingDirectory(self, "Choose an ImageFolder tree (one subfolder per class)",
                                             cur if cur and Path(cur).is_dir() else "")
        if p:
            combo.setEditText(p)

    def _data_changed(self, text: str) -> None:
        # the built-in digits come with their own held-out split; a folder holds out 10% unless told otherwise
        if self.val.currentText().strip() in ("demo-digits-test", HOLD_OUT_TEXT):
            self.val.setEditText("demo-digits-test" if text.strip() == "demo-digits" else HOLD_OUT_TEXT)

    def _model(self, m: Any) -> None:
        name = self.s.model_name
        self.start_label.setText(f"{name}, the model loaded in the window ({m.summary['classes']} classes, "
                                 f"{m.summary['input']}). Training changes a copy: the window keeps its model until "
                                 "“Open in Explore”.")
        self._set_running(self.h.running)

    # -- the run -------------------------------------------------------------------------------------------------
    def ensure_plots(self) -> Any:
        if self.plots is None:
            from .harden_plots import HardenPlots
            self.plots = HardenPlots()
            self.plot_area.replaceWidget(self._placeholder, self.plots)
            self._placeholder.deleteLater()
        return self.plots

    def showEvent(self, ev: Any) -> None:  # noqa: N802 - Qt API
        self.ensure_plots()
        super().showEvent(ev)

    def _set_running(self, running: bool) -> None:
        self.train_btn.setEnabled(not running and self.s.model is not None)
        self.cancel_btn.setEnabled(running)
        for w in (self.data, self.data_btn, self.val, self.val_btn, self.method, self.eps, self.epochs, self.lr,
                  self.max_images, self.scratch, self.compare):
            w.setEnabled(not running)
        self.pgd_steps.setEnabled(not running and self.method.currentData() == "pgd")
        has = self.h.result is not None and bool(self.h.result.history)
        self.save_btn.setEnabled(not running and has)
        self.open_btn.setEnabled(not running and has)

    def _note(self, text: str) -> None:
        self._messages.append(text)
        self.message.setText("\n".join(self._messages))
        self.message.setVisible(True)

    def messages(self) -> list[str]:
        return list(self._messages)

    def _started(self, r: HardenRequest) -> None:
        self._messages = []
        self.message.hide()
        self.ensure_plots().reset(r.epochs, r.eps, r.val_steps)
        self.progress.setValue(0)
        self.progress.setFormat("loading the data…")
        self.summary.setText(f"Training a copy of {self.h.start_name}: {r.describe()}, {r.epochs} "
                             f"epoch{'s' if r.epochs != 1 else ''} on {r.data}…")
        self._set_running(True)

    def _data_ready(self, info: Any) -> None:
        self._note(f"Training on {info.n_train} images of {info.data_source}; validating on {info.n_val} images: "
                   f"{info.val_source}.")
        for note in info.notes:
            self._note(note[:1].upper() + note[1:] + ".")
        if info.skipped:
            shown = "; ".join(Path(s.partition(": ")[0]).name + " — " + s.partition(": ")[2] for s in info.skipped[:4])
            more = f"; and {len(info.skipped) - 4} more" if len(info.skipped) > 4 else ""
            self._note(f"Skipped {len(info.skipped)} file{'s' if len(info.skipped) != 1 else ''}: {shown}{more}.")
            self.message.setToolTip("\n".join(info.skipped))
        r = self.h.request
        self.ensure_plots().reset(r.epochs, r.eps, r.val_steps, n_batches_hint=self.h.batches_hint())

    def _phase(self, ph: Any) -> None:
        if not self.h.cancelled:
            self.progress.setValue(int(round(1000 * min(1.0, max(0.0, ph.fraction)))))
            self.progress.setFormat(f"{ph.text} · %p%" if ph.phase != "done" else ph.text)

    def _epoch(self, rec: Any) -> None:
        self.ensure_plots().set_epochs(self.h.records)
        if rec.overfit:
            self._note(f"Warning: catastrophic overfitting at epoch {rec.epoch}. Training stops and keeps the epoch "
                       "with the best PGD accuracy.")

    def _trained(self, result: Any) -> None:
        if result.overfit and not any("overfitting" in m for m in self._messages):
            self._note(f"Warning: {result.overfit}.")
        for note in result.notes:
            if note.startswith(("training stopped", "weights restored")):
                self._note(note[:1].upper() + note[1:] + ".")
        what = "robustness curves" if self.h.request.compare == "curves" else f"{self.h.request.compare} suite results"
        self.summary.setText(self.describe_result() + ("" if result.cancelled else f" · computing both models' {what}…"))
        if not result.cancelled:
            self.ensure_plots().clear_robustness(f"computing the {what} of both models…")

    def describe_result(self) -> str:
        """What was trained and what Save writes: the weights after the last finished batch."""
        res = self.h.result
        if res is None or not res.history:
            return "Stopped before the first batch finished; nothing to save."
        last = self.h.last_validated
        n_ep = len(res.history)
        if res.cancelled:
            head = f"Stopped during epoch {n_ep}" if (last is None or last.epoch < n_ep) else f"Stopped after {n_ep} epochs"
        else:
            head = f"Trained {n_ep} epoch{'s' if n_ep != 1 else ''}"
        text = f"{head} in {res.elapsed:.0f} s."
        if last is not None:
            text += (f" Epoch {last.epoch} (last validated): clean {_pct(last.val_clean_acc)}, FGSM "
                     f"{_pct(last.val_fgsm_acc)}, PGD {_pct(last.val_pgd_acc)}.")
        else:
            text += " No epoch was validated."
        if res.restored_epoch is not None:
            text += f" Save writes the weights of epoch {res.restored_epoch} (best PGD accuracy)."
        elif res.cancelled:
            text += " Save writes the weights as they were after the last finished batch."
        return text

    def _curves(self, pair: Any) -> None:
        r = self.h.request
        start, trained = self.curve_labels()
        self.ensure_plots().set_robustness(pair, start, trained, r.eps)
        k = min(range(len(pair.eps)), key=lambda i: abs(pair.eps[i] - r.eps))
        s, t = pair.start.worst[k], pair.trained.worst[k]
        self.summary.setText(self.describe_result() + f"\nWorst case at ε {pair.eps[k]:.3g} on {pair.n} images: "
                             f"{start} {100 * s:.1f}% → trained {100 * t:.1f}%; clean {100 * pair.start.clean:.1f}% "
                             f"→ {100 * pair.trained.clean:.1f}%.")
        for mc in (pair.start, pair.trained):
            for warn in mc.warnings:
                self._note(f"{mc.name}: {warn}")

    def _suite(self, pair: Any) -> None:
        start, trained = self.curve_labels()
        self.ensure_plots().set_suite(pair, start, trained)
        s, t = pair.start, pair.trained
        self.summary.setText(self.describe_result() + f"\n{pair.suite.capitalize()} suite at ε {pair.eps:.3g} on "
                             f"{pair.n} images: {start} {_pct(s.robust)} ({_ci(s.ci95)}) → trained {_pct(t.robust)} "
                             f"({_ci(t.ci95)}); clean {_pct(s.clean)} → {_pct(t.clean)}.")
        for ms in (s, t):
            for warn in ms.warnings:
                self._note(f"{ms.name}: {warn}")

    def curve_labels(self) -> tuple[str, str]:
        r = self.h.request
        return f"{self.h.start_name} (start)", f"trained: {r.describe()}, {len(self.h.records)} ep."

    def _cancel(self) -> None:
        self.h.cancel()
        self.progress.setFormat("cancelling…")
        self.cancel_btn.setEnabled(False)

    def _finished(self, cancelled: bool) -> None:
        if cancelled:
            done = sum(1 for r in self.h.records if r.val_pgd_acc == r.val_pgd_acc)
            self.progress.setFormat(f"cancelled after {done} full epoch{'s' if done != 1 else ''}")
            self.summary.setText(self.describe_result())
            if self.plots is not None:
                self.plots.clear_robustness("cancelled: no robustness curves")
        elif self.h.curves is not None or self.h.suite is not None:
            self.progress.setValue(self.progress.maximum())
            self.progress.setFormat(f"finished · {len(self.h.records)} epochs · 100%")
        elif self.h.result is None:
            self.progress.setFormat("failed")
            self.summary.setText("Training failed.")
        self._set_running(False)

    def save_dialog(self) -> None:
        if self.h.result is None:
            return
        p, _ = QFileDialog.getSaveFileName(self, "Save the trained weights", self.h.default_name(),
                                           "safetensors (*.safetensors)")
        if p:
            self.h.save_to(p)
