"""Compare two models: the same attack, same settings and seed, on the same image, against model B."""
from __future__ import annotations

import numpy as np
import torch

from .conftest import run_and_wait, set_attack


def test_compare_row_repeats_the_attack_on_b(qtbot, window):
    w = window
    c = w.s.compare
    with qtbot.waitSignal(c.record_changed, timeout=60_000):
        w.act_compare.trigger()
    row = w.explore.compare
    assert row.isVisible() and c.model_b.request.spec == "demo-robust"
    assert w.explore.views.orig.title.full_text().startswith("A: demo")
    assert row.views.orig.title.full_text().startswith("B: demo-robust")
    assert w.explore.plots.caption.full_text() == "Curves and bars: model A (demo)"
    set_attack(w, "pgd", eps=0.1, steps=10)
    # an image where the two models differ under this attack
    with qtbot.waitSignal(c.record_changed, timeout=60_000, check_params_cb=lambda r: r.final is not None):
        run_and_wait(qtbot, w, 0)
    rec = c.record
    a_cap, b_cap = row.captions()
    assert b_cap.startswith(c.name(rec.final.adv_pred))
    ref = __import__("advgui.core.attacks", fromlist=["make_attack"]).make_attack("pgd", eps=0.1, steps=10).run(
        c.model_b.classifier, torch.from_numpy(rec.clean.image)[None], torch.tensor([rec.clean.label]),
        seed=w.s.attack.seed)
    assert int(ref.adv_pred[0]) == rec.final.adv_pred
    np.testing.assert_allclose(row.views.adv.item.image, rec.adv[0] * 255, atol=1e-4)
    # B's rows are as tall as A's (the same stretch), and its bars show three classes
    assert abs(row.views.orig.glw.height() - w.explore.views.orig.glw.height()) <= 40
    assert row.views.orig_bars.rows == 3
    w.act_compare.trigger()
    assert not row.isVisible() and w.explore.views.orig.title.full_text() == "Original"
