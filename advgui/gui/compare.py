"""Compare two models side by side in the Explore tab: the same attack, with the same settings and seed, on
the same image, against a second model ("model B", by default ``demo-robust``).

A :class:`CompareRow` sits under the Explore views: a header naming both models, with a chooser for model B,
and a second, compact row of views (original, adversarial, difference) with B's predictions. It follows the
Explore tab: a newly shown image gets B's clean prediction, and every finished run on the window's model
("model A") is repeated on B in a worker, which hands back plain values (:class:`CompareRecord`). The views
are linked to A's for zoom and pan, and share A's amplification of the difference.

Turned on and off with View ▸ Compare with another model (Ctrl+Shift+M) or the toolbar; built after the
first paint, with the Explore tab (it imports pyqtgraph through the views).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QToolButton,
                               QVBoxLayout, QWidget)

from .history import CleanRecord
from .jobs import AttackRequest, Job, LoadedModel, ModelRequest, prepare_torch, track
from .panels import MODEL_FILTER
from .views import DisplayState, TripleView

if TYPE_CHECKING:
    from .main_window import MainWindow

DEFAULT_B = "demo-robust"
B_EXAMPLES = ["demo-robust", "demo"]
A_COLOR = "#1565c0"
B_COLOR = "#6a1b9a"


@dataclass
class CompareRecord:
    """Model B's answers on one image: clean, and (after a run) the attack's re-checked final result."""

    index: int
    clean: CleanRecord
    request: Optional[AttackRequest] = None
    adv: Optional[np.ndarray] = None          # (C, H, W) float32 in [0, 1]
    adv_pred: int = -1
    adv_conf: float = float("nan")
    topk_labels: Optional[np.ndarray] = None  # of the adversarial image
    topk_probs: Optional[np.ndarray] = None
    success: bool = False
    adv8_pred: int = -1
    success8: bool = False
    linf: float = float("nan")
    l2: float = float("nan")
    elapsed: float = 0.0
    targeted: bool = False
    cancelled: bool = False


def compare_job(classifier: Any, image_set: Any, index: int, request: Optional[AttackRequest],
                same_classes: bool, control: Any = None) -> CompareRecord:
    """Model B's clean answer on image ``index`` and, given a request, the same attack against B (worker)."""
    prepare_torch()
    import torch
    from advgui.core.attacks import make_attack
    from .workers import _topk, classify_job
    clean = classify_job(classifier, image_set, index)
    if not same_classes:       # B's classes are not A's: the folder label means nothing to B
        clean.label, clean.label_source = int(clean.topk_labels[0]), "prediction"
    rec = CompareRecord(index, clean)
    if request is None:
        return rec
    attack = make_attack(request.attack, **request.params)
    target = request.target if same_classes else None
    x = torch.from_numpy(clean.image)[None].to(classifier.device)
    observer = control.wrap(lambda _info: False) if control is not None else None
    res = attack.run(classifier, x, torch.tensor([clean.label]),
                     target=None if target is None else torch.tensor([int(target)]), observer=observer,
                     seed=request.seed)
    with torch.no_grad():
        probs = classifier(res.adv.to(classifier.device)).float().softmax(1)[0].cpu().numpy().astype(np.float64)
    tl, tp = _topk(probs)
    rec.request = request
    rec.adv = res.adv[0].numpy().astype(np.float32)
    rec.adv_pred, rec.adv_conf = int(res.adv_pred[0]), float(res.adv_conf[0])
    rec.topk_labels, rec.topk_probs = tl, tp
    rec.success, rec.success8 = bool(res.success[0]), bool(res.success8[0])
    rec.adv8_pred = int(res.adv8_pred[0])
    rec.linf, rec.l2 = float(res.linf[0]), float(res.l2[0])
    rec.elapsed, rec.targeted, rec.cancelled = float(res.elapsed), target is not None, bool(res.cancelled)
    return rec


class _CompareJob(Job):
    """A Job whose cancel also stops the attack inside it."""

    def __init__(self, fn: Any, control: Any, name: str) -> None:
        super().__init__(fn, name)
        self.control = control

    def cancel(self) -> None:
        super().cancel()
        if self.control is not None:
            self.control.cancel()


def _short(spec: str) -> str:
    s = str(spec)
    if s.startswith("torchvision:"):
        return s.split(":", 1)[1]
    return Path(s).name if ("/" in s or "\\" in s) else s


class CompareRow(QWidget):
    """Model B's row under the Explore views."""

    model_ready = Signal(object)       # LoadedModel of B
    compared = Signal(object)          # CompareRecord (clean only, or with the attack)
    failed = Signal(str)

    def __init__(self, window: MainWindow, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.win = window
        self.model_b: Optional[LoadedModel] = None
        self.record: Optional[CompareRecord] = None
        self._load_job: Optional[Job] = None
        self._job: Optional[_CompareJob] = None
        self._titles_a: Optional[tuple[str, str, str]] = None
        self._sync_connected = False
        self._syncing = False
        self._same_size = False
        self._a_had_adv = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.setSpacing(2)
        head = QHBoxLayout()
        head.setSpacing(6)
        self.a_label = QLabel()
        self.a_label.setTextFormat(Qt.TextFormat.RichText)
        self.spec = QComboBox()
        self.spec.setEditable(True)
        self.spec.addItems(B_EXAMPLES)
        self.spec.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.spec.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.spec.setMinimumContentsLength(12)
        self.spec.setToolTip("Model B: demo, demo-robust, torchvision:ARCH, or a model file "
                             "(TorchScript, or safetensors with advgui metadata)")
        self.open_btn = QPushButton("Open…")
        self.open_btn.setToolTip("Open a model file as model B")
        self.status = QLabel()
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.close_btn = QToolButton()
        self.close_btn.setText("✕")
        self.close_btn.setAutoRaise(True)
        self.close_btn.setToolTip("Stop comparing (View ▸ Compare with another model)")
        b_head = QLabel(f"<b style='color:{B_COLOR}'>B</b>")
        head.addWidget(self.a_label)
        head.addSpacing(8)
        head.addWidget(b_head)
        head.addWidget(self.spec)
        head.addWidget(self.open_btn)
        head.addWidget(self.status, 1)
        head.addWidget(self.close_btn)
        lay.addLayout(head)
        self.views = TripleView()
        self._compact(self.views)
        lay.addWidget(self.views, 1)
        self.spec.activated.connect(lambda _i: self.load_b())
        self.spec.lineEdit().returnPressed.connect(self.load_b)
        self.open_btn.clicked.connect(self._open_file)
        self.close_btn.clicked.connect(lambda: self.set_active(False))
        self.action = QAction("Compare with another model", self)
        self.action.setCheckable(True)
        self.action.setShortcut(QKeySequence("Ctrl+Shift+M"))
        self.action.setToolTip("Run the same attack on the same image against a second model, shown under the "
                               "first (Ctrl+Shift+M)")
        self.action.setStatusTip(self.action.toolTip())
        self.action.toggled.connect(self.set_active)
        self.hide()

    @staticmethod
    def _compact(v: TripleView) -> None:
        """B's row: no amplification slider (A's applies), two bar rows, smaller minimum images."""
        v.amp.parentWidget().hide()
        for pane in (v.orig, v.adv):
            item = pane.layout().itemAtPosition(5, 0)
            if item is not None and item.widget() is not None:
                item.widget().hide()
        for bars in (v.orig_bars, v.adv_bars):
            bars.rows = 2
            bars.updateGeometry()
        for pane in (v.orig, v.adv, v.diff):
            pane.glw.setMinimumSize(70, 70)

    # -- on / off ------------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.action.isChecked()

    def set_active(self, on: bool) -> None:
        if self.action.isChecked() != on:
            self.action.setChecked(on)       # comes back here through toggled
            return
        ex = self.win.explore
        self.setVisible(on)
        QTimer.singleShot(0, ex.views.auto_range)       # A's boxes changed height: fit its images again
        if on:
            self._link(ex)
            self._update_names()
            if self.model_b is None or self.model_b.request.spec != self.spec.currentText().strip():
                self.load_b()
            else:
                self.refresh()
        else:
            self._cancel_job()
            self._restore_titles(ex)

    def _link(self, ex: Any) -> None:
        self.views.set_amplification(ex.views.amplification)

    # -- model B -------------------------------------------------------------------------------------------
    def _open_file(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Open model B", "", MODEL_FILTER)
        if p:
            self.spec.setEditText(p)
            self.load_b()

    def load_b(self, spec: Optional[str] = None) -> Job:
        if spec is not None:
            self.spec.setEditText(spec)
        spec = self.spec.currentText().strip() or DEFAULT_B
        if self._load_job is not None and self._load_job.isRunning():
            self._load_job.cancel()
        dev = self.win.model.request.device if self.win.model is not None else "auto"
        req = ModelRequest(spec=spec, device=dev)
        from .workers import load_model_job
        job = Job(lambda: load_model_job(req), "load-model-b")
        self._load_job = job
        self.status.setText(f"<i>loading {_esc(_short(spec))}…</i>")
        job.done.connect(lambda m, j=job: j is self._load_job and self._b_loaded(m))
        job.failed.connect(lambda msg, j=job: j is self._load_job and self._b_failed(msg))
        track(job).start()
        return job

    def _b_loaded(self, m: LoadedModel) -> None:
        self.model_b = m
        self._update_names()
        self.model_ready.emit(m)
        self.refresh()

    def _b_failed(self, msg: str) -> None:
        self.status.setText(f"<span style='color:#b3261e'>Model B not loaded: {_esc(msg)}</span>")
        self.status.setToolTip(msg)
        self.failed.emit(msg)

    def same_classes(self) -> bool:
        a, b = self.win.model, self.model_b
        return a is not None and b is not None and [str(c) for c in a.class_names] == [str(c) for c in b.class_names]

    def _update_names(self) -> None:
        a = self.win.model
        a_name = _short(a.request.describe()) if a is not None else "–"
        self.a_label.setText(f"<b style='color:{A_COLOR}'>A</b> = <b>{_esc(a_name)}</b> (above) · "
                             f"<b style='color:{B_COLOR}'>B</b> =")
        self.a_label.setToolTip(f"A: {a.request.describe() if a is not None else '–'} (the window's model, "
                                "top row)\nB: the model chosen here (bottom row)")
        ex = self.win.explore
        b_name = _short(self.model_b.request.spec) if self.model_b is not None else "B"
        if ex is not None and self.active:
            if self._titles_a is None:
                self._titles_a = (ex.views.orig.title.text(), ex.views.adv.title.text(), ex.views.diff.title.text())
            for pane, what in ((ex.views.orig, "Original"), (ex.views.adv, "Adversarial"),
                               (ex.views.diff, "Difference")):
                pane.title.setText(f"{_elide(a_name)} · {what}")
                pane.title.setToolTip(f"model A: {a_name}")
                pane.title.setStyleSheet(f"color: {A_COLOR};")
        for pane, what in ((self.views.orig, "Original"), (self.views.adv, "Adversarial"),
                           (self.views.diff, "Difference")):
            pane.title.setText(f"{_elide(b_name)} · {what}")
            pane.title.setToolTip(f"model B: {b_name}")
            pane.title.setStyleSheet(f"color: {B_COLOR};")
        if self.model_b is not None:
            same = self.same_classes()
            note = "" if same else " · <span style='color:#8a5300'>other classes than A</span>"
            self.status.setText(f"same attack, same image{note}")
            self.status.setToolTip(f"B: {self.model_b.request.spec}\nThe attack on A is repeated on B with the "
                                   "same settings and seed, on the same image."
                                   + ("" if same else "\nB's classes differ from A's: B's labels are its own "
                                      "clean predictions, and targeted attacks run untargeted."))

    def _restore_titles(self, ex: Any) -> None:
        if ex is None or self._titles_a is None:
            return
        for pane, t in zip((ex.views.orig, ex.views.adv, ex.views.diff), self._titles_a):
            pane.title.setText(t)
            pane.title.setToolTip("")
            pane.title.setStyleSheet("")
        self._titles_a = None

    # -- following the Explore tab -------------------------------------------------------------------------
    def model_a_changed(self, _m: Any) -> None:
        if self.active:
            self._update_names()

    def clean_changed(self, rec: CleanRecord) -> None:
        if not self.active or self.model_b is None:
            return
        ex = self.win.explore
        if ex.mode == "batch":            # a batch row: its attack settings are known, repeat it on B
            self.compare(rec.index, ex.request)
        elif ex.mode == "clean" or self.record is None or self.record.index != rec.index:
            self.compare(rec.index, None)

    def run_started(self) -> None:
        if not self.active:
            return
        self._cancel_job()
        if self.record is not None:
            self.views.show_state(self._state(self.record, waiting=True))

    def run_finished(self, _fin: Any) -> None:
        if self.active and self.model_b is not None:
            ex = self.win.explore
            if ex.clean is not None and ex.request is not None:
                self.compare(ex.clean.index, ex.request)

    def refresh(self) -> None:
        """Bring B's row up to date with what the Explore tab shows."""
        ex = self.win.explore
        if not self.active or self.model_b is None or ex is None or ex.clean is None:
            return
        has_run = (ex.mode == "live" and ex.final is not None) or ex.mode == "batch"
        self.compare(ex.clean.index, ex.request if has_run else None)

    def compare(self, index: int, request: Optional[AttackRequest]) -> Optional[Job]:
        """B's clean answer on image ``index`` and, with a request, the attack against B (in a worker)."""
        if self.model_b is None or self.win.images is None:
            return None
        self._cancel_job()
        from advgui.core.attacks import AttackControl
        clf, s, same = self.model_b.classifier, self.win.images.image_set, self.same_classes()
        control = AttackControl()
        job = _CompareJob(lambda: compare_job(clf, s, index, request, same, control), control, "compare")
        self._job = job
        job.done.connect(lambda rec, j=job: j is self._job and self._show(rec))
        job.failed.connect(lambda msg, j=job: j is self._job and self._failed(msg))
        track(job).start()
        if request is not None:
            self.views.adv.caption.setText("<span style='color:gray'>attacking B…</span>")
        return job

    def _cancel_job(self) -> None:
        if self._job is not None and self._job.isRunning():
            self._job.cancel()
        self._job = None

    def _failed(self, msg: str) -> None:
        self.status.setText(f"<span style='color:#b3261e'>{_esc(msg)}</span>")
        self.failed.emit(msg)

    def _show(self, rec: CompareRecord) -> None:
        self.record = rec
        self._link(self.win.explore)
        self._update_names()
        self.views.show_state(self._state(rec))
        self._link_views()
        self.compared.emit(rec)

    def _link_views(self) -> None:
        """B's row follows A's zoom and pan when both show images of the same size. The rows differ in height,
        so the view boxes are not linked axis by axis (with locked aspect that shrinks the shorter row's
        images): B gets A's centre and A's zoom relative to the whole image, fitted to its own boxes."""
        ex = self.win.explore
        a_vb, b_vb = ex.views.orig.vb, self.views.orig.vb
        if not self._sync_connected:
            a_vb.sigRangeChanged.connect(lambda *_a: self._sync(a_vb, b_vb))
            a_vb.sigResized.connect(lambda *_a: self._sync(a_vb, b_vb))
            b_vb.sigResized.connect(lambda *_a: self._sync(a_vb, b_vb))
            self._sync_connected = True
        a_img, b_img = ex.views.orig.item.image, self.views.orig.item.image
        self._same_size = a_img is not None and b_img is not None and a_img.shape[:2] == b_img.shape[:2]
        self._sync(a_vb, b_vb)

    def _sync(self, src: Any, dst: Any) -> None:
        """Give ``dst`` the centre and the zoom (relative to fitting the whole image) of ``src``."""
        if self._syncing or not self._same_size or not self.active:
            return
        img = self.views.orig.item.image
        if img is None:
            return
        h, w = img.shape[:2]
        (x0, x1), (y0, y1) = src.viewRange()
        sw, sh = src.width(), src.height()
        dw, dh = dst.width(), dst.height()
        if min(sw, sh, dw, dh, x1 - x0, y1 - y0) <= 0:
            return
        zoom = (sw / (x1 - x0)) / min(sw / w, sh / h)       # pixels per image pixel, relative to the fit
        scale = zoom * min(dw / w, dh / h)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        self._syncing = True
        try:
            dst.setRange(xRange=(cx - dw / scale / 2, cx + dw / scale / 2),
                         yRange=(cy - dh / scale / 2, cy + dh / scale / 2), padding=0)
        finally:
            self._syncing = False

    def a_state_shown(self, st: DisplayState) -> None:
        """A's views showed a frame. When A's adversarial pane gets its first picture after a reset, the pane
        re-fits itself and, being linked to the original, hands its own box's aspect to the original's; with
        B's row taking height away from A's, that crops A's original and adversarial images. Re-fit A from
        its original (the most constrained box) at that moment."""
        has_adv = st.adv is not None
        if self.active and has_adv and not self._a_had_adv:
            self.win.explore.views.auto_range()
        self._a_had_adv = has_adv

    def amplification_changed(self, v: float) -> None:
        self.views.set_amplification(v)
        if self.record is not None and self.active:
            self.views.show_state(self._state(self.record))

    # -- display -------------------------------------------------------------------------------------------
    def name(self, i: Optional[int]) -> str:
        names = self.model_b.class_names if self.model_b is not None else []
        if i is None or i < 0:
            return "–"
        return str(names[i]) if i < len(names) else str(i)

    def _top(self, labels: Any, probs: Any, true_label: int, target: Optional[int]) -> list[tuple[str, float, str]]:
        out = []
        for rank, (lab, p) in enumerate(zip(labels, probs)):
            lab = int(lab)
            role = "true" if lab == true_label else "target" if (target is not None and lab == target) else ""
            if rank == 0 and not role:
                role = "wrong"
            out.append((self.name(lab), float(p), role))
        return out

    def _state(self, rec: CompareRecord, waiting: bool = False) -> DisplayState:
        c = rec.clean
        ex = self.win.explore
        req = rec.request
        target = req.target if (req is not None and rec.targeted) else None
        st = DisplayState(name=c.name, clean=c.image, amplification=ex.views.amplification,
                          eps=(req.params.get("eps") if req is not None else
                               (ex.request.params.get("eps") if ex.request is not None else None)),
                          true_name=self.name(c.label), label_source=c.label_source, clean_pred=self.name(c.pred),
                          clean_conf=float(c.topk_probs[0]), clean_top=self._top(c.topk_labels, c.topk_probs,
                                                                                   c.label, target),
                          attack_text="waiting for the run on A…" if waiting else "runs when A's attack finishes")
        if rec.adv is None or waiting:
            return st
        st.adv = rec.adv
        st.adv_pred = self.name(rec.adv_pred)
        st.adv_conf = rec.adv_conf
        st.success = rec.success
        st.linf, st.l2 = rec.linf, rec.l2
        st.adv_top = self._top(rec.topk_labels, rec.topk_probs, c.label, target)
        st.frame_text = f"final · 8-bit: {self.name(rec.adv8_pred)} ({'fooled' if rec.success8 else 'not fooled'})"
        return st

    def captions(self) -> tuple[str, str]:
        """(A's adversarial caption, B's adversarial caption) as plain text."""
        import re
        strip = lambda t: re.sub("<[^>]+>", "", t).replace("&amp;", "&")  # noqa: E731
        return strip(self.win.explore.views.adv.caption.text()), strip(self.views.adv.caption.text())


def install_compare(window: MainWindow) -> CompareRow:
    """Put the comparison row under the Explore views and its action in the View menu and the toolbar.
    ``--autorun compare[:SPEC]`` (screenshots) turns it on with model B = SPEC (default demo-robust) and
    runs the attack."""
    ex = window.explore
    row = CompareRow(window)
    ex.add_below_views(row)
    menu = next((a.menu() for a in window.menuBar().actions() if a.menu() is not None
                 and a.text().replace("&", "") == "View"), None)
    if menu is not None:
        acts = menu.actions()
        menu.insertAction(acts[2] if len(acts) > 2 else None, row.action)
    else:
        window.menuBar().addMenu("Compare").addAction(row.action)
    from PySide6.QtWidgets import QToolBar
    tb = window.findChild(QToolBar, "toolbar_main")
    if tb is not None:
        tb.addAction(row.action)
    ex.clean_changed.connect(row.clean_changed)
    ex.run_started.connect(row.run_started)
    ex.run_finished.connect(row.run_finished)
    ex.views.amplification_changed.connect(row.amplification_changed)
    ex.state_changed.connect(row.a_state_shown)
    window.model_loaded.connect(row.model_a_changed)
    mode = window.autorun or ""
    if mode.startswith("compare"):
        spec = mode.partition(":")[2] or DEFAULT_B
        window.autorun = "run"          # the window attacks the selected image once ready; B follows
        row.spec.setEditText(spec)
        row.set_active(True)
    return row


def _elide(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
