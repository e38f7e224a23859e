"""The Harden tab: adversarial training of the window's model in the background, with live curves, then the
robustness curves of the starting and the trained model on one plot.

The tab drives :mod:`advgui.core.training` and :mod:`advgui.core.evaluate` from a :class:`TrainWorker`
(a QThread). As the other workers do, it hands plain values to the GUI: per-batch losses go into a locked
buffer that the tab drains on its own timer (at most ~10 redraws a second), per-epoch records and the final
curves come by queued signals. torch is imported only in the worker (and here only after the model has
loaded); pyqtgraph only when the plots are first needed, after the window's first paint. Cancelling sets
a ``threading.Event`` the core checks between batches; a new training cancels the running one, and closing
the window cancels it through the window's thread bookkeeping (:func:`advgui.gui.jobs.shutdown`).
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from PySide6.QtCore import QThread, QTimer, Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QScrollArea, QSizePolicy, QSpinBox, QVBoxLayout, QWidget)

from .jobs import Job, ModelRequest, describe_error, prepare_torch, track
from .widgets import EpsEditor

if TYPE_CHECKING:
    from .main_window import MainWindow

METHODS = [("pgd", "PGD (Madry et al.)", "Projected gradient descent with a random start, several steps per batch: "
            "the standard, strongest and slowest."),
           ("fgsm-rs", "Fast FGSM, random start", "One FGSM step of 1.25·ε from a random start (Wong et al. 2020): "
            "several times faster; watch for catastrophic overfitting."),
           ("clean", "Clean (no attack)", "Plain training, the baseline: ε is used only to validate and for the "
            "robustness curves.")]
HOLD_OUT = "(hold out 10% of the data)"
DATA_EXAMPLES = ["demo-digits", "demo-digits-test"]
VAL_EXAMPLES = ["demo-digits-test", HOLD_OUT]
TICK_MS = 100                  # the batch buffer is drained (and the loss curve redrawn) at most 10× a second
EVAL_ATTACKS = ("fgsm", "pgd")
EVAL_FACTORS = (0.0, 0.5, 1.0, 1.5, 2.0)   # robustness curves at these multiples of the training ε

CLEAN_COLOR = "#455a64"
FGSM_COLOR = "#ef6c00"
PGD_COLOR = "#c62828"
LOSS_COLOR = "#1565c0"
START_COLOR = "#757575"
TRAINED_COLOR = "#2e7d32"


def eval_eps(eps: float) -> list[float]:
    """The ε of the final robustness curves: 0 and a few multiples of the training ε up to 2× (within 0..1)."""
    return sorted({min(1.0, round(f * eps, 10)) for f in EVAL_FACTORS})


def subset_indices(n: int, k: int, seed: int = 0) -> Any:
    """A fixed random subset of ``k`` of ``n`` items (all, in order, when ``k`` is 0 or ≥ n), sorted."""
    import torch
    if k <= 0 or k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:k].sort().values


def model_name(spec: str) -> str:
    """A short name for a model spec: ``demo``, ``resnet18`` or a file name."""
    s = str(spec)
    if s.startswith("torchvision:"):
        return s.split(":", 1)[1]
    return Path(s).name if ("/" in s or os.sep in s) else s


# -- what the worker hands to the GUI (plain values) ---------------------------------------------------------

@dataclass
class HardenRequest:
    data: str
    val: Optional[str]                  # None: hold out 10% of the data
    method: str
    eps: float
    epochs: int
    pgd_steps: int
    lr: float
    max_images: int = 0                 # 0: all
    from_scratch: bool = False
    batch_size: int = 64
    val_steps: int = 10
    eval_max: int = 200                 # validation / curve images
    eval_steps: int = 10
    seed: int = 0
    start_name: str = "model"


@dataclass
class DataInfo:
    n_train: int
    n_val: int
    data_source: str
    val_source: str
    skipped: list[str]                  # "path: reason"
    notes: list[str] = field(default_factory=list)


@dataclass
class ModelCurve:
    name: str
    worst: list[float]
    attacks: dict[str, list[float]]
    clean: float
    warnings: list[str]


@dataclass
class CurvePair:
    """Both models' robustness curves on the same images, at the same ε."""

    eps: list[float]
    n: int
    steps: int
    start: ModelCurve
    trained: ModelCurve
    seconds: float
    cancelled: bool = False


class TrainWorker(QThread):
    """Load the data, train a copy of the model (core ``train_model``), then evaluate the start and the
    trained model (core ``evaluate_robustness``). Cancellable at every batch."""

    data_ready = Signal(object)       # DataInfo
    epoch_done = Signal(object)       # core EpochRecord (ints, floats, a bool)
    trained = Signal(object)          # core TrainResult (opaque to widgets; kept for saving)
    curves_ready = Signal(object)     # CurvePair
    failed = Signal(str)

    def __init__(self, classifier: Any, request: HardenRequest) -> None:
        super().__init__()
        self.classifier, self.request = classifier, request
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._batches: list[tuple[float, float]] = []      # (x in epochs, loss)
        self._state: tuple[str, str, float] = ("starting", "loading the data…", 0.0)
        self.result: Any = None
        self.eval_data: Any = None                          # (images, labels) of the curves
        self.batches_seen = 0

    # any thread
    def cancel(self) -> None:
        self.stop_event.set()

    @property
    def cancelled(self) -> bool:
        return self.stop_event.is_set()

    def take(self) -> tuple[list[tuple[float, float]], tuple[str, str, float]]:
        """Batch points since the last call, and the latest (phase, text, fraction) (GUI thread)."""
        with self._lock:
            out, self._batches = self._batches, []
            return out, self._state

    def _set_state(self, phase: str, text: str, frac: float) -> None:
        with self._lock:
            self._state = (phase, text, frac)

    # worker thread
    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - a user file or setting must never crash the app
            self.failed.emit(describe_error(e, str(getattr(self.classifier, "device", ""))))

    def _on_batch(self, info: Any) -> bool:
        x = info.epoch - 1 + info.batch / info.batches
        with self._lock:
            self._batches.append((x, float(info.loss)))
            self.batches_seen += 1
            if info.batch == info.batches:
                self._state = ("validating", f"epoch {info.epoch}/{info.epochs} · validating…", info.progress)
            else:
                self._state = ("training", f"epoch {info.epoch}/{info.epochs} · batch {info.batch}/{info.batches}",
                               info.progress)
        time.sleep(0)   # hand the GIL to a waiting GUI thread
        return self.stop_event.is_set()

    def _on_epoch(self, rec: Any) -> bool:
        self.epoch_done.emit(rec)
        return self.stop_event.is_set()

    def _run(self) -> None:
        prepare_torch()
        from advgui.core.data import IMAGE_EXTENSIONS
        from advgui.core.evaluate import evaluate_robustness
        from advgui.core.models import ModelError
        from advgui.core.training import (TrainConfig, TrainingSet, architecture_of, load_training_set,
                                          split_holdout, train_model)
        r = self.request
        clf = self.classifier
        cfg = TrainConfig(method=r.method, eps=0.0 if r.method == "clean" else r.eps, epochs=r.epochs,
                          batch_size=r.batch_size, lr=r.lr, pgd_steps=r.pgd_steps, from_scratch=r.from_scratch,
                          val_eps=r.eps, val_steps=r.val_steps, val_max=r.eval_max, seed=r.seed)
        cfg.validate()
        notes: list[str] = []
        try:
            architecture_of(clf)
        except ModelError as e:
            notes.append(f"the trained weights cannot be saved: {e}")
        data = load_training_set(r.data, clf)
        skipped = list(data.skipped)
        if self.stop_event.is_set():
            return
        if r.val:
            val = load_training_set(r.val, clf)
            skipped += val.skipped
            train_set = data
        else:
            (tx, ty), (vx, vy) = split_holdout(data.images, data.labels, 0.1, r.seed)
            if len(vy) == 0:
                from advgui.core.data import DataError
                raise DataError(f"{data.source}: too few images to hold out a validation split; choose a "
                                "validation folder")
            train_set = TrainingSet(tx, ty, data.source, data.skipped)
            val = TrainingSet(vx, vy, f"10% held out from {data.source}")
        for spec in {r.data, r.val or ""} - {"", *DATA_EXAMPLES}:
            root = Path(spec)
            if root.is_dir():            # files that are not images at all are ignored by the loader: say so
                for f in sorted(root.rglob("*")):
                    if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in IMAGE_EXTENSIONS:
                        skipped.append(f"{f}: not an image file (extension {f.suffix or 'missing'})")
        n_all = len(train_set)
        if r.max_images and r.max_images < n_all:
            idx = subset_indices(n_all, r.max_images, r.seed)
            train_set = TrainingSet(train_set.images[idx], train_set.labels[idx], train_set.source,
                                    train_set.skipped)
            notes.append(f"a random {len(idx)} of the {n_all} training images")
        vidx = subset_indices(len(val), r.eval_max, r.seed)
        val = TrainingSet(val.images[vidx], val.labels[vidx], val.source, val.skipped)
        self.eval_data = (val.images, val.labels)
        self.data_ready.emit(DataInfo(len(train_set), len(val), train_set.source, val.source, skipped, notes))
        self._set_state("training", "starting the first epoch…", 0.0)
        result = train_model(clf, train_set, cfg, val=val, on_batch=self._on_batch, on_epoch=self._on_epoch,
                             cancel=self.stop_event)
        result.notes = notes + result.notes
        self.result = result
        self.trained.emit(result)
        if result.cancelled or self.stop_event.is_set() or not result.history:
            return
        # both models' curves on the validation images, at a few ε up to twice the training ε
        eps = eval_eps(r.eps)
        t0 = time.perf_counter()
        curves = []
        models = [(clf, r.start_name), (result.classifier, "trained")]
        for k, (model, name) in enumerate(models):
            def progress(p: Any, k: int = k, name: str = name) -> bool:
                frac = (k + p.done / max(1, p.total)) / len(models)
                self._set_state("evaluating", f"robustness curves · {name} · {p.attack.upper()} "
                                f"ε {p.eps:.3g}", frac)
                time.sleep(0)
                return self.stop_event.is_set()
            self._set_state("evaluating", f"robustness curves · {name}", k / len(models))
            rep = evaluate_robustness(model, val.images, val.labels, attacks=EVAL_ATTACKS, eps=eps,
                                      steps=r.eval_steps, seed=r.seed, on_progress=progress,
                                      cancel=self.stop_event)
            curves.append(ModelCurve(name, list(rep.worst), {a: list(c.acc) for a, c in rep.curves.items()},
                                     float(rep.clean_acc), [str(w) for w in rep.warnings]))
            if rep.cancelled:
                return
        self._set_state("done", "finished", 1.0)
        self.curves_ready.emit(CurvePair(list(eps), len(val), r.eval_steps, curves[0], curves[1],
                                         time.perf_counter() - t0))


# -- the plots (pyqtgraph is imported when they are built, after the first paint) ------------------------------

class HardenPlots(QWidget):
    """Training loss per batch (and per epoch), validation accuracy per epoch, and the final robustness curves.
    Every plot item is created once and updated with ``setData``."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        import numpy as np
        import pyqtgraph as pg
        from PySide6.QtGui import QPalette
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
        from PySide6.QtCore import QSize
        return QSize(480, 300)

    def _title(self, plot: Any, text: str) -> None:
        plot.setTitle(text, color=self.fg.name(), size="10pt")

    def _acc_curve(self, name: str, color: str) -> Any:
        return self.acc_plot.plot(pen=self._pg.mkPen(color, width=2), symbol="o", symbolSize=7, symbolBrush=color,
                                  symbolPen=None, name=name)

    def reset(self, epochs: int, eps: float, steps: int, n_batches_hint: int = 0) -> None:
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

    def set_robustness(self, pair: CurvePair, start_label: str, trained_label: str, train_eps: float) -> None:
        np = self._np
        x = np.array(pair.eps, float)
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

    def curve_lengths(self) -> dict[str, int]:
        def n(c: Any) -> int:
            x, _ = c.getData()
            return 0 if x is None else len(x)
        return {"batch": n(self.batch_curve), "epoch_loss": n(self.epoch_loss), "clean": n(self.clean_curve),
                "fgsm": n(self.fgsm_curve), "pgd": n(self.pgd_curve), "start": n(self.start_curve),
                "trained": n(self.trained_curve)}

    def legend_texts(self) -> list[str]:
        return [label.text for _sample, label in self.rob_legend.items]


def _eps_tick(e: float) -> str:
    return "0" if e == 0 else f"{e:.3g}"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- the tab ---------------------------------------------------------------------------------------------------

class HardenTab(QWidget):
    """Choose data, method, ε and epochs; train in the background; compare both models' robustness."""

    started = Signal()
    epoch_shown = Signal(object)        # EpochRecord
    trained = Signal(object)            # TrainResult
    curves_shown = Signal(object)       # CurvePair
    run_finished = Signal(bool)         # cancelled
    failed = Signal(str)
    saved = Signal(object)              # {"weights", "log_csv", "log_json": Path}

    def __init__(self, window: Optional[MainWindow] = None, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.window_ = window
        self.worker: Optional[TrainWorker] = None
        self.result: Any = None             # the latest TrainResult
        self.pair: Optional[CurvePair] = None
        self.records: list[Any] = []
        self.data_info: Optional[DataInfo] = None
        self.saved_path: Optional[Path] = None
        self.plots: Optional[HardenPlots] = None
        self.eval_max = 200
        self.eval_steps = 10
        self.val_steps = 10
        self.batch_size = 64
        self._eps_touched = False
        self._messages: list[tuple[str, str]] = []
        self._request: Optional[HardenRequest] = None
        self._start_model: Any = None        # LoadedModel the running / last training started from
        self._save_job: Optional[Job] = None
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.set_model(None)

    # -- layout --------------------------------------------------------------------------------------------
    def _build(self) -> None:
        # the content scrolls rather than widening the whole window's minimum size
        outer = QVBoxLayout(self)
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
        forms = QHBoxLayout()
        forms.setSpacing(12)
        left, right = QFormLayout(), QFormLayout()
        for f in (left, right):
            f.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            f.setContentsMargins(0, 0, 0, 0)
            f.setVerticalSpacing(4)
        forms.addLayout(left, 1)
        forms.addLayout(right, 1)
        lay.addLayout(forms)

        self.data = self._combo(DATA_EXAMPLES, "demo-digits: the built-in handwritten digits (train split); or an "
                                "ImageFolder tree: one subfolder per class, named after the model's classes")
        self.data_btn = QPushButton("Folder…")
        self.data_btn.setToolTip("Choose an ImageFolder tree to train on")
        left.addRow("Data", _row(self.data, self.data_btn))
        self.val = self._combo(VAL_EXAMPLES, "Validated after every epoch, and used for the final robustness curves. "
                               "demo-digits-test: the digits held out from the demo model's training")
        self.val_btn = QPushButton("Folder…")
        self.val_btn.setToolTip("Choose an ImageFolder tree to validate on")
        right.addRow("Validation", _row(self.val, self.val_btn))

        self.method = QComboBox()
        for key, text, tip in METHODS:
            self.method.addItem(text, key)
            self.method.setItemData(self.method.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.method.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method.setMinimumContentsLength(12)
        left.addRow("Method", self.method)
        self.eps = EpsEditor()
        self.eps.setValue(0.1)
        self.eps.unit.setMinimum(1 / 255 / 4)
        self.eps.b255.setMinimum(0.25)
        self.eps.setToolTip("Training budget (L∞). Validation and the robustness curves use it too.")
        right.addRow("ε", self.eps)

        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(5)
        self.epochs.setToolTip("Passes over the training images (ε ramps up over the first third)")
        self.pgd_steps = QSpinBox()
        self.pgd_steps.setRange(1, 100)
        self.pgd_steps.setValue(7)
        self.pgd_steps.setToolTip("PGD steps per training batch (step size 2.5·ε/steps)")
        self.pgd_label = QLabel("PGD steps")
        left.addRow("Epochs", _row(self.epochs, self.pgd_label, self.pgd_steps, stretch_first=False))
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(5e-4)
        self.lr.setValue(2e-3)
        self.lr.setToolTip("Peak learning rate (Adam, cosine schedule)")
        self.max_images = QSpinBox()
        self.max_images.setRange(0, 10_000_000)
        self.max_images.setSingleStep(100)
        self.max_images.setSpecialValueText("all")
        self.max_images.setToolTip("Train on at most this many images (a fixed random subset), for a quick run")
        right.addRow("Learning rate", _row(self.lr, QLabel("images"), self.max_images))

        self.start_label = QLabel()
        self.start_label.setWordWrap(True)
        self.start_label.setTextFormat(Qt.TextFormat.RichText)
        self.start_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.scratch = QCheckBox("from scratch")
        self.scratch.setToolTip("Re-initialise the weights instead of fine-tuning the loaded ones")
        srow = QHBoxLayout()
        head = QLabel("Start from")
        srow.addWidget(head, 0, Qt.AlignmentFlag.AlignTop)
        srow.addWidget(self.start_label, 1)
        srow.addWidget(self.scratch, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(srow)

        brow = QHBoxLayout()
        self.train_btn = QPushButton("▶ Train")
        f = self.train_btn.font()
        f.setBold(True)
        self.train_btn.setFont(f)
        self.train_btn.setToolTip("Train a copy of the model in the background; the window keeps its model")
        self.cancel_btn = QPushButton("■ Cancel")
        self.cancel_btn.setToolTip("Stop after the current batch; the weights so far can still be saved")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("not started")
        self.progress.setTextVisible(True)
        brow.addWidget(self.train_btn)
        brow.addWidget(self.cancel_btn)
        brow.addWidget(self.progress, 1)
        lay.addLayout(brow)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.RichText)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.message.hide()
        lay.addWidget(self.message)
        self.plot_area = QVBoxLayout()
        self.plot_area.setContentsMargins(0, 0, 0, 0)
        self._plot_placeholder = QLabel("Live curves appear here once training starts.")
        self._plot_placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.plot_area.addWidget(self._plot_placeholder)
        lay.addLayout(self.plot_area, 1)
        bottom = QHBoxLayout()
        self.summary = QLabel("Choose the data and the method, then press Train.")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.save_btn = QPushButton("Save weights…")
        self.save_btn.setToolTip("Write the trained weights (safetensors, reopenable as a model) and the training "
                                 "log (CSV and JSON) next to them")
        self.open_btn = QPushButton("Open in Explore")
        self.open_btn.setToolTip("Make the trained model the window's model (saved under the advgui "
                                 "configuration folder unless you saved it already)")
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.save_btn)
        bottom.addWidget(self.open_btn)
        lay.addLayout(bottom)

        self.data_btn.clicked.connect(lambda: self._pick_folder(self.data))
        self.val_btn.clicked.connect(lambda: self._pick_folder(self.val))
        self.method.currentIndexChanged.connect(self._method_changed)
        self.eps.valueChanged.connect(self._eps_edited)
        self.train_btn.clicked.connect(self.start_training)
        self.cancel_btn.clicked.connect(self.cancel)
        self.save_btn.clicked.connect(self.save_dialog)
        self.open_btn.clicked.connect(self.open_in_explore)
        self.data.currentTextChanged.connect(self._data_changed)
        self._method_changed()
        self._set_running(False)

    @staticmethod
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

    def ensure_plots(self) -> HardenPlots:
        """Build the plots (imports pyqtgraph) the first time they are needed."""
        if self.plots is None:
            self.plots = HardenPlots()
            self.plot_area.replaceWidget(self._plot_placeholder, self.plots)
            self._plot_placeholder.deleteLater()
        return self.plots

    def showEvent(self, ev: Any) -> None:  # noqa: N802 - Qt API
        self.ensure_plots()
        super().showEvent(ev)

    # -- inputs ----------------------------------------------------------------------------------------------
    def _pick_folder(self, combo: QComboBox) -> None:
        cur = combo.currentText().strip()
        start = cur if cur and Path(cur).is_dir() else ""
        p = QFileDialog.getExistingDirectory(self, "Choose an ImageFolder tree (one subfolder per class)", start)
        if p:
            combo.setEditText(p)

    def _data_changed(self, text: str) -> None:
        # the built-in digits come with their own held-out split; a folder holds out 10% unless told otherwise
        if self.val.currentText().strip() in ("demo-digits-test", HOLD_OUT):
            self.val.setEditText("demo-digits-test" if text.strip() == "demo-digits" else HOLD_OUT)

    def _method_changed(self, *_a: Any) -> None:
        key = self.method.currentData()
        self.pgd_steps.setEnabled(key == "pgd")
        self.pgd_label.setEnabled(key == "pgd")
        self.method.setToolTip(next(t for k, _n, t in METHODS if k == key))

    def _eps_edited(self, _v: float) -> None:
        if not getattr(self, "_setting_eps", False):
            self._eps_touched = True

    def set_model(self, loaded: Any) -> None:
        """The window's model changed (a LoadedModel, or None while none is loaded)."""
        if loaded is None:
            self.start_label.setText("<i>waiting for the model…</i>")
            self.train_btn.setEnabled(False)
            return
        name = model_name(loaded.request.describe())
        self.start_label.setText(f"<b>{_esc(name)}</b>, the model loaded in the window ({loaded.summary['classes']} "
                                 f"classes, {loaded.summary['input']}). Training changes a copy: the window keeps "
                                 "its model until “Open in Explore”.")
        self.start_label.setToolTip(f"{loaded.request.spec}\nChoose another model in the Model panel to start "
                                    "from it.")
        if not self._eps_touched:
            inp = str(loaded.summary.get("input", ""))
            small_grey = inp.startswith("1×") and all(p.isdigit() and int(p) <= 32 for p in inp.split("×")[1:])
            self._setting_eps = True
            self.eps.setValue(0.1 if small_grey else 8 / 255)
            self._setting_eps = False
        if not self.running:
            self.train_btn.setEnabled(True)

    def request(self) -> HardenRequest:
        val = self.val.currentText().strip()
        start = self._window_model()
        return HardenRequest(
            data=self.data.currentText().strip() or "demo-digits", val=None if val in ("", HOLD_OUT) else val,
            method=self.method.currentData() or "pgd", eps=float(self.eps.value()), epochs=self.epochs.value(),
            pgd_steps=self.pgd_steps.value(), lr=float(self.lr.value()), max_images=self.max_images.value(),
            from_scratch=self.scratch.isChecked(), batch_size=self.batch_size, val_steps=self.val_steps,
            eval_max=self.eval_max, eval_steps=self.eval_steps,
            start_name=model_name(start.request.describe()) if start is not None else "model")

    def describe(self, r: Optional[HardenRequest] = None) -> str:
        r = r or self.request()
        what = {"pgd": f"PGD-{r.pgd_steps}", "fgsm-rs": "fast FGSM", "clean": "clean"}[r.method]
        return what if r.method == "clean" else f"{what} ε {r.eps:.3g}"

    def _window_model(self) -> Any:
        return getattr(self.window_, "model", None) if self.window_ is not None else None

    # -- running ---------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def _set_running(self, running: bool) -> None:
        self.train_btn.setEnabled(not running and self._window_model() is not None)
        self.cancel_btn.setEnabled(running)
        for w in (self.data, self.data_btn, self.val, self.val_btn, self.method, self.eps, self.epochs,
                  self.lr, self.max_images, self.scratch):
            w.setEnabled(not running)
        self.pgd_steps.setEnabled(not running and self.method.currentData() == "pgd")
        has = self.result is not None and bool(self.result.history)
        self.save_btn.setEnabled(not running and has)
        self.open_btn.setEnabled(not running and has)

    def start_training(self) -> Optional[TrainWorker]:
        """Train with the settings on screen; a training already running is cancelled first."""
        m = self._window_model()
        if m is None:
            self._show_message("No model is loaded yet.", "error")
            return None
        self.cancel()
        r = self.request()
        self._request = r
        self._start_model = m
        self.result = None
        self.pair = None
        self.records = []
        self.data_info = None
        self.saved_path = None
        self._messages = []
        self._show_messages()
        plots = self.ensure_plots()
        plots.reset(r.epochs, r.eps, r.val_steps)
        w = TrainWorker(m.classifier, r)
        self.worker = w
        w.data_ready.connect(lambda info, w=w: w is self.worker and self._data_ready(info))
        w.epoch_done.connect(lambda rec, w=w: w is self.worker and self._epoch(rec))
        w.trained.connect(lambda res, w=w: w is self.worker and self._trained(res))
        w.curves_ready.connect(lambda pair, w=w: w is self.worker and self._curves(pair))
        w.failed.connect(lambda msg, w=w: w is self.worker and self._failed(msg))
        w.finished.connect(lambda w=w: self._thread_done(w))
        self._set_running(True)
        self.progress.setValue(0)
        self.progress.setFormat("loading the data…")
        self.summary.setText(f"Training a copy of <b>{_esc(r.start_name)}</b>: {self.describe(r)}, {r.epochs} "
                             f"epoch{'s' if r.epochs != 1 else ''} on {_esc(r.data)}…")
        self._remember(r)
        if self.window_ is not None:
            self.window_.status(f"Training a copy of {r.start_name} ({self.describe(r)})…", busy=True)
        track(w).start()
        self.timer.start()
        self.started.emit()
        return w

    def cancel(self) -> None:
        w = self.worker
        if w is not None and w.isRunning():
            w.cancel()
            self.progress.setFormat("cancelling…")
            self.cancel_btn.setEnabled(False)

    def _tick(self) -> None:
        w = self.worker
        if w is None:
            return
        points, (phase, text, frac) = w.take()
        if points and self.plots is not None:
            self.plots.add_batches(points)
        if phase in ("training", "validating", "evaluating", "done") and not w.cancelled:
            self.progress.setValue(int(round(1000 * min(1.0, max(0.0, frac)))))
            self.progress.setFormat(f"{text} · %p%" if phase != "done" else text)

    def _data_ready(self, info: DataInfo) -> None:
        self.data_info = info
        r = self._request
        self._show_message(f"Training on {info.n_train} images of {_esc(info.data_source)}; validating on "
                           f"{info.n_val} images: {_esc(info.val_source)}.", "info")
        for note in info.notes:
            self._show_message(_esc(note[:1].upper() + note[1:]) + ".", "warning" if "cannot" in note else "info")
        if info.skipped:
            shown = "; ".join(_esc(_short_skip(s)) for s in info.skipped[:4])
            more = f"; and {len(info.skipped) - 4} more" if len(info.skipped) > 4 else ""
            self._show_message(f"Skipped {len(info.skipped)} file{'s' if len(info.skipped) != 1 else ''}: "
                               f"{shown}{more}.", "warning", tooltip="\n".join(info.skipped))
        if r is not None and self.plots is not None:
            self.plots.reset(r.epochs, r.eps, r.val_steps, n_batches_hint=r.epochs * math.ceil(
                info.n_train / max(1, r.batch_size)))

    def _epoch(self, rec: Any) -> None:
        self._tick()
        self.records.append(rec)
        if self.plots is not None:
            self.plots.set_epochs(self.records)
        if rec.overfit:
            from advgui.core.training import detect_catastrophic_overfitting
            msg = detect_catastrophic_overfitting([r.val_pgd_acc for r in self.records],
                                                  [r.val_fgsm_acc for r in self.records])
            self._show_message("Warning: " + _esc(msg or f"catastrophic overfitting at epoch {rec.epoch}")
                               + ". Training stops and keeps the epoch with the best PGD accuracy.", "warning")
        self.epoch_shown.emit(rec)

    def _trained(self, result: Any) -> None:
        self._tick()
        self.result = result
        fin = result.final
        if result.overfit and not any("overfitting" in m for m, _k in self._messages):
            self._show_message("Warning: " + _esc(result.overfit) + ".", "warning")
        for note in result.notes:
            if note.startswith("training stopped") or note.startswith("weights restored"):
                self._show_message(_esc(note[:1].upper() + note[1:]) + ".", "warning")
        if fin is None:
            self.summary.setText("Stopped before the first batch finished; nothing to save.")
        else:
            pct = lambda v: "–" if v != v else f"{100 * v:.1f}%"  # noqa: E731
            head = "Stopped early" if result.cancelled else f"Trained {len(result.history)} epochs"
            self.summary.setText(
                f"{head} in {result.elapsed:.0f} s. Epoch {fin.epoch}: validation clean {pct(fin.val_clean_acc)}, "
                f"FGSM {pct(fin.val_fgsm_acc)}, <b>PGD {pct(fin.val_pgd_acc)}</b>"
                + ("" if result.cancelled else " · computing both models' robustness curves…"))
        if not result.cancelled and self.plots is not None:
            self.plots.clear_robustness("computing the robustness curves of both models…")
        self.trained.emit(result)

    def _curves(self, pair: CurvePair) -> None:
        self.pair = pair
        r = self._request
        start_label, trained_label = self.curve_labels()
        if self.plots is not None and r is not None:
            self.plots.set_robustness(pair, start_label, trained_label, r.eps)
        k = min(range(len(pair.eps)), key=lambda i: abs(pair.eps[i] - (r.eps if r else 0)))
        e = pair.eps[k]
        s, t = pair.start.worst[k], pair.trained.worst[k]
        self.summary.setText(
            self.summary.text().replace(" · computing both models' robustness curves…", "")
            + f"<br>Worst case at ε {e:.3g} on {pair.n} images: {_esc(start_label)} <b>{100 * s:.1f}%</b> → "
            f"trained <b>{100 * t:.1f}%</b>; clean {100 * pair.start.clean:.1f}% → {100 * pair.trained.clean:.1f}%.")
        for mc in (pair.start, pair.trained):
            for warn in mc.warnings:
                self._show_message(f"{_esc(mc.name)}: {_esc(warn)}", "warning")
        self.curves_shown.emit(pair)

    def curve_labels(self) -> tuple[str, str]:
        r = self._request
        if r is None:
            return "start model", "trained model"
        return f"{r.start_name} (start)", f"trained: {self.describe(r)}, {len(self.records)} ep."

    def _failed(self, msg: str) -> None:
        if self.result is not None:       # trained, but the robustness curves could not be computed
            self._show_message(f"Could not compute the robustness curves: {_esc(msg)}", "error")
            self.summary.setText(self.summary.text().replace(" · computing both models' robustness curves…", ""))
            if self.plots is not None:
                self.plots.clear_robustness("no curves: see the message above")
        else:
            self._show_message(_esc(msg), "error")
            self.summary.setText("Training failed.")
        if self.window_ is not None:
            self.window_.show_error(f"Training failed: {msg}" if self.result is None
                                    else f"Could not compute the robustness curves: {msg}")
        self.failed.emit(msg)

    def _thread_done(self, w: TrainWorker) -> None:
        if w is not self.worker:
            return
        self._tick()
        self.timer.stop()
        cancelled = w.cancelled
        res = self.result
        if cancelled:
            done = sum(1 for r in self.records if r.val_pgd_acc == r.val_pgd_acc)
            self.progress.setFormat(f"cancelled after {done} full epoch{'s' if done != 1 else ''}")
        elif self.pair is not None:
            self.progress.setValue(self.progress.maximum())
            self.progress.setFormat(f"finished · {len(self.records)} epochs · 100%")
        elif res is None:
            self.progress.setFormat("failed")
        self._set_running(False)
        if self.window_ is not None:
            self.window_.status("Training cancelled" if cancelled else "Training finished"
                                if self.pair is not None else "Training stopped", busy=False)
        self.run_finished.emit(cancelled)

    # -- messages --------------------------------------------------------------------------------------------
    def _show_message(self, html: str, kind: str = "info", tooltip: str = "") -> None:
        self._messages.append((html, kind))
        if tooltip:
            self.message.setToolTip(tooltip)
        self._show_messages()

    def _show_messages(self) -> None:
        colors = {"error": "#b3261e", "warning": "#8a5300", "info": ""}
        parts = [f"<span style='color:{colors.get(k, '')}'>{m}</span>" if colors.get(k) else m
                 for m, k in self._messages]
        self.message.setText("<br>".join(parts))
        self.message.setVisible(bool(parts))
        if not parts:
            self.message.setToolTip("")

    def messages(self) -> list[str]:
        """The message line as plain text, one entry per message (for tests and the status line)."""
        import re
        return [re.sub("<[^>]+>", "", m).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
                for m, _k in self._messages]

    # -- save / open -----------------------------------------------------------------------------------------
    def save_dialog(self) -> None:
        if self.result is None:
            return
        r = self._request
        name = f"{(r.start_name if r else 'model')}-{(r.method if r else 'trained')}.safetensors"
        p, _ = QFileDialog.getSaveFileName(self, "Save the trained weights", name, "safetensors (*.safetensors)")
        if p:
            self.save_to(p)

    def save_to(self, path: str, then: Any = None) -> Optional[Job]:
        """Write the weights and the log in a worker (atomically: the core writes a temporary file and
        renames it). ``then(paths)`` runs on the GUI thread afterwards."""
        result = self.result
        if result is None:
            return None
        p = Path(path)
        if p.suffix.lower() != ".safetensors":
            p = p.with_name(p.name + ".safetensors")

        def work() -> dict:
            from advgui.core.training import save_training
            p.parent.mkdir(parents=True, exist_ok=True)
            return save_training(result, p, log=True)

        job = Job(work, "save-weights")
        self._save_job = job

        def done(paths: dict) -> None:
            self.saved_path = Path(paths["weights"])
            self._show_message(f"Saved {_esc(str(paths['weights']))} (log: {_esc(Path(paths['log_csv']).name)}, "
                               f"{_esc(Path(paths['log_json']).name)}).", "info")
            if self.window_ is not None:
                self.window_.status(f"Saved {paths['weights']}")
            self.saved.emit(paths)
            if then is not None:
                then(paths)

        def failed(msg: str) -> None:
            self._show_message(f"Could not save the weights: {_esc(msg)}", "error")
            if self.window_ is not None:
                self.window_.show_error(f"Could not save the weights: {msg}")

        job.done.connect(done)
        job.failed.connect(failed)
        track(job).start()
        return job

    def open_in_explore(self) -> Optional[Job]:
        """Make the trained model the window's current model (saving it first if it was not saved)."""
        if self.result is None or self.window_ is None:
            return None
        win = self.window_

        def load(paths: Any = None) -> None:
            path = self.saved_path
            cur = win.model.request if win.model is not None else None
            req = ModelRequest(spec=str(path), labels=cur.labels if cur else "", device=cur.device if cur else "auto")
            win.model_panel.set_request(req)
            win.load_model(req)
            if win.explore is not None:
                win.tabs.setCurrentWidget(win.explore)

        if self.saved_path is not None and self.saved_path.exists():
            load()
            return None
        from .settings import config_dir
        r = self._request
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{(r.start_name if r else 'model')}-{(r.method if r else 'trained')}-{stamp}.safetensors"
        return self.save_to(str(config_dir() / "trained" / name), then=load)

    # -- settings --------------------------------------------------------------------------------------------
    def _remember(self, r: HardenRequest) -> None:
        if self.window_ is None:
            return
        self.window_.settings.set("harden/state", {
            "data": r.data, "val": r.val or HOLD_OUT, "method": r.method, "eps": r.eps, "epochs": r.epochs,
            "pgd_steps": r.pgd_steps, "lr": r.lr, "max_images": r.max_images})

    def restore(self, st: Any) -> None:
        if not isinstance(st, dict) or not st:
            return
        try:
            self.data.setEditText(str(st.get("data", "demo-digits")))
            self.val.setEditText(str(st.get("val", "demo-digits-test")))
            i = self.method.findData(st.get("method", "pgd"))
            if i >= 0:
                self.method.setCurrentIndex(i)
            if "eps" in st:
                self.eps.setValue(float(st["eps"]))
                self._eps_touched = True
            self.epochs.setValue(int(st.get("epochs", self.epochs.value())))
            self.pgd_steps.setValue(int(st.get("pgd_steps", self.pgd_steps.value())))
            self.lr.setValue(float(st.get("lr", self.lr.value())))
            self.max_images.setValue(int(st.get("max_images", 0)))
        except (TypeError, ValueError):
            pass   # a hand-edited settings file: keep the defaults

    # -- hookup ----------------------------------------------------------------------------------------------
    @classmethod
    def install(cls, window: MainWindow) -> HardenTab:
        """Create the tab, add it to ``window`` and follow the window's model. ``--autorun harden[:EPOCHS[:N]]``
        (screenshots) switches to the tab once the window is ready and trains for EPOCHS (default 2) on at
        most N images (default 400)."""
        tab = cls(window)
        window.add_tab(tab, "Harden")
        tab.restore(window.settings.get_json("harden/state", {}))
        window.model_loaded.connect(tab.set_model)
        mode = window.autorun or ""
        if mode.startswith("harden"):
            window.autorun = ""           # the window would otherwise run an attack when ready
            parts = mode.split(":")[1:]
            state = {"done": False}

            def go() -> None:
                if state["done"]:
                    return
                state["done"] = True
                window.tabs.setCurrentWidget(tab)
                try:
                    epochs = int(parts[0]) if parts and parts[0] else 2
                    n = int(parts[1]) if len(parts) > 1 and parts[1] else 400
                except ValueError:
                    epochs, n = 2, 400
                if epochs > 0:
                    tab.epochs.setValue(epochs)
                    tab.max_images.setValue(n)
                    tab.start_training()
            window.ready.connect(lambda: QTimer.singleShot(300, go))
        return tab


def _row(*widgets: QWidget, stretch_first: bool = True) -> QWidget:
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(4)
    for i, x in enumerate(widgets):
        lay.addWidget(x, 1 if (i == 0 and stretch_first) or isinstance(x, (QSpinBox, QDoubleSpinBox)) else 0)
    return w


def _short_skip(entry: str) -> str:
    """``/long/path/broken.png: reason`` -> ``broken.png — reason``."""
    path, sep, reason = entry.partition(": ")
    return f"{Path(path).name} — {reason}" if sep else entry
