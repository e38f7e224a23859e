"""Every registered attack runs from the panel; comparison PNG; presentation mode; generic parameters."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from .conftest import run_and_wait, set_attack


def test_every_registered_attack_runs(qtbot, window, tmp_path):
    w = window
    ap = w.attack_panel
    for name, cls in ap.registry.items():
        ap.attack.setCurrentIndex(ap.attack.findData(name))
        fields = {f.name for f in dataclasses.fields(cls)}
        if "generator" in fields:   # advgan: an untrained generator for the demo's 28×28 digits will do
            from advgui.core.gan import GeneratorSpec, build_generator, save_generator
            path = tmp_path / "G.safetensors"
            save_generator(build_generator(GeneratorSpec(1, (28, 28), 0.2, width=4, blocks=0)), path)
            ap.extra["generator"][0].setText(str(path))
        # parameters the attack does not take are hidden, the ones it takes are shown
        assert ap.form.isRowVisible(ap.restarts) == ("restarts" in fields)
        assert ap.form.isRowVisible(ap.steps) == ("steps" in fields)
        assert ap.form.isRowVisible(ap.decay) == ("decay" in fields)
        assert ap.targeted.isEnabled() == bool(getattr(cls, "supports_targeted", True))
        params = ap.params()
        assert set(params) <= fields
        if "steps" in fields:
            ap.steps.setValue(5)
        if ap.eps.isEnabled():
            ap.eps.setValue(32 / 255)
        fin = run_and_wait(qtbot, w, 4)
        assert w.explore.history.n >= 2, name
        assert fin.steps_run >= 0
        assert not w.banner.isVisible(), w.banner.text


def test_generic_fields_of_a_new_attack(qtbot, window):
    from advgui.core.attacks.base import Attack

    @dataclasses.dataclass
    class Fancy(Attack):
        """A made-up attack with parameters the panel has never seen."""
        name: ClassVar[str] = "fancy"
        supports_targeted: ClassVar[bool] = False
        norms: ClassVar[tuple] = ("l2",)
        steps: int = 7
        temperature: float = 0.5
        budget: Optional[float] = None
        jitter: bool = True
        norm: str = "l2"
        eps: Optional[float] = None

    ap = window.attack_panel
    reg = dict(ap.registry)
    reg["fancy"] = Fancy
    ap.set_registry(reg)
    ap.attack.setCurrentIndex(ap.attack.findData("fancy"))
    p = ap.params()
    assert p["temperature"] == pytest.approx(0.5) and p["jitter"] is True and p["budget"] is None
    assert p["eps"] is None and p["norm"] == "l2" and p["steps"] == 7
    assert not ap.targeted.isEnabled() and ap.target_class() is None
    ap.extra["temperature"][0].setValue(1.25)
    ap.eps_bounded.setChecked(True)
    ap.eps.setValue(0.5)
    p = ap.params()
    assert p["temperature"] == pytest.approx(1.25) and p["eps"] == pytest.approx(0.5)
    ap.attack.setCurrentIndex(ap.attack.findData("pgd"))
    assert not ap.form.isRowVisible(ap.extra["temperature"][0])
    assert "temperature" not in ap.params()


def test_eps_editor_shows_both_units(window):
    ed = window.attack_panel.eps
    ed.setValue(8 / 255)
    assert ed.b255.value() == pytest.approx(8.0) and ed.unit.value() == pytest.approx(0.0314, abs=1e-4)
    ed.b255.setValue(4)
    assert ed.value() == pytest.approx(4 / 255)
    ed.unit.lineEdit().setText("16/255")
    ed.unit.interpretText()
    assert ed.value() == pytest.approx(16 / 255, abs=1e-4) and ed.b255.value() == pytest.approx(16.0, abs=0.02)


def test_save_comparison_png(qtbot, window, tmp_path):
    w = window
    set_attack(w, "pgd", eps=32 / 255, steps=10)
    run_and_wait(qtbot, w, 2)
    out = w.save_comparison_to(str(tmp_path / "slide.png"))
    img = QImage(str(out))
    assert not img.isNull() and img.width() == 1800 and img.height() > 900
    # the three panels are there: the original's centre pixel is the clean image's (nearest-neighbour scaled)
    st = w.explore.frame_state(w.explore._frame)
    assert st.adv is not None


def test_presentation_mode_runs_the_next_image(qtbot, window):
    w = window
    set_attack(w, "fgsm", eps=32 / 255)
    w.toggle_demo()
    d = w.demo
    assert d is not None and d.isVisible()
    with qtbot.waitSignal(w.explore.run_finished, timeout=30_000):
        qtbot.keyClick(d, Qt.Key.Key_Space)
    first = w.explore.clean.index
    assert d.state is not None and d.state.adv is not None
    assert d.pictures[1].pixmap() is not None and not d.pictures[1].pixmap().isNull()
    qtbot.waitUntil(lambda: not w.explore.worker.isRunning())
    with qtbot.waitSignal(w.explore.run_finished, timeout=30_000):
        qtbot.keyClick(d, Qt.Key.Key_Space)
    assert w.explore.clean.index == first + 1
    qtbot.keyClick(d, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: w.demo is None)


def test_history_keeps_movie_within_budget():
    from advgui.gui.history import StepHistory, StepRecord
    h = StepHistory(capacity=4, image_budget=10 * 28 * 28 * 4)
    for i in range(100):
        h.append(StepRecord(i, 100, 0, float(i), 0.5, 0.1, 1, np.arange(5), np.ones(5) / 5, i > 40, 0.1, 1.0,
                            0.0, image=np.full((1, 28, 28), i, np.float32)))
    assert h.n == 100 and h.first_flip == 41 and h.capacity >= 100
    assert len(h.frames) <= 10 and 99 in h.frames
    assert h.image(99)[0, 0, 0] == 99 and h.image(50)[0, 0, 0] <= 50
