"""Export, model B and hardening, through the session."""
from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import pump


def test_export_writes_with_progress_and_reuses_batch_results(ready_session, tmp_path):
    s = ready_session
    s.attack.select("fgsm")
    s.attack.set_value("eps", 32 / 255)
    done = []
    s.batch.finished.connect(lambda *a: done.append(1))
    s.batch.run(16)
    pump(s, lambda: done)
    progress, finished = [], []
    s.batch.export_progress.connect(progress.append)
    s.batch.export_finished.connect(finished.append)
    out = tmp_path / "export"
    s.batch.export(str(out))
    pump(s, lambda: finished)
    manifest = json.loads(open(finished[0], encoding="utf-8").read())
    assert manifest["complete"] and len(manifest["images"]) == 50
    assert manifest["run"]["attack"] == "fgsm" and manifest["run"]["params"]["eps"] == pytest.approx(32 / 255)
    assert progress[0].written == 0 and progress[-1].written == 50 == progress[-1].total
    # the batch's own results were written, not attacked again: identical predictions
    by_src = {r["source"]: r for r in manifest["images"]}
    rows = s.batch.results[0]
    item = s.images.image_set.items[rows.indices[0]]
    assert by_src[str(item.path)]["adv8_pred"] == int(rows.result.adv8_pred[0])


def test_export_without_a_batch_attacks_and_can_be_cancelled_then_resumed(ready_session, tmp_path):
    s = ready_session
    s.attack.select("pgd")
    s.attack.set_value("steps", 20)
    s.batch.batch_size = 8
    out = tmp_path / "exp"
    cancelled, finished, progress = [], [], []
    s.batch.export_cancelled.connect(cancelled.append)
    s.batch.export_finished.connect(finished.append)
    s.batch.export_progress.connect(progress.append)
    s.batch.export(str(out))
    pump(s, lambda: any(p.written >= 8 for p in progress))
    s.batch.cancel_export()
    pump(s, lambda: cancelled)
    written = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert not written["complete"] and 8 <= len(written["images"]) < 50
    assert s.settings.get_dict("export/running")["dir"] == str(out)     # remembered for a restart
    s.batch.export(str(out), resume=True)
    pump(s, lambda: finished)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["complete"] and len(manifest["images"]) == 50
    assert len({r["source"] for r in manifest["images"]}) == 50
    assert not s.settings.get_dict("export/running")


def test_export_into_a_used_folder_asks(ready_session, tmp_path):
    s = ready_session
    out = tmp_path / "used"
    out.mkdir()
    (out / "mine.txt").write_text("keep me", encoding="utf-8")
    failed = []
    s.batch.export_failed.connect(failed.append)
    s.batch.export(str(out))
    pump(s, lambda: failed)
    from advgui.session.jobs import is_folder_question
    assert failed[0].context == "export"
    assert (out / "mine.txt").read_text(encoding="utf-8") == "keep me"
    assert is_folder_question(failed[0].code) or "not empty" in failed[0].text


def test_model_b_repeats_the_attack(ready_session):
    s = ready_session
    c = s.compare
    recs = []
    c.record_changed.connect(recs.append)
    c.set_active(True)
    pump(s, lambda: c.model_b is not None and recs)
    assert c.model_b.request.spec == "demo-robust" and c.same_classes
    s.attack.select("pgd")
    s.attack.set_value("steps", 10)
    s.attack.set_value("eps", 0.1)
    fin = []
    s.explore.run_finished.connect(fin.append)
    recs.clear()
    s.explore.run(0)
    pump(s, lambda: fin and recs and recs[-1].final is not None)
    rec = recs[-1]
    st = c.state()
    assert st.adv is not None and st.model_name == "demo-robust"
    assert np.abs(st.adv - st.clean).max() <= 0.1 + 1e-6
    # the same attack against B: seed and settings as for A
    from advgui.core.attacks import make_attack
    import torch
    ref = make_attack("pgd", eps=0.1, steps=10).run(c.model_b.classifier, torch.from_numpy(rec.clean.image)[None],
                                                    torch.tensor([rec.clean.label]), seed=s.attack.seed)
    assert int(ref.adv_pred[0]) == rec.final.adv_pred


@pytest.mark.slow
def test_harden_trains_compares_saves_and_opens(ready_session, tmp_path):
    s = ready_session
    h = s.harden
    from advgui.session.harden import HardenRequest
    events = {"epochs": [], "curves": [], "finished": [], "batches": 0}
    h.epoch_done.connect(events["epochs"].append)
    h.curves_ready.connect(events["curves"].append)
    h.finished.connect(events["finished"].append)
    h.batch_added.connect(lambda *_: events.__setitem__("batches", events["batches"] + 1))
    assert h.start(HardenRequest(method="fgsm-rs", eps=0.1, epochs=1, max_images=128, eval_max=40,
                                 eval_steps=3, val_steps=3))
    pump(s, lambda: events["finished"], timeout=180)
    assert events["finished"] == [False] and len(events["epochs"]) == 1 and events["batches"] == 2
    pair = events["curves"][0]
    assert pair.eps[0] == 0 and pair.n == 40 and len(pair.trained.worst) == len(pair.eps)
    assert all(a >= b - 1e-9 for a, b in zip(pair.trained.worst, pair.trained.worst[1:]))   # never rises with ε
    saved = []
    h.saved.connect(saved.append)
    h.save_to(str(tmp_path / "hard"))
    pump(s, lambda: saved)
    assert saved[0]["weights"].name == "hard.safetensors" and saved[0]["weights"].exists()
    changed = []
    s.model_changed.connect(changed.append)
    h.open_in_explore()
    pump(s, lambda: changed)
    assert changed[0].request.spec == str(saved[0]["weights"])


def test_harden_cancel_keeps_what_was_trained(ready_session):
    s = ready_session
    h = s.harden
    from advgui.session.harden import HardenRequest
    fin = []
    h.finished.connect(fin.append)
    h.start(HardenRequest(method="pgd", eps=0.1, epochs=5, max_images=640, eval_max=40, val_steps=2))
    pump(s, lambda: h.batches_seen >= 2, timeout=120)
    h.cancel()
    pump(s, lambda: fin, timeout=60)
    assert fin == [True] and h.result is not None and h.result.cancelled
    assert h.curves is None and h.last_validated is None        # stopped inside epoch 1: nothing validated
