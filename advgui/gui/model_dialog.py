"""Open model: pick a file (or an architecture), see what it is, give only what is missing, see what will be
loaded, then load it.

The file is recognised by :func:`advgui.core.models.inspect_model_file`, which reads headers and archive
listings only: it never runs code or unpickles. What it says decides which rows are shown:

- a bare state_dict needs an architecture (a guess from its keys is preselected when there is one);
- a TorchScript file or a pickled model carries code: a checkbox with the risk spelled out must be ticked;
- a torchvision architecture without a weights file can download pretrained weights, but only when the
  user ticks that box — choosing an architecture never starts a download by itself;
- class names are asked for only when the file does not bring them.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QVBoxLayout,
                               QWidget)

from advgui.session import ModelRequest, Session

from .widgets import PathEdit, plain

MODEL_FILTER = ("Models (*.pt *.pth *.ts *.torchscript *.safetensors *.pkl *.bin *.onnx *.json);;"
                "All files (*)")
TORCHVISION = ["resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
               "vgg16", "densenet121", "vit_b_16", "convnext_tiny"]


class ModelDialog(QDialog):
    def __init__(self, session: Session, parent: Optional[QWidget] = None, path: str = "", arch: str = "") -> None:
        super().__init__(parent)
        self.s = session
        self.setWindowTitle("Open a model")
        self.setMinimumWidth(520)
        lay = QVBoxLayout(self)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form = form
        self.file = PathEdit("a model file, or a Hugging Face folder", MODEL_FILTER)
        form.addRow("File", self.file)
        self.kind = plain(QLabel(""))
        self.kind.setWordWrap(True)
        form.addRow("Recognised", self.kind)
        self.arch = QComboBox()
        self.arch.setEditable(True)
        self.arch.addItems(TORCHVISION)
        self.arch.setToolTip("The torchvision architecture the weights belong to")
        form.addRow("Architecture", self.arch)
        self.download = QCheckBox("download torchvision's pretrained weights (needs the internet)")
        form.addRow("", self.download)
        self.labels = PathEdit("class names (.txt / .json), optional", "Class names (*.txt *.json);;All files (*)")
        form.addRow("Class names", self.labels)
        self.trust = QCheckBox("I trust this file: let it run its code")
        self.trust.setToolTip("TorchScript files and pickled models contain code that runs when they are opened "
                              "(it could read or change your files). Tick only for files from a source you trust. "
                              "Never remembered.")
        self.trust_note = plain(QLabel(""))
        self.trust_note.setWordWrap(True)
        self.trust_note.setStyleSheet("color: #8a5300;")
        form.addRow("", self.trust_note)
        form.addRow("", self.trust)
        lay.addLayout(form)
        self.preview = plain(QLabel(""))
        self.preview.setWordWrap(True)
        self.preview.setFrameShape(QLabel.Shape.StyledPanel)
        self.preview.setMargin(6)
        lay.addWidget(self.preview)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        self.info: Any = None
        self.file.chosen.connect(lambda _p: self.inspect())
        for sig in (self.arch.currentTextChanged, self.download.toggled, self.trust.toggled, self.labels.chosen):
            sig.connect(lambda *_a: self.update_rows())
        if arch:
            self.arch.setEditText(arch.split(":", 1)[1] if arch.startswith("torchvision:") else arch)
            self.info = None
        if path:
            self.file.setText(path)
            self.inspect()
        self.update_rows()

    def browse(self) -> None:
        self.file.browse()

    # -- recognising the file --------------------------------------------------------------------------------------
    def inspect(self) -> None:
        path = self.file.text()
        self.info = None
        if path:
            from advgui.core.errors import UserError
            from advgui.core.models import inspect_model_file
            try:
                self.info = inspect_model_file(path)
            except (UserError, OSError) as e:
                self.info = e
            guess = getattr(self.info, "arch_guess", None)
            if guess:
                self.arch.setEditText(guess.split(":", 1)[-1])
        self.update_rows()

    def _needs(self, what: str) -> bool:
        info = self.info
        if info is None:                      # no file: an architecture, with a weights file or a download
            return what in ("arch", "download")
        if isinstance(info, Exception):
            return False
        return bool(getattr(info, f"needs_{what}", False))

    def update_rows(self) -> None:
        info = self.info
        no_file = not self.file.text()
        f = self.form
        f.setRowVisible(self.arch, self._needs("arch") or (no_file and bool(self.arch.currentText())))
        f.setRowVisible(self.download, no_file)
        code = self._needs("trust")
        f.setRowVisible(self.trust, code)
        f.setRowVisible(self.trust_note, code)
        if code:
            self.trust_note.setText(f"This file is {getattr(info, 'kind_text', 'a format that carries code')}: "
                                    "opening it runs code from the file.")
        if isinstance(info, Exception):
            self.kind.setText(str(info))
            self.kind.setStyleSheet("color: #b3261e;")
        else:
            self.kind.setStyleSheet("")
            self.kind.setText(getattr(info, "description", "") if info is not None else
                              "no file: choose one, or an architecture below")
        req = self.request()
        ok = req is not None
        self.buttons.button(QDialogButtonBox.StandardButton.Open).setEnabled(ok)
        self.preview.setText(self._preview(req) if ok else self._missing())

    def _missing(self) -> str:
        if isinstance(self.info, Exception):
            return "This file cannot be opened (see above)."
        if self._needs("trust") and not self.trust.isChecked():
            return "Tick the box above to open a file that runs code, or choose another file."
        if self.info is None and not self.download.isChecked():
            return "Choose a weights file, or tick the download box to fetch torchvision's pretrained weights."
        return "Choose a file."

    def _preview(self, req: ModelRequest) -> str:
        info = self.info
        lines = [f"Will load: {req.describe()}"]
        if info is not None and not isinstance(info, Exception):
            if getattr(info, "classes", None):
                lines.append(f"{info.classes} classes" + (f", input {info.input_text}" if getattr(info, "input_text", "")
                                                          else ""))
        if req.allow_download:
            lines.append("Pretrained weights will be downloaded into torchvision's cache.")
        if req.labels:
            lines.append(f"Class names from {Path(req.labels).name}")
        if req.trust_code:
            lines.append("Code in the file will run.")
        return "\n".join(lines)

    def request(self) -> Optional[ModelRequest]:
        """The model request the dialog would load, or None while something is missing."""
        base = ModelRequest(labels=self.labels.text(),
                            device=self.s.model.request.device if self.s.model is not None else "auto")
        info, path = self.info, self.file.text()
        if isinstance(info, Exception):
            return None
        if not path:
            arch = self.arch.currentText().strip()
            if not arch or not self.download.isChecked():
                return None
            return replace(base, spec=f"torchvision:{arch}", allow_download=True)
        if self._needs("trust") and not self.trust.isChecked():
            return None
        spec = getattr(info, "spec", None) or path
        if self._needs("arch"):
            arch = self.arch.currentText().strip()
            if not arch:
                return None
            return replace(base, spec=f"torchvision:{arch}" if ":" not in arch else arch, weights=path,
                           trust_code=self.trust.isChecked())
        return replace(base, spec=spec, trust_code=self.trust.isChecked() and self._needs("trust"))

    def accept(self) -> None:
        req = self.request()
        if req is None:
            return
        self.s.load_model(req)
        super().accept()
