"""The Evaluate tab, by clicking: the suite on the demo digits with its stage rows, headline, flags and card; a
fooled image into Explore; Save results; cancel in the middle of a stage; the flag of a softmax-output model."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

# the quick suite's kinds of stage with a small budget, so the file stays fast
SMALL = [("apgd", {"steps": 10}), ("apgd-t", {"steps": 10, "n_targets": 2}), ("square", {"queries": 200})]
LEFT = Qt.MouseButton.LeftButton


def _tab(w):
    tab = w.tab["Evaluate"]
    w.tabs.setCurrentWidget(tab)
    return tab


def _evaluate(qtbot, w, tab, timeout=120_000):
    with qtbot.waitSignal(w.s.evaluate.finished, timeout=timeout) as fin:
        qtbot.mouseClick(tab.run_btn, LEFT)
    return fin.args[0]


def _stage_cells(tab):
    t = tab.table
    return [(t.item(i, 0).text(), t.cellWidget(i, 1).format(), t.item(i, 2).text()) for i in range(t.rowCount())]


def test_suite_on_demo_digits_shows_stages_number_flags_card(qtbot, window, tmp_path):
    w = window
    tab = _tab(w)
    w.s.evaluate.request.stages = SMALL            # the quick suite's stages, cheaper
    tab.max_images.setValue(20)
    tab.eps.setValue(0.1)
    res = _evaluate(qtbot, w, tab)
    rep = res.report
    assert rep.n == 20 and rep.eps == pytest.approx(0.1)
    cells = _stage_cells(tab)
    assert [c[0] for c in cells[:3]] == ["APGD-CE", "APGD-T", "Square"]
    assert all(c[1] in ("done", "skipped") for c in cells)
    assert all(c[0].startswith("check: ") for c in cells[3:])          # the sanity probes follow the stages
    assert cells[0][2].startswith(f"{100 * rep.stages[0].robust_accuracy:.1f}% (")
    lo, hi = rep.ci95
    head = tab.headline.text()
    assert head.startswith(f"Robust accuracy {100 * rep.robust_accuracy:.1f}%")
    assert f"95% interval {100 * lo:.1f}–{100 * hi:.1f}%" in head and f"clean {100 * rep.clean_accuracy:.1f}%" in head
    # 20 images are too few for a tight interval: the flag is on screen, with its code and its reason
    assert any("[few-images]" in t and "20 images" in t for t in tab.flag_texts()) and tab.flags.isVisible()
    card = tab.card_values()
    assert card["autoattack_acc"] == f"{100 * rep.robust_accuracy:.2f}" and card["name"] == "demo"
    assert card["advgui_complete"] == "yes" and card["eps"] == "0.1"
    # a fooled image opens in Explore: its stored adversarial image, re-checked
    assert tab.fooled.count() == len(res.fooled()) > 0 and tab.open_btn.isEnabled()
    with qtbot.waitSignal(w.s.evaluate.image_opened, timeout=30_000):
        qtbot.mouseClick(tab.open_btn, LEFT)
    assert w.tabs.currentWidget() is w.explore and w.s.explore.mode == "batch"
    assert w.explore.movie.label.full_text().startswith("suite result")
    # Save results… writes both files; saving again into the same folder asks first
    with qtbot.waitSignal(w.s.evaluate.saved, timeout=30_000):
        tab.save_to(str(tmp_path / "eval"))
    data = json.loads((tmp_path / "eval" / "robustness.json").read_text(encoding="utf-8"))
    assert data["suite"]["robust_accuracy"] == rep.robust_accuracy
    assert json.loads((tmp_path / "eval" / "card.json").read_text(encoding="utf-8"))["clean_acc"] == card["clean_acc"]
    tab.save_to(str(tmp_path / "eval"))
    assert tab._question.isVisible() and "already holds robustness.json and card.json" in tab._question.text()
    tab._question.close()


def test_cancel_mid_stage_keeps_finished_stages(qtbot, window):
    from advgui.session import ModelRequest
    w = window
    with qtbot.waitSignal(w.s.ready, timeout=60_000):
        w.s.load_model(ModelRequest(spec="demo-robust"))
    tab = _tab(w)
    tab.suite.setCurrentIndex(tab.suite.findData("standard"))
    tab.eps.setValue(0.1)
    qtbot.mouseClick(tab.run_btn, LEFT)
    assert not tab.run_btn.isEnabled() and tab.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: tab.table.rowCount() > 1 and tab.table.cellWidget(1, 1).format().startswith("running"),
                    timeout=120_000)
    with qtbot.waitSignal(w.s.evaluate.finished, timeout=30_000) as fin:
        qtbot.mouseClick(tab.cancel_btn, LEFT)
    rep = fin.args[0].report
    cells = _stage_cells(tab)
    assert cells[0][1] == "done" and cells[0][2].startswith(f"{100 * rep.stages[0].robust_accuracy:.1f}%")
    statuses = [c[1] for c in cells]
    assert "cancelled" in statuses and all(st == "cancelled" for st in statuses[statuses.index("cancelled"):])
    assert rep.cancelled and tab.headline.text().startswith("Robust accuracy ≤ ")
    assert tab.subline.text().startswith("INCOMPLETE") and "upper bound" in tab.subline.text()
    assert tab.card_values()["advgui_complete"] == "no" and tab.run_btn.isEnabled()


def test_a_softmax_model_gets_its_flag(qtbot, window, tmp_path):
    import torch
    from advgui.core.models import load_model
    from advgui.session import ModelRequest

    class Softmaxed(torch.nn.Module):
        """The demo network with its normalisation inside, returning probabilities instead of logits."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - 0.5) / 0.5).softmax(1)

    path = tmp_path / "softmax_demo.pt"
    torch.jit.script(Softmaxed(load_model("demo").net)).save(str(path))
    w = window
    with qtbot.waitSignal(w.s.ready, timeout=60_000):
        w.s.load_model(ModelRequest(spec=str(path), trust_code=True))   # TorchScript is code: trusted here
    tab = _tab(w)
    w.s.evaluate.request.stages = SMALL
    tab.max_images.setValue(10)
    tab.eps.setValue(0.1)
    res = _evaluate(qtbot, w, tab)
    assert "probabilities" in [x.code for x in res.report.warnings]
    texts = tab.flag_texts()
    assert any(t.startswith("⚠ The model returns probabilities, not logits [probabilities]") for t in texts)
    assert tab.flags_title.text().startswith("Sanity checks: ") and tab.flags.isVisible()
    assert "probabilities" in tab.card_values()["advgui_warnings"]


@pytest.mark.slow
def test_harden_compares_with_the_quick_suite(qtbot, window):
    w = window
    tab = w.tab["Harden"]
    w.tabs.setCurrentWidget(tab)
    assert tab.compare.currentData() == "curves"            # the FGSM + PGD curves stay the default
    tab.compare.setCurrentIndex(tab.compare.findData("quick"))
    tab.method.setCurrentIndex(tab.method.findData("fgsm-rs"))
    tab.epochs.setValue(1)
    tab.max_images.setValue(128)
    w.s.harden.request.eval_max = 30
    w.s.harden.request.val_steps = 3
    with qtbot.waitSignal(w.s.harden.finished, timeout=240_000) as fin:
        qtbot.mouseClick(tab.train_btn, LEFT)
    assert fin.args == [False] and w.s.harden.curves is None
    pair = w.s.harden.suite
    assert pair is not None and pair.suite == "quick" and pair.n == 30
    text = tab.summary.text()
    assert "Quick suite at ε 0.1 on 30 images" in text and text.count("95% interval") == 2
    assert f"trained {100 * pair.trained.robust:.1f}%" in text
    assert tab.plots.curve_lengths()["start"] == tab.plots.curve_lengths()["trained"] == 1
    assert tab.plots.suite_bars.isVisible() and tab.plots.legend_texts()[0].startswith("demo (start): ")
    assert tab.progress.format().startswith("finished")


def test_report_from_the_evaluate_tab(qtbot, window, tmp_path, monkeypatch):
    """Export report… in the Evaluate tab: enabled once the results are saved, writes the HTML with the
    evaluation's headline number."""
    from advgui.session.evaluate import EvaluateRequest
    w = window
    tab = w.tab["Evaluate"]
    w.tabs.setCurrentWidget(tab)
    assert not tab.report.button.isEnabled() and "Save the results first" in tab.report.button.toolTip()
    ev = w.s.evaluate
    with qtbot.waitSignal(ev.finished, timeout=240_000) as fin:
        ev.run(EvaluateRequest(suite="quick", eps=0.1, max_images=8, seed=0,
                               stages=[("apgd", {"steps": 3})]))
    with qtbot.waitSignal(ev.saved, timeout=30_000):
        ev.save(str(tmp_path / "run"))
    assert tab.report.button.isEnabled()
    out = tmp_path / "eval-report.html"
    monkeypatch.setattr(tab.report, "choose_file", lambda: (str(out), "HTML report (*.html)"))
    with qtbot.waitSignal(w.s.report.finished, timeout=120_000):
        qtbot.mouseClick(tab.report.button, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    html = out.read_text(encoding="utf-8")
    acc = fin.args[0].report.robust_accuracy
    assert f"{100 * acc:.1f}%" in html
