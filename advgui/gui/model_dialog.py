"""Open model: pick a file (or an architecture), see what it is, give only what is missing, see what will be
loaded, then load it.

The file is recognised by :func:`advgui.core.model_files.inspect_model_file`, which reads headers, archive
listings and pickle opcodes only: it never runs code or unpickles. What it says decides which rows are shown:

- a bare state_dict needs an architecture (the best guess from its keys and shapes is preselected);
- TorchScript and pickled models carry code: a checkbox with the risk spelled out must be ticked;
- ONNX with free input dimensions needs an input size; a missing optional package names the pip command;
- a torchvision architecture without a weights file can download pretrained weights, but only when the user
  ticks that box — choosing an architecture never starts a download by itself;
- class names are asked for only when the file does not bring them;
- a file encrypted by ``advgui encrypt`` asks for its passphrase (a password field; the passphrase goes to the
  load and is never remembered in the settings), and is decrypted in memory only.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit,
                               QSpinBox, QVBoxLayout, QWidget)

from advgui.session import ModelRequest, Session

from .widgets import PathEdit, plain

MODEL_FILTER = ("Models (*.pt *.pth *.ts *.torchscript *.safetensors *.pkl *.bin *.onnx *.json *.enc);;"
                "All files (*)")
TORCHVISION = ["resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
               "vgg16", "densenet121", "vit_b_16", "convnext_tiny"]
KIND_TEXT = {"torchscript": "a TorchScript program", "pickled-model": "a pickled Python model",
             "pickle": "a pickle of Python objects"}


class ModelDialog(QDialog):
    def __init__(self, session: Session, parent: Optional[QWidget] = None, path: str = "", arch: str = "") -> None:
        super().__init__(parent)
        self.s = session
        self.setWindowTitle("Open a model")
        self.setMinimumWidth(540)
        lay = QVBoxLayout(self)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form = form
        self.file = PathEdit("a model file, or a Hugging Face folder's config.json", MODEL_FILTER)
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
        self.size = QSpinBox()
        self.size.setRange(8, 4096)
        self.size.setValue(224)
        self.size.setSuffix(" px")
        self.size.setToolTip("The model does not fix its input size: choose the square size to feed it")
        form.addRow("Input size", self.size)
        self.labels = PathEdit("class names (.txt / .json), optional", "Class names (*.txt *.json);;All files (*)")
        form.addRow("Class names", self.labels)
        self.trust_note = plain(QLabel(""))
        self.trust_note.setWordWrap(True)
        self.trust_note.setStyleSheet("color: #8a5300;")
        self.trust = QCheckBox("I trust this file: let it run its code")
        self.trust.setToolTip("TorchScript files and pickled models contain code that runs when they are opened "
                              "(it could read or change your files). Tick only for files from a source you trust. "
                              "Never remembered.")
        form.addRow("", self.trust_note)
        form.addRow("", self.trust)
        self.passphrase = QLineEdit()
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase.setPlaceholderText("the passphrase given to advgui encrypt")
        self.passphrase.setToolTip("The file is encrypted. It is decrypted in memory only; the passphrase is never "
                                   "remembered.")
        form.addRow("Passphrase", self.passphrase)
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
        self.encrypted = False
        self.passphrase.textChanged.connect(lambda *_a: self.update_rows())
        self.file.chosen.connect(lambda _p: self.inspect())
        for sig in (self.arch.currentTextChanged, self.download.toggled, self.trust.toggled, self.labels.chosen,
                    self.size.valueChanged):
            sig.connect(lambda *_a: self.update_rows())
        if arch:
            self.arch.setEditText(arch.split(":", 1)[1] if arch.startswith("torchvision:") else arch)
        if path:
            self.file.setText(path)
            self.inspect()
        self.update_rows()

    # -- recognising the file --------------------------------------------------------------------------------------
    def inspect(self) -> None:
        path = self.file.text()
        self.info = None
        from advgui.core.crypto import SUFFIX, is_encrypted_file
        self.encrypted = bool(path) and (path.endswith(SUFFIX) or is_encrypted_file(path))
        if self.encrypted:                     # nothing can be read before the passphrase: the load says the rest
            self.update_rows()
            return
        if path:
            from advgui.core.model_files import inspect_model_file
            self.info = inspect_model_file(path)
            guesses = list(self.info.arch_guesses)
            if guesses:
                self.arch.clear()
                self.arch.addItems([g.split(":", 1)[-1] for g in guesses] +
                                   [a for a in TORCHVISION if f"torchvision:{a}" not in guesses])
                self.arch.setCurrentIndex(0)
            if self.info.input_size:
                self.size.setValue(int(self.info.input_size[0]))
        self.update_rows()

    def needs(self, what: str) -> bool:
        info = self.info
        if self.encrypted:
            return what == "passphrase"
        if info is None:                       # no file: an architecture, with a download
            return what == "arch"
        return what in info.needs

    def update_rows(self) -> None:
        info = self.info
        no_file = not self.file.text()
        f = self.form
        f.setRowVisible(self.arch, self.needs("arch"))
        f.setRowVisible(self.passphrase, self.encrypted)
        f.setRowVisible(self.download, no_file)
        f.setRowVisible(self.size, self.needs("input_size"))
        code = self.needs("trust")
        f.setRowVisible(self.trust, code)
        f.setRowVisible(self.trust_note, code)
        f.setRowVisible(self.labels, info is None or "labels" in info.optional or not info.class_names)
        if self.encrypted:
            f.setRowVisible(self.download, False)
        if code:
            what = KIND_TEXT.get(info.kind, "a format that carries code")
            self.trust_note.setText(f"This file is {what}: opening it runs code from the file.")
        if self.encrypted:
            self.kind.setStyleSheet("")
            self.kind.setText("an encrypted model file (advgui encrypt): give its passphrase; it is decrypted in "
                              "memory only")
        elif info is None:
            self.kind.setStyleSheet("")
            self.kind.setText("no file: choose one, or an architecture to download pretrained weights for")
        elif info.problem:
            self.kind.setStyleSheet("color: #b3261e;")
            self.kind.setText(info.problem)
        else:
            self.kind.setStyleSheet("")
            extra = [f"needs the '{info.missing_extra}' extra: pip install 'advgui[{info.missing_extra}]'"] \
                if info.missing_extra else []
            self.kind.setText("\n".join([info.summary] + extra + list(info.warnings)))
        req = self.request()
        self.buttons.button(QDialogButtonBox.StandardButton.Open).setEnabled(req is not None)
        self.preview.setText(self._preview(req) if req is not None else self._missing())

    def _missing(self) -> str:
        info = self.info
        if self.encrypted:
            return "Type the passphrase of the encrypted file."
        if info is not None and info.problem:
            return "This file cannot be opened (see above)."
        if info is not None and info.missing_extra:
            return f"Install the '{info.missing_extra}' extra first: pip install 'advgui[{info.missing_extra}]'"
        if self.needs("trust") and not self.trust.isChecked():
            return "Tick the box above to open a file that runs code, or choose another file."
        if info is None and not self.download.isChecked():
            return "Choose a weights file, or tick the download box to fetch torchvision's pretrained weights."
        return "Choose a file."

    def _preview(self, req: ModelRequest) -> str:
        info = self.info
        lines = [f"Will load: {req.describe()}"]
        if info is not None:
            bits = []
            if info.num_classes:
                bits.append(f"{info.num_classes} classes" + (" with names" if info.class_names else ""))
            if info.input_size:
                bits.append(f"input {info.channels or '?'}×{info.input_size[0]}×{info.input_size[1]}")
            if info.white_box is False:
                bits.append("black-box only (no gradients): score-based attacks such as Square")
            if bits:
                lines.append(" · ".join(bits))
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
        info = self.info
        if self.encrypted:
            if not self.passphrase.text():
                return None
            return replace(base, spec=self.file.text(), passphrase=self.passphrase.text())
        if info is None:
            arch = self.arch.currentText().strip()
            if not arch or not self.download.isChecked():
                return None
            return replace(base, spec=arch if ":" in arch else f"torchvision:{arch}", allow_download=True)
        if info.problem or info.missing_extra or (self.needs("trust") and not self.trust.isChecked()):
            return None
        if self.needs("arch"):
            arch = self.arch.currentText().strip()
            if not arch:
                return None
            return replace(base, spec=arch if ":" in arch else f"torchvision:{arch}", weights=info.path)
        kw = dict(info.load_kwargs)
        req = replace(base, spec=info.spec or info.path, weights=str(kw.get("weights") or ""),
                      trust_code=self.needs("trust") and self.trust.isChecked())
        if self.needs("input_size"):
            req = replace(req, input_size=int(self.size.value()))
        return req

    def accept(self) -> None:
        req = self.request()
        if req is None:
            return
        self.s.load_model(req)
        super().accept()
