"""The Batch tab sends a run to a Ray cluster address (issue 16): the same progress, table and summary as a run
in this process. Uses the shared local Ray instance (``ray_cluster`` in tests/conftest.py)."""
from __future__ import annotations

from PySide6.QtCore import Qt

from .conftest import set_attack


def test_batch_tab_runs_on_a_cluster_address(qtbot, window, ray_cluster):
    w = window
    tab = w.tab["Batch"]
    set_attack(w, "pgd", eps=24 / 255, steps=5)
    tab.batch_size.setValue(16)
    tab.cluster.clear()
    qtbot.keyClicks(tab.cluster, "local:2")
    with qtbot.waitSignal(w.s.batch.finished, timeout=180_000) as blocker:
        qtbot.mouseClick(tab.run_btn, Qt.MouseButton.LeftButton)
        assert not tab.cluster.isEnabled() and tab.stop_btn.isEnabled()
    summary, cancelled = blocker.args
    assert not cancelled and w.s.batch.cluster == "local:2"
    assert tab.row_count() == 50 and tab.progress.value() == tab.progress.maximum()
    assert tab.progress.format() == "50 / 50 images"
    from advgui.core.attacks import make_attack
    from advgui.core.runner import SetSummary, attack_batches
    req = w.s.attack.request()
    ref = SetSummary()
    for b in attack_batches(w.s.model.classifier, w.s.images.image_set, make_attack(req.attack, **req.params),
                            batch_size=16, seed=req.seed):
        ref.add(b.result)
    for key in ("n", "clean_correct", "adv_correct", "success", "success8"):
        assert getattr(summary, key) == getattr(ref, key), key
    assert sum(tab.model.value(r, 4) for r in range(50)) == ref.success
    assert f"{100 * ref.success_rate:.1f}%" in tab.summary.text()
    assert tab.cluster.isEnabled() and tab.export_btn.isEnabled()
    # a row opens in the Explore views as after a run in this process
    idx = tab.proxy.index(3, 0)
    with qtbot.waitSignal(w.s.batch.row_opened, timeout=30_000):
        qtbot.mouseClick(tab.table.viewport(), Qt.MouseButton.LeftButton, pos=tab.table.visualRect(idx).center())
    assert w.explore.plots.curve_lengths()[0] > 0
