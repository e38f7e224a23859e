"""The window's behaviour, tested through the session without any widget."""
from __future__ import annotations

import json

import numpy as np
import pytest

from advgui.session import SettingsStore

from .conftest import pump


def test_start_opens_demo_model_images_and_first_image(ready_session):
    s = ready_session
    assert s.model.request.spec == "demo" and s.model.summary["classes"] == 10
    assert s.images.paths == ["demo"] and len(s.images.image_set) == 50
    assert len(s.previews) == 50 and s.selection == 0
    assert s.explore.clean is not None and s.explore.clean.index == 0 and s.explore.mode == "clean"
    assert {"fgsm", "pgd", "deepfool", "cw"} <= set(s.attack.registry)
    assert s.attack.eps == pytest.approx(32 / 255)        # a first ε that works on small grey digits


def test_live_run_records_every_step_and_the_final_frame(ready_session):
    s = ready_session
    s.attack.select("pgd")
    s.attack.set_value("eps", 32 / 255)
    s.attack.set_value("steps", 12)
    done = []
    s.explore.run_finished.connect(done.append)
    assert s.explore.run(3)
    pump(s, lambda: done)
    ex = s.explore
    h = ex.history
    assert h.n == 13 and h.final_index == 12 and ex.frame == 12          # start point, 11 steps, final
    fin = done[0]
    st = ex.state()
    assert st.adv is not None and np.abs(st.adv - st.clean).max() <= 32 / 255 + 1e-6
    assert st.success == fin.success and st.adv_pred == ex.name(fin.adv_pred)
    # the 8-bit result is within rounding of the float one
    assert np.abs(fin.adv8.astype(float) - st.adv * 255).max() <= 1.0 + 1e-4
    # scrubbing the movie changes the frame the views show
    ex.set_frame(2)
    assert ex.state().frame_text == "step 2/12" and not ex.follow


def test_pause_step_and_stop_through_the_session(ready_session):
    s = ready_session
    s.attack.select("pgd")
    s.attack.set_value("steps", 100000)
    finished = []
    s.explore.run_finished.connect(finished.append)
    s.explore.run(0)
    pump(s, lambda: s.explore.history.n >= 3)
    s.explore.pause()
    assert s.explore.paused
    job = s.explore.job
    n0 = job.steps
    job.finished.wait(0.2)
    s.runner.drain()
    assert job.steps in (n0, n0 + 1)                    # at most the step that was under way
    n1 = s.explore.history.n
    s.explore.step()
    pump(s, lambda: s.explore.history.n == n1 + 1)
    job.finished.wait(0.2)
    s.runner.drain()
    assert s.explore.history.n == n1 + 1                # exactly one more step
    s.explore.stop()
    pump(s, lambda: finished)
    assert finished[0].cancelled and s.explore.history.final_index == s.explore.history.n - 1


def test_a_new_run_replaces_the_running_one(ready_session):
    s = ready_session
    s.attack.select("pgd")
    s.attack.set_value("steps", 100000)
    finished = []
    s.explore.run_finished.connect(finished.append)
    s.explore.run(0)
    pump(s, lambda: s.explore.history.n >= 2)
    s.attack.set_value("steps", 5)
    s.explore.run(1)
    pump(s, lambda: finished)
    assert len(finished) == 1 and not finished[0].cancelled        # only the new run reports
    assert s.explore.clean.index == 1 and s.explore.history.n == 6


def test_attack_settings_remember_each_attack(ready_session):
    a = ready_session.attack
    a.select("pgd")
    a.set_value("steps", 17)
    a.select("deepfool")
    assert a.value("steps") == 50 and a.value("eps") is None and a.eps_optional
    a.set_value("steps", 3)
    a.select("pgd")
    assert a.value("steps") == 17
    assert a.describe().startswith("PGD · ε 0.1255 (32/255) · L∞ · 17 steps")
    a.select("mifgsm")
    assert a.title() == "MI-FGSM"
    state = a.state()
    from advgui.session.attack_settings import AttackSettings
    b = AttackSettings()
    b.set_registry(a.registry)
    b.restore(json.loads(json.dumps(state)))
    b.select("deepfool")
    assert b.value("steps") == 3
    b.restore({"eps": "garbage", "per_attack": 5, "attack": 7})   # a damaged file changes nothing
    assert b.name == "deepfool"


def test_settings_are_saved_as_they_change_and_survive_a_crash(ready_session, tmp_path):
    s = ready_session
    s.attack.set_seed(7)
    s.select(4)
    s.settings.flush()                               # the window flushes a moment after each change
    # a "crash": nothing else is saved; a new session reads the same file
    again = SettingsStore(s.settings.path)
    assert again.get_dict("attack")["seed"] == 7 and again.get_int("images/index", 0) == 4
    assert again.get_dict("model")["spec"] == "demo"
    assert "trust_code" not in again.get_dict("model")          # trust is never remembered


def test_a_damaged_settings_file_is_reported_and_replaced(tmp_path, make_session):
    p = tmp_path / "bad.json"
    p.write_text("{not json", encoding="utf-8")
    s = make_session(SettingsStore(p))
    msgs = []
    s.message.connect(msgs.append)
    s.start()
    assert msgs and "damaged" in msgs[0].text and msgs[0].kind == "warning"
    pump(s, lambda: s.model is not None)


def test_failed_last_model_falls_back_to_demo(make_session, store):
    store.set("model", {"spec": "/no/such/model.pt"})
    s = make_session()
    msgs = []
    s.message.connect(msgs.append)
    ready = []
    s.ready.connect(lambda: ready.append(1))
    s.start()
    pump(s, lambda: ready)
    assert s.model.request.spec == "demo"
    assert "Opened the built-in demo model instead" in msgs[0].text and "/no/such/model.pt" in msgs[0].text


def test_first_readable_image_is_selected(make_session, store, tmp_path):
    from PIL import Image
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a0_broken.png").write_bytes(b"not a png")
    for k in range(3):
        Image.new("L", (28, 28), 40 * k).save(d / f"b{k}.png")
    store.set("images/paths", [str(d)])
    s = make_session()
    msgs = []
    s.message.connect(msgs.append)
    ready = []
    s.ready.connect(lambda: ready.append(1))
    s.start()
    pump(s, lambda: ready)
    assert s.selection == 1 and s.explore.clean.name == "b0.png"
    assert not [m for m in msgs if m.kind == "error"]          # no error banner for the broken first file
    assert any("a0_broken.png" in p for p in s.skipped)


def test_batch_matches_the_core_and_stops_early(ready_session):
    s = ready_session
    s.attack.select("fgsm")
    s.attack.set_value("eps", 32 / 255)
    done = []
    s.batch.finished.connect(lambda summ, c: done.append((summ, c)))
    s.batch.run(16)
    pump(s, lambda: done)
    summ, cancelled = done[0]
    assert not cancelled and summ.n == 50 and sum(len(r) for r in s.batch.results) == 50
    # the same numbers as the core runner
    from advgui.core.attacks import make_attack
    from advgui.core.runner import SetSummary, attack_batches
    ref = SetSummary()
    for b in attack_batches(s.model.classifier, s.images.image_set, make_attack("fgsm", eps=32 / 255), batch_size=16):
        ref.add(b.result)
    assert (summ.success, summ.adv8_correct) == (ref.success, ref.adv8_correct)
    # stop early
    s.attack.select("pgd")
    s.attack.set_value("steps", 100000)
    done.clear()
    s.batch.run(8)
    pump(s, lambda: s.batch.steps_seen >= 3)
    s.batch.stop()
    pump(s, lambda: done)
    assert done[0][1] and done[0][0].n < 50


def test_open_batch_row_in_explore(ready_session):
    s = ready_session
    s.attack.select("fgsm")
    done = []
    s.batch.finished.connect(lambda *a: done.append(1))
    s.batch.run(64)
    pump(s, lambda: done)
    rows = s.batch.results[0]
    opened = []
    s.batch.row_opened.connect(opened.append)
    s.batch.open_row(rows, 5)
    pump(s, lambda: opened)
    st = s.explore.state()
    assert s.explore.mode == "batch" and opened == [rows.indices[5]] and s.selection == rows.indices[5]
    np.testing.assert_allclose(st.adv, rows.result.adv[5].numpy())
    assert st.success == bool(rows.result.success[5])
