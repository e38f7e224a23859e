"""The Attack panel: a form over ``session.attack`` built from the chosen attack's dataclass fields, target
and seed, and the Run / Pause / Step / Stop buttons of the Explore run. Every widget writes straight into the
session's attack settings (which remember each attack's own values); the panel only redraws from them.
"""
from __future__ import annotations

from typing import Any, Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from advgui.session import Session
from advgui.session.attack_settings import NORM_NAMES, FieldSpec

from .widgets import EpsEditor, PanelScroll, plain, plain_tip


class AttackPanel(QWidget):
    def __init__(self, session: Session, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.s = session
        self.a = session.attack
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 6)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        lay.setContentsMargins(6, 6, 6, 6)
        outer.addWidget(PanelScroll(inner), 1)    # the form scrolls on a short screen; the buttons stay put
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form = form
        self.attack = QComboBox()
        self.attack.addItem("loading…")
        self.attack.setEnabled(False)
        form.addRow("Attack", self.attack)
        self.about = plain(QLabel(""))
        self.about.setWordWrap(True)
        self.about.setStyleSheet("color: palette(placeholder-text);")
        form.addRow(self.about)
        self.params_form = QFormLayout()
        self.params_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow(self.params_form)
        self.targeted = QCheckBox("targeted")
        self.target = QComboBox()
        self.target.setEditable(True)
        self.target.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.target.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.target.setMinimumContentsLength(6)
        trow = QWidget()
        tl = QHBoxLayout(trow)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.targeted)
        tl.addWidget(self.target, 1)
        form.addRow("Target", trow)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2 ** 31 - 1)
        self.seed.setToolTip("Seed of the random start; the same seed gives the same result.")
        form.addRow("Seed", self.seed)
        lay.addLayout(form)
        self.run_btn = QPushButton("▶ Run")
        self.run_btn.setToolTip("Attack the selected image (F5)")
        f = self.run_btn.font()
        f.setBold(True)
        self.run_btn.setFont(f)
        self.run_btn.setMinimumHeight(int(self.fontMetrics().height() * 2.2))
        self.run_btn.setEnabled(False)
        self.pause_btn = QPushButton("❚❚ Pause")
        self.pause_btn.setMinimumWidth(10)
        self.pause_btn.setToolTip("Pause / resume (F6)")
        self.step_btn = QPushButton("Step")
        self.step_btn.setMinimumWidth(10)
        self.step_btn.setToolTip("Run exactly one more step, then pause (F7)")
        self.stop_btn = QPushButton("■ Stop")
        self.stop_btn.setMinimumWidth(10)
        self.stop_btn.setToolTip("Stop and keep the best result so far (Esc)")
        btns = QHBoxLayout()
        btns.setContentsMargins(6, 0, 6, 0)
        for b in (self.pause_btn, self.step_btn, self.stop_btn):
            btns.addWidget(b)
        lay.addStretch(1)
        run_row = QHBoxLayout()
        run_row.setContentsMargins(6, 0, 6, 0)
        run_row.addWidget(self.run_btn)
        outer.addLayout(run_row)
        outer.addLayout(btns)
        self.widgets: dict[str, QWidget] = {}
        self._building = False
        ex = session.explore
        self.run_btn.clicked.connect(lambda: ex.run())
        self.pause_btn.clicked.connect(ex.toggle_pause)
        self.step_btn.clicked.connect(ex.step)
        self.stop_btn.clicked.connect(ex.stop)
        self.attack.activated.connect(lambda i: self.a.select(self.attack.itemData(i)))
        self.targeted.toggled.connect(lambda on: self._user(lambda: self.a.set_target(on, self.target.currentIndex())))
        self.target.activated.connect(lambda i: self._user(lambda: self.a.set_target(self.targeted.isChecked(), i)))
        self.seed.valueChanged.connect(lambda v: self._user(lambda: self.a.set_seed(v)))
        self.a.changed.connect(self.refresh)
        session.model_changed.connect(self._model)
        for sig in (ex.run_started, ex.run_finished, ex.run_failed, ex.paused_changed):
            sig.connect(lambda *_a: self.update_buttons())
        self.update_buttons()

    def _user(self, fn: Any) -> None:
        if not self._building:
            fn()

    # -- from the session -----------------------------------------------------------------------------------------
    def _model(self, m: Any) -> None:
        self._building = True
        cur = self.target.currentIndex()
        self.target.clear()
        self.target.addItems([f"{i}: {n}" if str(n) != str(i) else str(n) for i, n in enumerate(m.class_names)])
        for i, n in enumerate(m.class_names):
            self.target.setItemData(i, plain_tip(str(n)), Qt.ItemDataRole.ToolTipRole)
        self.target.setCurrentIndex(min(max(0, self.a.target), self.target.count() - 1) if cur < 0 else
                                    min(cur, self.target.count() - 1))
        self._building = False
        self.refresh()

    def refresh(self) -> None:
        """Redraw the form from the session's attack settings."""
        a = self.a
        if not a.registry:
            return
        self._building = True
        try:
            if self.attack.count() != len(a.registry) or self.attack.itemData(0) not in a.registry:
                self.attack.clear()
                for name, cls in a.registry.items():
                    self.attack.addItem(a.title(name), name)
                    doc = (cls.__doc__ or "").strip().splitlines()
                    self.attack.setItemData(self.attack.count() - 1, doc[0] if doc else "",
                                            Qt.ItemDataRole.ToolTipRole)
                self.attack.setEnabled(True)
            self.attack.setCurrentIndex(max(0, self.attack.findData(a.name)))
            doc = (a.cls.__doc__ or "").strip().splitlines() if a.cls is not None else []
            self.about.setText(doc[0] if doc else "")
            specs = a.fields()
            if [f.name for f in specs] != list(self.widgets) or getattr(self, "_built_for", None) != a.name:
                self._build(specs)
            for f in specs:
                self._show_value(f, a.value(f.name))
            self.targeted.setEnabled(a.supports_targeted)
            self.targeted.setChecked(a.targeted)
            self.target.setEnabled(a.targeted)
            if 0 <= a.target < self.target.count():
                self.target.setCurrentIndex(a.target)
            self.seed.setValue(a.seed)
            self.form.setRowVisible(self.seed, any(f.name in ("random_start", "restarts") for f in specs))
        finally:
            self._building = False
        self.update_buttons()

    def _build(self, specs: list[FieldSpec]) -> None:
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self.widgets = {}
        self._built_for = self.a.name
        for f in specs:
            w = self._editor(f)
            w.setToolTip(f.tooltip)
            self.params_form.addRow(f.label, w)
            self.widgets[f.name] = w

    def _editor(self, f: FieldSpec) -> QWidget:
        set_ = lambda v, k=f.name: self._user(lambda: self.a.set_value(k, v))  # noqa: E731
        if f.name == "eps":
            box = QWidget()
            bl = QHBoxLayout(box)
            bl.setContentsMargins(0, 0, 0, 0)
            ed = EpsEditor()
            ed.valueChanged.connect(set_)
            bl.addWidget(ed, 1)
            bound = QCheckBox("limit" if not f.auto else "set")
            bound.setToolTip("Minimal-norm attacks find the smallest perturbation; tick to also bound it by ε"
                             if not f.auto else f"Unticked: {f.auto}; ticked: this ε (it must be {f.auto})")
            bound.toggled.connect(lambda on: self._user(lambda: self.a.set_eps_bounded(on)))
            bound.setVisible(f.optional)
            bl.addWidget(bound)
            box.editor, box.bound = ed, bound  # type: ignore[attr-defined]
            return box
        if f.kind == "file":
            from .file_field import FileField
            return FileField(f, lambda p, k=f.name: self._user(lambda: self.s.set_attack_file(k, p)))
        if f.kind == "choice":
            w = QComboBox()
            for c in f.choices:
                w.addItem(f.auto or "auto" if c is None else NORM_NAMES.get(c, c), c)
            w.setEnabled(len(f.choices) > 1)
            w.activated.connect(lambda i, w=w: set_(w.itemData(i)))
            return w
        if f.kind == "bool":
            w = QCheckBox()
            w.toggled.connect(set_)
            return w
        if f.kind == "int":
            w = QSpinBox()
            w.setRange(0 if f.optional else (1 if f.name in ("steps", "restarts", "binary_steps") else 0), 1_000_000)
            if f.optional:
                w.setSpecialValueText("auto")
            w.valueChanged.connect(lambda v, w=w: set_(None if f.optional and v == w.minimum() else v))
            return w
        if f.kind == "float":
            w = QDoubleSpinBox()
            w.setDecimals(5 if f.name != "step_size" else 4)
            w.setRange(0.0, 1e6)
            w.setSingleStep(0.5 / 255 if f.name == "step_size" else 0.01 if f.default is None or abs(f.default) < 1
                            else 1.0)
            if f.optional:
                w.setSpecialValueText("auto")
            w.valueChanged.connect(lambda v, w=w: set_(None if f.optional and v == w.minimum() else v))
            return w
        w = QLineEdit()
        w.editingFinished.connect(lambda w=w: set_(w.text()))
        return w

    def _show_value(self, f: FieldSpec, v: Any) -> None:
        w = self.widgets.get(f.name)
        if w is None:
            return
        if f.name == "eps":
            bounded = self.a.eps_bounded
            w.bound.setChecked(bounded)  # type: ignore[attr-defined]
            w.editor.setEnabled(bounded)  # type: ignore[attr-defined]
            shown = self.a.eps
            if not bounded and f.auto:       # unbounded means "the file's own ε": show that one
                own = self.a.resolved_params().get("eps")
                shown = own if isinstance(own, (int, float)) else shown
            if abs(w.editor.value() - shown) > 1e-9:  # type: ignore[attr-defined]
                w.editor.setValue(shown)  # type: ignore[attr-defined]
        elif f.kind == "file":
            info = self.a.file_description(f.name)
            w.show_value("" if v is None else str(v), *info)  # type: ignore[attr-defined]
        elif isinstance(w, QComboBox):
            w.setCurrentIndex(max(0, w.findData(v)))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(v))
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.setValue(w.minimum() if v is None else v)
        elif isinstance(w, QLineEdit):
            w.setText("" if v is None else str(v))

    def update_buttons(self) -> None:
        ex = self.s.explore
        running = ex.running and ex.final is None
        paused = ex.paused
        self.run_btn.setEnabled(bool(self.a.registry) and self.s.model is not None)
        self.pause_btn.setEnabled(running)
        self.step_btn.setEnabled(running and paused)
        self.stop_btn.setEnabled(running)
        self.pause_btn.setText("▶ Resume" if paused else "❚❚ Pause")

    def set_eps(self, v: float) -> None:
        """Type ε into the editor (as a user would)."""
        w = self.widgets["eps"]
        w.editor.b255.setValue(v * 255)  # type: ignore[attr-defined]
