"""Every registered attack runs from the panel; generic parameters; ε in both units; the comparison PNG;
presentation mode; the movie's memory budget."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from .conftest import run_and_wait, set_attack


def test_every_registered_attack_runs_from_the_panel(qtbot, window, tmp_path):
    from advgui.core.gan import GeneratorSpec, build_generator, save_generator
    w = window
    ap = w.attack_panel
    # a tiny (untrained) generator file for AdvGAN: the attack only needs one that fits the model
    gen = save_generator(build_generator(GeneratorSpec(1, (28, 28), 32 / 255, width=4, blocks=0)),
                         tmp_path / "G.safetensors")["weights"]
    for name, cls in w.s.attack.registry.items():
        set_attack(w, name, eps=32 / 255, steps=5)
        if getattr(cls, "needs_generator", False):      # its file field: typed in, as a user would
            field = ap.widgets["generator"]
            qtbot.keyClicks(field.path.edit, str(gen))
            qtbot.keyClick(field.path.edit, Qt.Key.Key_Return)
            assert w.s.attack.value("generator") == str(gen) and field.ok, field.info.full_text()
        fields = {f.name for f in dataclasses.fields(cls)}
        # the form shows exactly the attack's own parameters
        assert set(ap.widgets) <= fields and ("steps" in ap.widgets) == ("steps" in fields)
        assert ap.targeted.isEnabled() == bool(getattr(cls, "supports_targeted", True))
        fin = run_and_wait(qtbot, w, 4)
        assert w.s.explore.history.n >= 2, name
        assert fin.steps_run >= 1 and w.s.explore.history.final_index == w.s.explore.history.n - 1, name
        assert not w.banner.isVisible(), w.banner.text
        # the curves and the movie count what the attack's steps count: queries for Square
        ex, plots = w.s.explore, w.explore.plots
        queries = getattr(cls, "step_unit", "steps") == "queries"
        assert plots.loss_plot.getAxis("bottom").labelText == ("queries" if queries else "step"), name
        x, _y = plots.loss_curve.getData()
        assert list(x) == (list(ex.history.step[:ex.history.n]) if queries else list(range(ex.history.n))), name
        assert ex.frame_text(0).startswith("query 1/" if queries else "step "), (name, ex.frame_text(0))


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

        def _attack(self, ctx):  # pragma: no cover - never run here
            yield from ()
            return ctx.clean

    a, ap = window.s.attack, window.attack_panel
    a.set_registry(dict(a.registry, fancy=Fancy))
    ap.attack.setCurrentIndex(ap.attack.findData("fancy"))
    ap.attack.activated.emit(ap.attack.currentIndex())
    assert ap.attack.currentText() == "FANCY"
    p = a.params()
    assert p["temperature"] == pytest.approx(0.5) and p["jitter"] is True and p["budget"] is None
    assert p["eps"] is None and p["norm"] == "l2" and p["steps"] == 7
    assert not ap.targeted.isEnabled() and a.request().target is None
    ap.widgets["temperature"].setValue(1.25)
    ap.widgets["eps"].bound.setChecked(True)
    ap.set_eps(0.5)
    p = a.params()
    assert p["temperature"] == pytest.approx(1.25) and p["eps"] == pytest.approx(0.5)
    set_attack(window, "pgd")
    assert "temperature" not in ap.widgets and "temperature" not in a.params()
    set_attack(window, "fancy")
    assert ap.widgets["temperature"].value() == pytest.approx(1.25)     # each attack keeps its own values


def test_eps_editor_shows_both_units(window):
    ed = window.attack_panel.widgets["eps"].editor
    ed.setValue(8 / 255)
    assert ed.b255.value() == pytest.approx(8.0) and ed.unit.value() == pytest.approx(0.0314, abs=1e-4)
    ed.b255.setValue(4)
    assert window.s.attack.eps == pytest.approx(4 / 255)
    ed.unit.lineEdit().setText("16/255")
    ed.unit.interpretText()
    assert window.s.attack.eps == pytest.approx(16 / 255, abs=1e-4) and ed.b255.value() == pytest.approx(16.0, abs=0.02)


def test_save_comparison_png(qtbot, window, tmp_path):
    w = window
    set_attack(w, "pgd", eps=32 / 255, steps=10)
    run_and_wait(qtbot, w, 2)
    out = w.save_comparison_to(str(tmp_path / "slide.png"))
    img = QImage(str(out))
    assert not img.isNull() and img.width() == 1800 and img.height() > 900
    # the original panel shows the clean image: its centre pixel is the clean image's centre pixel
    from advgui.gui.comparison import PANEL, WIDTH
    clean = w.s.explore.clean.image[0]
    gap = (WIDTH - 3 * PANEL) / 4
    c = img.pixelColor(int(gap + PANEL / 2), int(120 + PANEL / 2))
    h, wd = clean.shape
    expect = round(float(clean[h // 2, wd // 2]) * 255)
    assert abs(c.red() - expect) <= 2 and c.red() == c.green() == c.blue()


def test_presentation_mode_runs_the_next_image(qtbot, window):
    w = window
    set_attack(w, "fgsm", eps=32 / 255)
    w.explore.views.amp.setValue(1)
    w.act_present.trigger()
    d = w.presentation
    assert d is not None and d.isVisible() and d.heads[2].full_text() == "The change"   # not "amplified" at ×1
    with qtbot.waitSignal(w.s.explore.run_finished, timeout=30_000):
        qtbot.keyClick(d, Qt.Key.Key_Space)
    first = w.s.explore.clean.index
    qtbot.waitUntil(lambda: d.state is not None and d.state.adv is not None)
    assert d.pictures[1].pixmap() is not None and not d.pictures[1].pixmap().isNull()
    qtbot.waitUntil(lambda: w.s.explore.job is None)
    with qtbot.waitSignal(w.s.explore.run_finished, timeout=30_000):
        qtbot.keyClick(d, Qt.Key.Key_Space)
    assert w.s.explore.clean.index == first + 1
    w.explore.views.amp.setValue(4)
    qtbot.waitUntil(lambda: d.heads[2].full_text() == "The change (amplified ×4)")
    qtbot.keyClick(d, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: w.presentation is None)


def test_history_keeps_movie_within_budget():
    from advgui.session.records import StepHistory, StepRecord
    h = StepHistory(capacity=4, image_budget=10 * 28 * 28 * 4)
    for i in range(100):
        h.append(StepRecord(i, 100, 0, float(i), 0.5, 0.1, 1, np.arange(5), np.ones(5) / 5, i > 40, 0.1, 1.0,
                            0.0, image=np.full((1, 28, 28), i, np.float32)))
    assert h.n == 100 and h.first_flip == 41 and h.capacity >= 100
    assert len(h.frames) <= 10 and 99 in h.frames
    assert h.image(99)[0, 0, 0] == 99 and h.image(50)[0, 0, 0] <= 50
