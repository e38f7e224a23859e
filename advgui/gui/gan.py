"""The GAN tab: a view of ``session.gan`` — train an AdvGAN generator against the window's model on a data set, with
live generator / discriminator / attack losses, the held-out success rate per epoch and a grid of generated
images; cancel (the checkpoint keeps the run: Continue or Train again), save the generator, and use it as the
window's attack. (The training itself is :mod:`advgui.core.gan`.)"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QSizePolicy, QSpinBox, QVBoxLayout, QWidget)

from advgui.session import Session
from advgui.session.gan import GanRequest

from .harden import _combo, _row
from .widgets import ElidedLabel, EpsEditor, plain, plain_tip, scrolled_page

REDRAW_MS = 100          # live curves: at most ~10 redraws a second, with the newest data
DATA_EXAMPLES = ["demo-digits"]
WIDE = 600               # narrower than this, the form shows one field per row


class GanTab(QWidget):
    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.g = session.gan
        self.plots: Any = None
        lay = scrolled_page(self)
        self.form = QGridLayout()            # two label/field columns when wide, one when narrow (_arrange)
        self.form.setHorizontalSpacing(6)
        self.form.setVerticalSpacing(4)
        lay.addLayout(self.form)
        self.data = _combo(DATA_EXAMPLES, "demo-digits: the built-in handwritten digits; an ImageFolder tree (one "
                           "subfolder per class, named after the model's classes); or any folder of images (the "
                           "model's clean predictions then stand in for the labels). 10% is held out.")
        self.data_btn = QPushButton("Folder…")
        self.eps = EpsEditor()
        self.eps.setToolTip("The generator's L∞ bound: every image it makes stays within ε of the original.")
        self.target = QComboBox()
        self.target.setToolTip("Untargeted: change the prediction. A class: push every image towards it.")
        self.target.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.target.setMinimumContentsLength(8)
        self.target.addItem("untargeted", None)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.max_images = QSpinBox()
        self.max_images.setRange(0, 1_000_000)
        self.max_images.setSingleStep(100)
        self.max_images.setSpecialValueText("all")
        self.max_images.setToolTip("Train on at most this many images (a fixed random subset), for a quick run")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(5e-4)
        self.lr.setToolTip("Adam's learning rate for G and D (cosine decay)")
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 4096)
        self._fields = [("Data", _row(self.data, self.data_btn)), ("ε", self.eps), ("Target", self.target),
                        ("Epochs", _row(self.epochs, QLabel("images"), self.max_images)),
                        ("Learning rate", _row(self.lr, QLabel("batch"), self.batch_size))]
        self._labels = [QLabel(t) for t, _w in self._fields]
        self._columns = 0
        self._arrange(2)
        arow = QHBoxLayout()
        self.against = ElidedLabel("waiting for the model…")
        arow.addWidget(QLabel("Against"))
        arow.addWidget(self.against, 1)
        lay.addLayout(arow)
        brow = QHBoxLayout()
        self.train_btn = QPushButton("▶ Train")
        self.train_btn.setToolTip("Train a new generator against the window's model (starts again from scratch)")
        self.continue_btn = QPushButton("Continue")
        self.continue_btn.setToolTip("Resume the earlier run from its checkpoint")
        self.cancel_btn = QPushButton("■ Cancel")
        self.cancel_btn.setToolTip("Stop after the current batch; the checkpoint keeps the run, Save writes G as it is")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("not started")
        for b in (self.train_btn, self.continue_btn, self.cancel_btn):
            brow.addWidget(b)
        brow.addWidget(self.progress, 1)
        lay.addLayout(brow)
        self.ckpt_label = plain(QLabel())
        self.ckpt_label.setWordWrap(True)
        self.ckpt_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.ckpt_label.hide()
        lay.addWidget(self.ckpt_label)
        self.message = plain(QLabel())
        self.message.setWordWrap(True)
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.message.hide()
        lay.addWidget(self.message)
        self.plot_area = QVBoxLayout()
        self._placeholder = QLabel("Live losses, the share of images fooled and the generated images appear here.")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.plot_area.addWidget(self._placeholder)
        lay.addLayout(self.plot_area, 1)
        self.grid_title = ElidedLabel("Generated images")
        f = self.grid_title.font()
        f.setBold(True)
        self.grid_title.setFont(f)
        lay.addWidget(self.grid_title)
        from .gan_plots import ExampleGrid
        self.grid = ExampleGrid()
        lay.addWidget(self.grid)
        bottom = QHBoxLayout()
        self.summary = plain(QLabel("Choose the data, ε and the epochs, then press Train."))
        self.summary.setWordWrap(True)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.save_btn = QPushButton("Save generator…")
        self.save_btn.setToolTip("Write the generator (.safetensors) and its description (.json) next to it")
        self.use_btn = QPushButton("Use as attack")
        self.use_btn.setToolTip("Choose AdvGAN with the saved generator in the Attack panel (Explore, Batch, "
                                "Compare)")
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.save_btn)
        bottom.addWidget(self.use_btn)
        lay.addLayout(bottom)
        self._messages: list[str] = []
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._draw_live)
        self._show_request(self.g.request)
        self.data_btn.clicked.connect(self._pick_folder)
        self.train_btn.clicked.connect(lambda: self.g.start(self.request()))
        self.continue_btn.clicked.connect(lambda: self.g.start(self.request(), resume=True))
        self.cancel_btn.clicked.connect(self._cancel)
        self.save_btn.clicked.connect(self.save_dialog)
        self.use_btn.clicked.connect(self._use)
        for w in (self.epochs, self.max_images, self.batch_size):
            w.valueChanged.connect(lambda _v: self._update_checkpoint())
        self.lr.valueChanged.connect(lambda _v: self._update_checkpoint())
        self.eps.valueChanged.connect(lambda _v: self._update_checkpoint())
        self.target.currentIndexChanged.connect(lambda _i: self._update_checkpoint())
        self.data.currentTextChanged.connect(lambda _t: self._update_checkpoint())
        g = self.g
        g.started.connect(self._started)
        g.data_ready.connect(self._data_ready)
        g.batch_added.connect(self._batch)
        g.epoch_done.connect(self._epoch)
        g.finished.connect(self._finished)
        g.failed.connect(lambda msg: self._note(msg.text))
        g.saved.connect(self._saved)
        g.checkpoint_changed.connect(self._update_checkpoint)
        session.model_changed.connect(self._model)
        self._set_running(False)

    # -- inputs ----------------------------------------------------------------------------------------------------
    def _show_request(self, r: GanRequest) -> None:
        self.data.setEditText(r.data)
        self.eps.setValue(r.eps)
        self.epochs.setValue(r.epochs)
        self.max_images.setValue(r.max_images)
        self.lr.setValue(r.lr)
        self.batch_size.setValue(r.batch_size)
        i = self.target.findData(r.target) if r.target is not None else 0
        self.target.setCurrentIndex(max(0, i))

    def request(self) -> GanRequest:
        return replace(self.g.request, data=self.data.currentText().strip() or "demo-digits",
                       eps=float(self.eps.value()), target=self.target.currentData(), epochs=self.epochs.value(),
                       max_images=self.max_images.value(), lr=float(self.lr.value()),
                       batch_size=self.batch_size.value())

    def _pick_folder(self) -> None:
        cur = self.data.currentText().strip()
        p = QFileDialog.getExistingDirectory(self, "Choose a folder of images (or an ImageFolder tree)",
                                             cur if cur and Path(cur).is_dir() else "")
        if p:
            self.data.setEditText(p)

    def _model(self, m: Any) -> None:
        self.target.blockSignals(True)
        cur = self.target.currentData()
        self.target.clear()
        self.target.addItem("untargeted", None)
        for i, n in enumerate(m.class_names):
            self.target.addItem(f"{i}: {n}" if str(n) != str(i) else str(n), i)
            self.target.setItemData(i + 1, plain_tip(str(n)), Qt.ItemDataRole.ToolTipRole)
        j = self.target.findData(cur if cur is not None else self.g.request.target) if \
            (cur if cur is not None else self.g.request.target) is not None else 0
        self.target.setCurrentIndex(max(0, j))
        self.target.blockSignals(False)
        self.against.setText(f"{self.s.model_name}, the model loaded in the window ({m.summary['classes']} classes, "
                             f"{m.summary['input']}); the model itself is not changed")
        self._set_running(self.g.running)

    def _arrange(self, columns: int) -> None:
        """Lay the fields out in ``columns`` label/field pairs per row."""
        if columns == self._columns:
            return
        self._columns = columns
        for (_t, w), lab in zip(self._fields, self._labels):
            self.form.removeWidget(lab)
            self.form.removeWidget(w)
        for i, ((_t, w), lab) in enumerate(zip(self._fields, self._labels)):
            r, c = divmod(i, columns)
            self.form.addWidget(lab, r, 2 * c)
            self.form.addWidget(w, r, 2 * c + 1)
        for c in range(4):
            self.form.setColumnStretch(c, 1 if c % 2 and c < 2 * columns else 0)

    def resizeEvent(self, ev: Any) -> None:  # noqa: N802 - Qt API
        self._arrange(2 if ev.size().width() >= WIDE else 1)
        super().resizeEvent(ev)

    def _update_checkpoint(self) -> None:
        info = None if self.g.running else self.g.checkpoint_info(self.request())
        self.continue_btn.setEnabled(info is not None and info.can_continue)
        self.ckpt_label.setText("" if info is None else info.text())
        self.ckpt_label.setVisible(info is not None)

    # -- the run -----------------------------------------------------------------------------------------------
    def ensure_plots(self) -> Any:
        if self.plots is None:
            from .gan_plots import GanPlots
            self.plots = GanPlots()
            self.plot_area.replaceWidget(self._placeholder, self.plots)
            self._placeholder.deleteLater()
        return self.plots

    def showEvent(self, ev: Any) -> None:  # noqa: N802 - Qt API
        self.ensure_plots()
        self._update_checkpoint()
        super().showEvent(ev)

    def _set_running(self, running: bool) -> None:
        ready = self.s.model is not None
        self.train_btn.setEnabled(not running and ready)
        self.cancel_btn.setEnabled(running)
        for w in (self.data, self.data_btn, self.eps, self.target, self.epochs, self.max_images, self.lr,
                  self.batch_size):
            w.setEnabled(not running)
        self.save_btn.setEnabled(not running and self.g.can_save)
        self.use_btn.setEnabled(not running and self.g.saved_path is not None)
        if running:
            self.continue_btn.setEnabled(False)
        elif ready:
            self._update_checkpoint()

    def _note(self, text: str) -> None:
        self._messages.append(text)
        self.message.setText("\n".join(self._messages))
        self.message.setVisible(True)

    def messages(self) -> list[str]:
        return list(self._messages)

    def _started(self, r: GanRequest) -> None:
        self._messages = []
        self.message.hide()
        self.ensure_plots().reset(r.epochs)
        self.grid.clear("The generated images of each epoch appear here.")
        self.grid_title.setText("Generated images")
        self.progress.setValue(0)
        self.progress.setFormat("loading the data…")
        self.summary.setText(f"{'Continuing' if self.g.resumed else 'Training'} a generator against "
                             f"{self.g.model_name}: {r.describe(self.s.class_names)}, {r.epochs} "
                             f"epoch{'s' if r.epochs != 1 else ''} on {r.data}…")
        self._set_running(True)

    def _data_ready(self, info: Any) -> None:
        notes = "".join(f", {n}" for n in info.notes)
        self._note(f"Training on {info.n_train} images of {info.source}{notes}; success measured on "
                   f"{info.val_source}.")
        if info.skipped:
            self._note(f"Skipped {len(info.skipped)} unreadable file{'s' if len(info.skipped) != 1 else ''}: "
                       + "; ".join(Path(s.partition(': ')[0]).name for s in info.skipped[:4])
                       + ("; …" if len(info.skipped) > 4 else ""))
        if info.earlier:
            self.ensure_plots().set_epochs(self.g.records)
        self.progress.setFormat("training…")

    def _batch(self, _n: int) -> None:
        if not self._redraw.isActive():
            self._redraw.start()

    def _draw_live(self) -> None:
        g = self.g
        self.ensure_plots().set_losses(g.losses)
        if not g.cancelled:
            self.progress.setValue(int(round(1000 * min(1.0, max(0.0, g.progress)))))
            self.progress.setFormat(f"{g.phase} · %p%")

    def _epoch(self, rec: Any) -> None:
        self._draw_live()
        self.ensure_plots().set_epochs(self.g.records)
        ex = self.g.examples
        if ex is not None and ex.epoch == rec.epoch:
            self.grid.set_examples(ex, self.s.class_names)
            fooled = int(ex.success.sum())
            self.grid_title.setText(f"Epoch {rec.epoch}: {len(ex.success)} held-out images, clean and adversarial "
                                    f"(8-bit) side by side; {fooled} fooled (red)")

    def _finished(self, cancelled: bool) -> None:
        self._redraw.stop()
        if self.plots is not None:
            self.plots.set_losses(self.g.losses)
        if cancelled:
            self.progress.setFormat(f"cancelled · {self.g.phase}" if self.g.last_batch is not None else "cancelled")
        elif self.g.result is not None:
            self.progress.setValue(self.progress.maximum())
            self.progress.setFormat(f"finished · {len(self.g.records)} epochs · 100%")
        else:
            self.progress.setFormat("failed")
        self.summary.setText(self.g.describe_result() if self.g.result is not None else "Training failed.")
        self._set_running(False)

    def _cancel(self) -> None:
        self.g.cancel()
        self.progress.setFormat("cancelling…")
        self.cancel_btn.setEnabled(False)

    # -- keeping the generator ---------------------------------------------------------------------------------
    def save_dialog(self) -> None:
        if not self.g.can_save:
            return
        p, _ = QFileDialog.getSaveFileName(self, "Save the generator", self.g.default_name(),
                                           "AdvGAN generator (*.safetensors)")
        if p:
            self.g.save_to(p)

    def _saved(self, paths: dict) -> None:
        self._note(f"Saved {paths['weights']} (description: {Path(paths['sidecar']).name}). “Use as attack” "
                   "makes it the window's attack.")
        self._set_running(False)

    def _use(self) -> None:
        if self.g.use_as_attack():
            self._note("AdvGAN with this generator is now the attack in the Attack panel: Run attacks the "
                       "selected image in Explore, and the Batch tab the whole set.")
