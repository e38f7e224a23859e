"""The side panels: Model, Images, Attack. They collect the user's choices and show short summaries;
the main window turns their requests into background jobs."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QListView, QListWidget, QPushButton, QSizePolicy, QSpinBox,
                               QVBoxLayout, QWidget)

from .widgets import EpsEditor, PathEdit
from .jobs import AttackRequest, LoadedModel, ModelRequest

MODEL_FILTER = ("Models (*.pt *.pth *.ts *.torchscript *.safetensors *.pkl *.bin);;"
                "safetensors (*.safetensors);;TorchScript (*.pt *.ts *.torchscript);;All files (*)")
LABEL_FILTER = "Class names (*.txt *.json);;All files (*)"
IMAGE_FILTER = ("Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.ppm *.pgm *.pnm *.tga);;"
                "All files (*)")
SPEC_EXAMPLES = ["demo", "demo-robust", "torchvision:resnet18", "torchvision:resnet50",
                 "torchvision:mobilenet_v3_small", "torchvision:efficientnet_b0", "torchvision:vit_b_16"]


def _hint(text: str) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setProperty("hint", True)
    lab.setStyleSheet("color: palette(placeholder-text);")
    return lab


# -- Model -------------------------------------------------------------------------------------------------------

class ModelPanel(QWidget):
    load_requested = Signal(object)      # ModelRequest

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(6, 6, 6, 6)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.spec = QComboBox()
        self.spec.setEditable(True)
        self.spec.addItems(SPEC_EXAMPLES)
        self.spec.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.spec.setToolTip("demo, demo-robust, torchvision:ARCH (with a weights file), or a model file: "
                             "TorchScript (.pt/.ts) or safetensors with metadata")
        self.spec.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.spec.setMinimumContentsLength(10)
        self.open_btn = QPushButton("Open…")
        self.open_btn.setToolTip("Open a model file (TorchScript, safetensors, state_dict)")
        row = QHBoxLayout()
        row.setSpacing(4)
        row.addWidget(self.spec, 1)
        row.addWidget(self.open_btn)
        form.addRow("Model", row)
        self.weights = PathEdit("weights file (.pth / .safetensors)", MODEL_FILTER)
        form.addRow("Weights", self.weights)
        self.labels = PathEdit("class names (.txt / .json), optional", LABEL_FILTER)
        form.addRow("Classes", self.labels)
        self.device = QComboBox()
        for name in ("auto", "cpu", "cuda", "mps"):
            self.device.addItem({"auto": "auto", "cpu": "CPU", "cuda": "CUDA", "mps": "MPS"}[name], name)
        self.trust = QCheckBox("trust pickled files")
        self.trust.setToolTip("Allow whole pickled models. Unpickling can run arbitrary code: only for files "
                              "whose source you trust. Not remembered.")
        drow = QHBoxLayout()
        drow.addWidget(self.device, 1)
        drow.addWidget(self.trust)
        form.addRow("Device", drow)
        self.load_btn = QPushButton("Load model")
        self.summary = QLabel("Loading…")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.load_btn)
        form.addRow(self.summary)
        self._form = form
        self.open_btn.clicked.connect(self._open_file)
        self.load_btn.clicked.connect(self.request_load)
        self.spec.activated.connect(lambda _i: self.request_load())
        self.spec.lineEdit().returnPressed.connect(self.request_load)
        self.spec.currentTextChanged.connect(self._update_rows)
        self.weights.chosen.connect(lambda _p: self.request_load() if self.weights.text() else None)
        self.labels.chosen.connect(lambda _p: self.request_load())
        self.device.activated.connect(lambda _i: self.request_load())
        self._update_rows()

    def _update_rows(self, *_a) -> None:
        self._form.setRowVisible(self.weights, self.spec.currentText().strip().startswith("torchvision:"))

    def _open_file(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Open a model", "", MODEL_FILTER)
        if p:
            self.spec.setEditText(p)
            self.request_load()

    def request(self) -> ModelRequest:
        spec = self.spec.currentText().strip() or "demo"
        return ModelRequest(spec=spec, weights=self.weights.text() if spec.startswith("torchvision:") else "",
                            labels=self.labels.text(), device=self.device.currentData() or "auto",
                            trust_pickle=self.trust.isChecked())

    def request_load(self) -> None:
        self.load_requested.emit(self.request())

    def set_request(self, req: ModelRequest) -> None:
        self.spec.setEditText(req.spec)
        self.weights.setText(req.weights)
        self.labels.setText(req.labels)
        i = self.device.findData(req.device)
        self.device.setCurrentIndex(max(0, i))
        self._update_rows()

    def set_devices(self, devices: dict[str, bool]) -> None:
        model = self.device.model()
        for i in range(self.device.count()):
            name = self.device.itemData(i)
            ok = name == "auto" or devices.get(name, False)
            item = model.item(i)
            if item is not None:
                item.setEnabled(ok)
                item.setToolTip("" if ok else f"{name.upper()} is not available on this machine")

    def set_busy(self, text: str) -> None:
        self.summary.setText(f"<i>{text}</i>")
        self.load_btn.setEnabled(False)

    def set_loaded(self, m: LoadedModel) -> None:
        s = m.summary
        self.load_btn.setEnabled(True)
        self.summary.setText(
            f"<b>{Path(str(s['spec'])).name}</b><br>{s['classes']} classes · input {s['input']} · "
            f"{int(s['parameters']):,} parameters · <b>{s['device']}</b>")
        self.summary.setToolTip(f"source: {m.classifier.source}\nmean {s['mean']}, std {s['std']}\n"
                                f"loaded in {m.seconds:.2f} s")
        self.set_devices(m.devices)

    def set_failed(self, text: str) -> None:
        self.load_btn.setEnabled(True)
        self.summary.setText(f"<span style='color:#b3261e'>Not loaded: {text}</span>")


# -- Images ------------------------------------------------------------------------------------------------------

class ThumbModel(QAbstractListModel):
    """Image items with thumbnail, true label and clean prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.labels: list[Optional[int]] = []
        self.class_names: list[str] = []
        self.preds: dict[int, tuple[int, float, bool]] = {}
        self.icons: dict[int, QIcon] = {}
        self.bad: dict[int, str] = {}
        self.thumb_px = 40

    def reset(self, names: Sequence[str], labels: Sequence[Optional[int]], class_names: Sequence[str]) -> None:
        self.beginResetModel()
        self.names, self.labels, self.class_names = list(names), list(labels), list(class_names)
        self.preds, self.icons, self.bad = {}, {}, {}
        self.endResetModel()

    def cls(self, i: Optional[int]) -> str:
        if i is None or i < 0:
            return "?"
        return self.class_names[i] if i < len(self.class_names) else str(i)

    def add_previews(self, previews: Sequence[Any]) -> None:
        from .display import qimage
        lo, hi = len(self.names), -1
        for pv in previews:
            self.preds[pv.index] = (pv.pred, pv.conf, pv.finite)
            pm = QPixmap.fromImage(qimage(pv.thumb)).scaled(
                self.thumb_px, self.thumb_px, Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.FastTransformation if max(pv.thumb.shape[:2]) < self.thumb_px
                else Qt.TransformationMode.SmoothTransformation)
            self.icons[pv.index] = QIcon(pm)
            lo, hi = min(lo, pv.index), max(hi, pv.index)
        if hi >= 0:
            self.dataChanged.emit(self.index(lo), self.index(hi))

    def mark_bad(self, i: int, reason: str) -> None:
        self.bad[i] = reason
        self.dataChanged.emit(self.index(i), self.index(i))

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.names)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        i = index.row()
        if not index.isValid() or i >= len(self.names):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            name = self.names[i]
            lab = self.labels[i]
            if i in self.bad:
                return f"{name}\nunreadable: {self.bad[i]}"
            true = f"true {self.cls(lab)}" if lab is not None else "no label"
            if i in self.preds:
                p, c, finite = self.preds[i]
                pred = f"pred {self.cls(p)} ({100 * c:.0f}%)" if finite else "pred: NaN logits"
            else:
                pred = "pred …"
            return f"{name}\n{true} · {pred}"
        if role == Qt.ItemDataRole.DecorationRole:
            return self.icons.get(i)
        if role == Qt.ItemDataRole.ForegroundRole:
            if i in self.bad:
                return QBrush(QColor("#b3261e"))
            lab = self.labels[i]
            if lab is not None and i in self.preds and self.preds[i][0] != lab:
                return QBrush(QColor("#c62828"))
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.bad.get(i, self.names[i])
        return None


class ImagesPanel(QWidget):
    open_requested = Signal(object)      # list[str]
    current_changed = Signal(int)        # item index

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        row = QHBoxLayout()
        self.open_folder = QPushButton("Folder…")
        self.open_file = QPushButton("File…")
        self.demo_btn = QPushButton("Demo")
        self.demo_btn.setToolTip("The built-in demo digits")
        for b in (self.open_folder, self.open_file, self.demo_btn):
            row.addWidget(b)
        lay.addLayout(row)
        self.header = QLabel("No images yet — open a file or folder, or drop them onto the window.")
        self.header.setWordWrap(True)
        lay.addWidget(self.header)
        self.model = ThumbModel()
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.setIconSize(QSize(40, 40))
        self.view.setUniformItemSizes(True)
        self.view.setSpacing(1)
        self.view.setSelectionMode(QListView.SelectionMode.SingleSelection)
        lay.addWidget(self.view, 1)
        self.skipped_label = QLabel()
        self.skipped_label.setStyleSheet("color: #b3261e; font-weight: bold;")
        self.skipped = QListWidget()
        self.skipped.setWordWrap(True)
        self.skipped.setMaximumHeight(110)
        self.skipped.setToolTip("Files that could not be used, with the reason")
        lay.addWidget(self.skipped_label)
        lay.addWidget(self.skipped)
        self.skipped_label.hide()
        self.skipped.hide()
        self.path = ""
        self.open_folder.clicked.connect(self._pick_folder)
        self.open_file.clicked.connect(self._pick_files)
        self.demo_btn.clicked.connect(lambda: self.open_requested.emit(["demo"]))
        self.view.selectionModel().currentChanged.connect(lambda cur, _prev: self.current_changed.emit(cur.row())
                                                          if cur.isValid() else None)

    def _pick_folder(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Open an image folder", self.path if self.path != "demo" else "")
        if p:
            self.open_requested.emit([p])

    def _pick_files(self) -> None:
        ps, _ = QFileDialog.getOpenFileNames(self, "Open images", "", IMAGE_FILTER)
        if ps:
            self.open_requested.emit(ps)

    def set_busy(self, text: str) -> None:
        self.header.setText(f"<i>{text}</i>")

    def set_images(self, opened: Any, class_names: Sequence[str]) -> None:
        s = opened.image_set
        self.path = ";".join(opened.paths)
        self.model.reset(opened.names, opened.labels, class_names)
        where = "demo digits" if opened.paths == ["demo"] else Path(opened.paths[0]).name or opened.paths[0]
        if len(opened.paths) > 1:
            where = f"{len(opened.paths)} dropped items"
        how = "true labels from folder names" if s.labelled else "no labels: the clean prediction stands in"
        self.header.setText(f"<b>{len(s)} images</b> · {where}<br><small>{how}</small>")
        self.header.setToolTip(str(s.root))
        self.skipped.clear()
        for path, reason in opened.ignored:
            self.add_skipped(path, reason)
        self._update_skipped()

    def add_skipped(self, path: str, reason: str) -> None:
        for i in range(self.skipped.count()):
            if self.skipped.item(i).data(Qt.ItemDataRole.UserRole) == path:
                return
        from PySide6.QtWidgets import QListWidgetItem
        it = QListWidgetItem(f"{Path(path).name} — {reason}")
        it.setToolTip(f"{path}\n{reason}")
        it.setData(Qt.ItemDataRole.UserRole, path)
        self.skipped.addItem(it)
        norm = Path(path).as_posix()
        for i, name in enumerate(self.model.names):
            if norm == name or norm.endswith("/" + name):
                self.model.mark_bad(i, reason)
        self._update_skipped()

    def _update_skipped(self) -> None:
        n = self.skipped.count()
        self.skipped_label.setText(f"Could not use {n} file{'s' if n != 1 else ''}:")
        self.skipped_label.setVisible(n > 0)
        self.skipped.setVisible(n > 0)

    def skipped_entries(self) -> list[str]:
        return [self.skipped.item(i).text() for i in range(self.skipped.count())]

    def current(self) -> int:
        idx = self.view.currentIndex()
        return idx.row() if idx.isValid() else -1

    def select(self, i: int) -> None:
        if 0 <= i < self.model.rowCount():
            self.view.setCurrentIndex(self.model.index(i))
            self.view.scrollTo(self.model.index(i))

    def count(self) -> int:
        return self.model.rowCount()

    def is_bad(self, i: int) -> bool:
        return i in self.model.bad


# -- Attack ------------------------------------------------------------------------------------------------------

NORM_NAMES = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}
KNOWN = {
    "eps": "ε", "norm": "Norm", "steps": "Steps", "step_size": "Step size", "restarts": "Restarts",
    "random_start": "Random start", "stop_on_success": "Early stop", "decay": "Momentum",
}
PRETTY = {"lr": "Learning rate", "c": "c (initial)", "binary_steps": "Binary search", "overshoot": "Overshoot",
          "candidates": "Candidates", "confidence": "Confidence κ", "abort_early": "Abort early",
          "warm_start": "Warm start"}
TOOLTIPS = {
    "eps": "Largest allowed perturbation, in pixel units (L∞: per pixel; L2: whole image).",
    "steps": "Gradient steps per restart.",
    "step_size": "Size of each step; 'auto' uses the attack's default rule (e.g. 2.5·ε/steps for PGD).",
    "restarts": "Random restarts; each image keeps its best result.",
    "random_start": "Start from a random point inside the ε-ball (Madry et al.).",
    "stop_on_success": "Stop optimising an image as soon as it fools the model.",
    "decay": "Momentum decay factor μ (MI-FGSM).",
}


def _field_kind(cls: type, f: dataclasses.Field) -> tuple[str, bool]:
    """('float'|'int'|'bool'|'str'|'other', optional) of a dataclass field, from its type hint or default."""
    try:
        hint = typing.get_type_hints(cls).get(f.name, None)
    except Exception:  # noqa: BLE001 - unresolvable annotations
        hint = None
    optional = False
    if hint is not None:
        args = typing.get_args(hint)
        if type(None) in args:
            optional = True
            rest = [a for a in args if a is not type(None)]
            hint = rest[0] if len(rest) == 1 else None
        for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
            if hint is t:
                return name, optional
    default = f.default if f.default is not dataclasses.MISSING else None
    if default is None:
        optional = True
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(default, t):
            return name, optional
    return "other", optional


class AttackPanel(QWidget):
    run_requested = Signal()
    pause_toggled = Signal()
    step_requested = Signal()
    stop_requested = Signal()
    changed = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.registry: dict[str, type] = {}
        self._per_attack: dict[str, dict] = {}
        self._current: Optional[str] = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form = form
        self.attack = QComboBox()
        self.attack.addItem("loading…")
        self.attack.setEnabled(False)
        form.addRow("Attack", self.attack)
        self.about = _hint("")
        form.addRow(self.about)
        self.eps = EpsEditor()
        self.eps.setValue(8 / 255)
        self.eps_bounded = QCheckBox("limit ε")
        self.eps_bounded.setChecked(True)
        erow = QWidget()
        el = QHBoxLayout(erow)
        el.setContentsMargins(0, 0, 0, 0)
        el.addWidget(self.eps, 1)
        el.addWidget(self.eps_bounded)
        form.addRow(KNOWN["eps"], erow)
        self._eps_row = erow
        self.norm = QComboBox()
        form.addRow(KNOWN["norm"], self.norm)
        self.steps = QSpinBox()
        self.steps.setRange(1, 100000)
        self.steps.setValue(20)
        form.addRow(KNOWN["steps"], self.steps)
        self.step_size = QDoubleSpinBox()
        self.step_size.setDecimals(4)
        self.step_size.setRange(0.0, 10.0)
        self.step_size.setSingleStep(0.5 / 255)
        self.step_size.setSpecialValueText("auto")
        form.addRow(KNOWN["step_size"], self.step_size)
        self.restarts = QSpinBox()
        self.restarts.setRange(1, 1000)
        form.addRow(KNOWN["restarts"], self.restarts)
        self.decay = QDoubleSpinBox()
        self.decay.setRange(0.0, 10.0)
        self.decay.setSingleStep(0.1)
        self.decay.setValue(1.0)
        form.addRow(KNOWN["decay"], self.decay)
        self.random_start = QCheckBox("random point in ε-ball")
        self.random_start.setChecked(True)
        form.addRow(KNOWN["random_start"], self.random_start)
        self.stop_on_success = QCheckBox("stop once fooled")
        form.addRow(KNOWN["stop_on_success"], self.stop_on_success)
        self.widgets: dict[str, QWidget] = {"eps": self._eps_row, "norm": self.norm, "steps": self.steps,
                                            "step_size": self.step_size, "restarts": self.restarts,
                                            "decay": self.decay, "random_start": self.random_start,
                                            "stop_on_success": self.stop_on_success}
        for name, tip in TOOLTIPS.items():
            w = self.widgets.get(name)
            if w is not None:
                w.setToolTip(tip)
                lab = form.labelForField(w)
                if lab is not None:
                    lab.setToolTip(tip)
        self.extra: dict[str, tuple[QWidget, str, bool]] = {}   # generic fields of other attacks
        self.targeted = QCheckBox("targeted")
        self.target = QComboBox()
        self.target.setEditable(True)
        self.target.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.target.setEnabled(False)
        for combo in (self.attack, self.norm, self.target):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(6)
        trow = QWidget()
        tl = QHBoxLayout(trow)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.targeted)
        tl.addWidget(self.target, 1)
        form.addRow("Target", trow)
        self._target_row = trow
        self.seed = QSpinBox()
        self.seed.setRange(0, 2 ** 31 - 1)
        self.seed.setToolTip("Seed of the random start; the same seed gives the same result.")
        form.addRow("Seed", self.seed)
        lay.addLayout(form)
        btns = QHBoxLayout()
        self.run_btn = QPushButton("▶ Run")
        self.run_btn.setObjectName("runButton")
        self.run_btn.setToolTip("Attack the selected image (F5)")
        self.pause_btn = QPushButton("❚❚ Pause")
        self.pause_btn.setToolTip("Pause / resume (F6)")
        self.step_btn = QPushButton("Step")
        self.step_btn.setToolTip("Run exactly one more step, then pause (F7)")
        self.stop_btn = QPushButton("■ Stop")
        self.stop_btn.setToolTip("Stop and keep the best result so far (Esc)")
        for b in (self.pause_btn, self.step_btn, self.stop_btn):
            btns.addWidget(b)
        self.run_btn.setMinimumHeight(int(self.fontMetrics().height() * 2.2))
        f = self.run_btn.font()
        f.setBold(True)
        self.run_btn.setFont(f)
        lay.addWidget(self.run_btn)
        lay.addLayout(btns)
        self.run_btn.setEnabled(False)
        self.set_running(False)
        self.attack.currentIndexChanged.connect(self._attack_changed)
        self.targeted.toggled.connect(self.target.setEnabled)
        self.eps_bounded.toggled.connect(self.eps.setEnabled)
        self.run_btn.clicked.connect(self.run_requested)
        self.pause_btn.clicked.connect(self.pause_toggled)
        self.step_btn.clicked.connect(self.step_requested)
        self.stop_btn.clicked.connect(self.stop_requested)
        for sig in (self.eps.valueChanged, self.norm.currentIndexChanged, self.steps.valueChanged,
                    self.step_size.valueChanged, self.restarts.valueChanged, self.decay.valueChanged,
                    self.random_start.toggled, self.stop_on_success.toggled, self.targeted.toggled,
                    self.target.currentIndexChanged, self.seed.valueChanged, self.eps_bounded.toggled):
            sig.connect(lambda *_a: self.changed.emit())

    # -- registry -------------------------------------------------------------------------------------------
    def set_registry(self, registry: dict[str, type]) -> None:
        current = self.attack.currentData()
        self.registry = dict(registry)
        self.attack.blockSignals(True)
        self.attack.clear()
        for name, cls in self.registry.items():
            self.attack.addItem(name.upper() if len(name) <= 6 else name, name)
            self.attack.setItemData(self.attack.count() - 1, (cls.__doc__ or "").strip().splitlines()[0]
                                    if cls.__doc__ else "", Qt.ItemDataRole.ToolTipRole)
        self.attack.setEnabled(True)
        for cls in self.registry.values():   # every attack's own parameters, hidden until chosen
            self._build_extra(cls, {f.name: f for f in dataclasses.fields(cls)})
        i = self.attack.findData(current or "pgd")
        self.attack.setCurrentIndex(max(0, i))
        self.attack.blockSignals(False)
        self._attack_changed()

    def cls(self) -> Optional[type]:
        return self.registry.get(self.attack.currentData())

    def _attack_changed(self, *_a) -> None:
        cls = self.cls()
        if cls is None:
            return
        name = self.attack.currentData()
        if self._current is not None and self._current != name:
            self._per_attack[self._current] = self._values()
        self._current = name
        fields = {f.name: f for f in dataclasses.fields(cls)}
        doc = (cls.__doc__ or "").strip().splitlines()
        self.about.setText(doc[0] if doc else "")
        for key, w in self.widgets.items():
            self.form.setRowVisible(w, key in fields)
        # ε: bounded or optional (minimal-norm attacks)
        if "eps" in fields:
            kind, optional = _field_kind(cls, fields["eps"])
            self.eps_bounded.setVisible(optional)
            # minimal-norm attacks find the smallest perturbation: unbounded unless asked
            self.eps_bounded.setChecked(not optional)
            self.eps.setEnabled(self.eps_bounded.isChecked())
        norms = tuple(getattr(cls, "norms", ("linf",)))
        default_norm = fields["norm"].default if "norm" in fields else None
        cur = default_norm if default_norm in norms else self.norm.currentData()
        self.norm.blockSignals(True)
        self.norm.clear()
        for n in norms:
            self.norm.addItem(NORM_NAMES.get(n, n), n)
        self.norm.setCurrentIndex(max(0, self.norm.findData(cur)))
        self.norm.blockSignals(False)
        self.form.setRowVisible(self.norm, "norm" in fields and len(norms) > 0)
        self.norm.setEnabled(len(norms) > 1)
        supports = bool(getattr(cls, "supports_targeted", True))
        self.form.setRowVisible(self._target_row, True)
        self.targeted.setEnabled(supports)
        self.target.setEnabled(supports and self.targeted.isChecked())
        self._target_row.setToolTip("" if supports else f"{cls.name} is untargeted only")
        if not supports:
            self.targeted.setChecked(False)
        self.form.setRowVisible(self.seed, "random_start" in fields or "restarts" in fields)
        self._build_extra(cls, fields)
        self._apply_values(cls, self._per_attack.get(name, {}))
        self.changed.emit()

    # -- each attack keeps its own steps, step size, norm, ... (ε, target and seed are shared) ----------------
    _PER_ATTACK = ("norm", "steps", "step_size", "restarts", "decay", "random_start", "stop_on_success")

    def _values(self) -> dict:
        v: dict[str, Any] = {"norm": self.norm.currentData(), "steps": self.steps.value(),
                             "step_size": self.step_size.value(), "restarts": self.restarts.value(),
                             "decay": self.decay.value(), "random_start": self.random_start.isChecked(),
                             "stop_on_success": self.stop_on_success.isChecked(),
                             "eps_bounded": self.eps_bounded.isChecked()}
        for name, (w, kind, _o) in self.extra.items():
            v[name] = w.isChecked() if kind == "bool" else w.text() if kind == "str" else w.value()
        return v

    def _apply_values(self, cls: type, vals: dict) -> None:
        """Saved values of this attack, else its dataclass defaults."""
        fields = {f.name: f for f in dataclasses.fields(cls)}

        def val(name: str) -> Any:
            if name in vals:
                return vals[name]
            f = fields.get(name)
            return None if f is None or f.default is dataclasses.MISSING else f.default

        try:
            if "norm" in fields:
                i = self.norm.findData(val("norm"))
                if i >= 0:
                    self.norm.setCurrentIndex(i)
            if "steps" in fields and val("steps") is not None:
                self.steps.setValue(int(val("steps")))
            if "step_size" in fields:
                self.step_size.setValue(float(val("step_size") or 0.0))
            if "restarts" in fields and val("restarts") is not None:
                self.restarts.setValue(int(val("restarts")))
            if "decay" in fields and val("decay") is not None:
                self.decay.setValue(float(val("decay")))
            for name, box in (("random_start", self.random_start), ("stop_on_success", self.stop_on_success)):
                if name in fields and val(name) is not None:
                    box.setChecked(bool(val(name)))
            if "eps_bounded" in vals and self.eps_bounded.isVisible():
                self.eps_bounded.setChecked(bool(vals["eps_bounded"]))
            for name, (w, kind, optional) in self.extra.items():
                if name not in fields:
                    continue
                v = val(name)
                if kind == "bool":
                    w.setChecked(bool(v))
                elif kind == "str":
                    w.setText("" if v is None else str(v))
                else:
                    w.setValue(w.minimum() if v is None else v)
        except (TypeError, ValueError):
            pass   # a hand-edited settings file: keep what is there

    def _build_extra(self, cls: type, fields: dict) -> None:
        for name, (w, _k, _o) in list(self.extra.items()):
            self.form.setRowVisible(w, name in fields)
        for name, f in fields.items():
            if name in self.widgets or name in self.extra:
                continue
            kind, optional = _field_kind(cls, f)
            default = f.default if f.default is not dataclasses.MISSING else None
            label = PRETTY.get(name, name.replace("_", " ").capitalize())
            w: QWidget
            if kind == "bool":
                w = QCheckBox()
                w.setChecked(bool(default))
                w.toggled.connect(lambda *_a: self.changed.emit())
            elif kind == "int":
                w = QSpinBox()
                w.setRange(-1 if optional else 0, 1_000_000)
                if optional:
                    w.setSpecialValueText("auto")
                w.setValue(int(default) if default is not None else w.minimum())
                w.valueChanged.connect(lambda *_a: self.changed.emit())
            elif kind == "float":
                w = QDoubleSpinBox()
                w.setDecimals(5)
                w.setRange(-1.0 if optional else 0.0, 1e6)
                w.setSingleStep(0.01 if default is None or abs(default) < 1 else 1.0)
                if optional:
                    w.setSpecialValueText("auto")
                w.setValue(float(default) if default is not None else w.minimum())
                w.valueChanged.connect(lambda *_a: self.changed.emit())
            elif kind == "str":
                w = QLineEdit(str(default or ""))
                w.editingFinished.connect(self.changed.emit)
            else:
                continue
            w.setToolTip(f"{cls.__name__}.{name}")
            self.form.insertRow(self.form.rowCount() - 2, label, w)
            self.extra[name] = (w, kind, optional)

    # -- values ---------------------------------------------------------------------------------------------
    def params(self) -> dict:
        cls = self.cls()
        fields = {f.name for f in dataclasses.fields(cls)} if cls else set()
        p: dict[str, Any] = {}
        if "eps" in fields:
            p["eps"] = self.eps.value() if (self.eps_bounded.isChecked() or not self.eps_bounded.isVisible()) \
                else None
        if "norm" in fields and self.norm.currentData():
            p["norm"] = self.norm.currentData()
        if "steps" in fields:
            p["steps"] = self.steps.value()
        if "step_size" in fields:
            p["step_size"] = self.step_size.value() or None
        if "restarts" in fields:
            p["restarts"] = self.restarts.value()
        if "decay" in fields:
            p["decay"] = self.decay.value()
        if "random_start" in fields:
            p["random_start"] = self.random_start.isChecked()
        if "stop_on_success" in fields:
            p["stop_on_success"] = self.stop_on_success.isChecked()
        for name, (w, kind, optional) in self.extra.items():
            if name not in fields:
                continue
            if kind == "bool":
                p[name] = w.isChecked()
            elif kind in ("int", "float"):
                v = w.value()
                p[name] = None if optional and v == w.minimum() else v
            elif kind == "str":
                p[name] = w.text()
        return p

    def target_class(self) -> Optional[int]:
        if not (self.targeted.isChecked() and self.targeted.isEnabled()):
            return None
        i = self.target.currentIndex()
        return i if i >= 0 else None

    def request(self) -> AttackRequest:
        return AttackRequest(self.attack.currentData() or "pgd", self.params(), self.target_class(),
                             self.seed.value())

    def describe(self) -> str:
        r = self.request()
        parts = [r.attack.upper()]
        eps = r.params.get("eps")
        if "eps" in r.params:
            parts.append("ε unbounded" if eps is None else f"ε = {eps:.4g} ({eps * 255:.3g}/255)")
        if "norm" in r.params:
            parts.append(NORM_NAMES.get(r.params["norm"], r.params["norm"]))
        if "steps" in r.params:
            parts.append(f"{r.params['steps']} steps")
        if r.params.get("restarts", 1) > 1:
            parts.append(f"{r.params['restarts']} restarts")
        if r.target is not None:
            parts.append(f"target {self.target.itemText(r.target)}")
        return " · ".join(parts)

    def set_class_names(self, names: Sequence[str]) -> None:
        cur = self.target.currentIndex()
        self.target.blockSignals(True)
        self.target.clear()
        self.target.addItems([f"{i}: {n}" if str(n) != str(i) else str(n) for i, n in enumerate(names)])
        if 0 <= cur < len(names):
            self.target.setCurrentIndex(cur)
        self.target.blockSignals(False)

    def set_running(self, running: bool, paused: bool = False) -> None:
        self.pause_btn.setEnabled(running)
        self.step_btn.setEnabled(running and paused)
        self.stop_btn.setEnabled(running)
        self.pause_btn.setText("▶ Resume" if paused else "❚❚ Pause")

    # -- settings -------------------------------------------------------------------------------------------
    def state(self) -> dict:
        per = dict(self._per_attack)
        if self._current is not None:
            per[self._current] = self._values()
        return {"attack": self.attack.currentData(), "eps": self.eps.value(), "targeted": self.targeted.isChecked(),
                "target": self.target.currentIndex(), "seed": self.seed.value(), "per_attack": per}

    def restore(self, st: dict) -> None:
        """Apply saved values (call after set_registry / set_class_names so every choice exists)."""
        if not isinstance(st, dict) or not st:
            return
        try:
            per = st.get("per_attack") or {}
            if isinstance(per, dict):
                self._per_attack = {str(k): v for k, v in per.items() if isinstance(v, dict)}
            self._current = None
            i = self.attack.findData(st.get("attack"))
            self.attack.blockSignals(True)
            if i >= 0:
                self.attack.setCurrentIndex(i)
            self.attack.blockSignals(False)
            self._attack_changed()
            self.eps.setValue(float(st.get("eps", self.eps.value())))
            t = int(st.get("target", -1))
            if 0 <= t < self.target.count():
                self.target.setCurrentIndex(t)
            self.targeted.setChecked(bool(st.get("targeted", False)) and self.targeted.isEnabled())
            self.seed.setValue(int(st.get("seed", 0)))
        except (TypeError, ValueError, AttributeError):
            pass  # a hand-edited settings file: keep the defaults
