"""The Evaluate part of the session (no widgets): the quick suite on the open model and images, its stage rows
and progress, cancel keeping finished stages, saving, and a fooled image shown in Explore."""
from __future__ import annotations

import json

import numpy as np
import pytest

from advgui.session.evaluate import EvaluateRequest

from .conftest import pump



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as the window leaves the GUI a core: on a busy 2-core machine two OpenMP threads made
    these small stages 15× slower."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# the quick suite's three kinds of stage with a small budget, so the file stays fast
SMALL = [("apgd", {"steps": 10}), ("apgd-t", {"steps": 10, "n_targets": 2}), ("square", {"queries": 200})]


def _run(s, req, timeout=120):
    done = []
    s.evaluate.finished.connect(done.append)
    assert s.evaluate.run(req)
    pump(s, lambda: done, timeout=timeout)
    return done[0]


def test_quick_suite_on_the_open_images_matches_the_core(ready_session, tmp_path):
    s = ready_session
    ev = s.evaluate
    prepared, rows_seen, progress = [], [], []
    ev.prepared.connect(prepared.append)
    ev.stage_changed.connect(lambda r: rows_seen.append((r.index, r.status, r.robust)))
    ev.progress.connect(progress.append)
    res = _run(s, EvaluateRequest(eps=0.1, max_images=20, seed=3, stages=SMALL))
    rep = res.report
    # the images: a fixed random 20 of the 50 demo digits, labelled by their folders
    assert prepared[0].n == 20 and prepared[0].total == 50 and prepared[0].label_source == "labels"
    assert [r.label for r in prepared[0].stages] == ["APGD-CE", "APGD-T", "Square"]
    assert rep.n == 20 and len(set(res.indices)) == 20 and rep.label_source == "labels"
    assert [s.images.image_set.items[i].rel for i in res.indices] == rep.paths
    # every stage ran (or had nothing left to attack); robust counts never rise from stage to stage
    stages = [r for r in ev.rows if not r.probe]
    assert [r.status for r in stages] in (["done"] * 3, ["done", "done", "skipped"], ["done", "skipped", "skipped"])
    robust = [r.robust for r in stages]
    assert robust == sorted(robust, reverse=True) and stages[0].forward_images > 0 and stages[0].seconds > 0
    assert rep.robust_accuracy <= robust[-1] / 20 <= rep.clean_accuracy
    lo, hi = rep.ci95
    assert lo <= rep.robust_accuracy <= hi
    # progress: stage rows went from running to their end; the overall fraction reached 1
    assert any(st == "running" for _i, st, _r in rows_seen) and progress[-1].overall == 1.0
    assert any(p.kind == "step" and 0 < p.fraction < 1 for p in progress)
    # the session delivered what the core computes on the same images with the same seed
    import torch
    from advgui.core.suite import run_suite
    clf = s.model.classifier
    x = torch.stack([s.images.image_set.load(i, clf.preprocess) for i in res.indices])
    y = torch.tensor([s.images.image_set.items[i].label for i in res.indices])
    attacks, _labels = EvaluateRequest(eps=0.1, stages=SMALL).attacks()
    ref = run_suite(clf, x, y, attacks=attacks, eps=0.1, seed=3, keep_adv=False)
    assert np.array_equal(ref.robust, rep.robust) and ref.clean_accuracy == rep.clean_accuracy
    # the public API: the last result, saved to a folder that other features can find
    assert ev.latest() is res and ev.last_folder() is None
    saved = []
    ev.saved.connect(saved.append)
    ev.save(str(tmp_path / "eval"))
    pump(s, lambda: saved)
    data = json.loads(saved[0]["json"].read_text(encoding="utf-8"))
    card = json.loads(saved[0]["card"].read_text(encoding="utf-8"))
    assert data["suite"]["name"] == "custom" and data["suite"]["n"] == 20 and len(data["per_image"]) == 20
    assert data["model"] == "demo" and card["name"] == "demo" and card["architecture"] == "DigitsCNN"
    assert card["autoattack_acc"] == f"{100 * rep.robust_accuracy:.2f}"
    assert ev.last_folder() == str(tmp_path / "eval")


def test_a_fooled_image_opens_in_explore(ready_session):
    s = ready_session
    res = _run(s, EvaluateRequest(eps=0.1, max_images=8, stages=SMALL))
    fooled = res.fooled()
    assert fooled, "the undefended demo model keeps every digit at ε 0.1?"
    k = fooled[0]
    opened = []
    s.evaluate.image_opened.connect(opened.append)
    assert s.evaluate.open_in_explore(k)
    pump(s, lambda: opened)
    i = res.indices[k]
    ex = s.explore
    assert opened == [i] and s.selection == i and ex.mode == "batch"
    st = ex.state()
    # the stored adversarial image, re-checked: it still fools the model, within ε
    assert st.success and st.linf <= 0.1 + 1e-6
    assert np.allclose(st.adv, res.report.adv[k].numpy(), atol=1e-6)
    assert ex.request.attack == res.report.fooled_by[k] and "suite result" in ex.movie_text()
    # an image the suite did not fool has nothing to show
    kept = [j for j in range(res.report.n) if j not in res.report.adv]
    if kept:
        assert not s.evaluate.open_in_explore(kept[0])


def test_cancel_mid_stage_keeps_finished_stages(ready_session):
    from advgui.session import ModelRequest
    s = ready_session
    changed = []
    s.model_changed.connect(changed.append)
    s.load_model(ModelRequest(spec="demo-robust"))
    pump(s, lambda: changed and s.images is not None and not s.previews_running)
    ev = s.evaluate
    done = []
    ev.finished.connect(done.append)
    ev.run(EvaluateRequest(suite="standard", eps=0.1))
    pump(s, lambda: len(ev.rows) > 1 and ev.rows[1].status == "running" and ev.rows[1].fraction > 0)
    ev.cancel()
    pump(s, lambda: done, timeout=30)
    rep = done[0].report
    assert rep.cancelled and not rep.complete
    statuses = [r.status for r in ev.rows if not r.probe]
    assert statuses[0] == "done" and "cancelled" in statuses
    first_cancelled = statuses.index("cancelled")
    assert all(st == "cancelled" for st in statuses[first_cancelled:])
    # the finished stage's numbers are kept, and the card says the number is an upper bound
    assert rep.stages[0].status == "done" and rep.stages[0].attacked > 0 and ev.rows[0].robust == rep.stages[0].robust
    assert "upper bound" in done[0].card["footnote"] and not done[0].card["advgui_complete"]
    assert rep.robust_accuracy <= rep.stages[0].robust_accuracy


def test_refuses_without_eps_and_remembers_settings(ready_session, store):
    s = ready_session
    notes = []
    s.message.connect(notes.append)
    assert not s.evaluate.run(EvaluateRequest(eps=0.0))
    assert notes and "ε" in notes[-1].text
    res = _run(s, EvaluateRequest(suite="standard", eps=0.05, max_images=4, norm="l2", stages=SMALL))
    assert res.report.n == 4 and res.report.norm == "l2"
    saved = store.get_dict("evaluate")
    assert saved["max_images"] == 4 and saved["eps"] == 0.05 and saved["suite"] == "standard"
    assert "stages" not in saved          # custom stages are for scripts and tests, never remembered
