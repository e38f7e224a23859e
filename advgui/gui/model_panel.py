"""The Model panel: what is loaded (family, classes, input, normalisation, white- or black-box), quick choices
(the demo models, a torchvision architecture), Open model… (the dialog that recognises a file and asks only
for what is missing), the class-names file and the device. A view of the session."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

from advgui.session import ModelRequest, Session

from .widgets import ElidedLabel, PathEdit, plain, plain_tip

LABEL_FILTER = "Class names (*.txt *.json);;All files (*)"
QUICK = [("demo", "demo — digits CNN (built in)"), ("demo-robust", "demo-robust — adversarially trained demo"),
         ("torchvision:resnet18", "torchvision ResNet-18 …"), ("torchvision:resnet50", "torchvision ResNet-50 …"),
         ("torchvision:mobilenet_v3_small", "torchvision MobileNet V3 small …"),
         ("torchvision:efficientnet_b0", "torchvision EfficientNet-B0 …"),
         ("torchvision:vit_b_16", "torchvision ViT-B/16 …")]


class ModelPanel(QWidget):
    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        form = QFormLayout(self)
        form.setContentsMargins(6, 6, 6, 6)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.name = ElidedLabel("Loading…")
        f = self.name.font()
        f.setBold(True)
        self.name.setFont(f)
        form.addRow(self.name)
        self.summary = plain(QLabel(""))
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.summary)
        self.quick = QComboBox()
        self.quick.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.quick.setMinimumContentsLength(6)
        self.quick.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.quick.addItem("choose…", "")
        for spec, text in QUICK:
            self.quick.addItem(text, spec)
        self.open_btn = QPushButton("Open…")
        self.open_btn.setToolTip("Open a model file: it is recognised, and only what is missing is asked (Ctrl+O)")
        row = QHBoxLayout()
        row.setSpacing(4)
        row.addWidget(self.quick, 1)
        row.addWidget(self.open_btn)
        form.addRow("Model", row)
        self.labels = PathEdit("class names (.txt / .json), optional", LABEL_FILTER)
        form.addRow("Classes", self.labels)
        self.device = QComboBox()
        for name, text in (("auto", "auto"), ("cpu", "CPU"), ("cuda", "CUDA"), ("mps", "MPS")):
            self.device.addItem(text, name)
        form.addRow("Device", self.device)
        self.quick.activated.connect(self._quick)
        self.open_btn.clicked.connect(lambda: self.open_dialog())
        self.labels.chosen.connect(lambda p: session.reload_with(labels=p))
        self.device.activated.connect(lambda i: session.reload_with(device=self.device.itemData(i)))
        session.model_loading.connect(self._loading)
        session.model_changed.connect(self._loaded)
        session.model_failed.connect(self._failed)

    def _quick(self, i: int) -> None:
        spec = self.quick.itemData(i)
        self.quick.setCurrentIndex(0)
        if not spec:
            return
        if spec.startswith("torchvision:"):
            self.open_dialog(arch=spec)        # asks for weights; never downloads without asking
        else:
            self.s.load_model(ModelRequest(spec=spec, labels=self.labels.text(),
                                           device=self.device.currentData() or "auto"))

    def open_dialog(self, path: str = "", arch: str = "") -> Any:
        from .model_dialog import ModelDialog
        dlg = ModelDialog(self.s, self, path=path, arch=arch)
        dlg.open()
        return dlg

    def _loading(self, req: ModelRequest) -> None:
        self.name.setText(f"Loading {req.describe()}…")
        self.open_btn.setEnabled(False)

    def _loaded(self, m: Any) -> None:
        s = m.summary
        self.open_btn.setEnabled(True)
        self.name.setText(Path(str(s["spec"])).name if "/" in str(s["spec"]) else str(s["spec"]))
        lines = [f"{s['classes']} classes · input {s['input']} · {int(s['parameters']):,} parameters"]
        fam = s.get("family")
        box = "white-box (gradients)" if s.get("white_box", True) else \
            f"black-box only ({s.get('black_box_reason') or 'no gradients'})"
        lines.append(" · ".join(str(p) for p in (fam, box, s["device"]) if p))
        mean, std = s.get("mean"), s.get("std")
        if mean is not None:
            lines.append("mean " + ", ".join(f"{v:.3g}" for v in mean) + " · std " +
                         ", ".join(f"{v:.3g}" for v in std))
        check = s.get("onnx_check")
        if isinstance(check, dict) and check:
            diff = check.get("max_abs_diff", check.get("max_diff"))
            lines.append("ONNX check against onnxruntime: largest difference "
                         + (f"{diff:.2g}" if isinstance(diff, (int, float)) else str(diff)))
        lines += [str(n) for n in s.get("notes") or []]
        self.summary.setText("\n".join(lines))
        self.summary.setToolTip(plain_tip(f"source: {m.classifier.source}\nloaded in {m.seconds:.2f} s"))
        self.labels.setText(m.request.labels)
        i = self.device.findData(m.request.device)
        self.device.setCurrentIndex(max(0, i))
        model = self.device.model()
        for k in range(self.device.count()):
            name = self.device.itemData(k)
            ok = name == "auto" or m.devices.get(name, False)
            item = model.item(k)
            if item is not None:
                item.setEnabled(ok)
                item.setToolTip("" if ok else f"{name.upper()} is not available on this machine")

    def _failed(self, msg: Any) -> None:
        self.open_btn.setEnabled(True)
        if self.s.model is not None:
            self._loaded(self.s.model)
