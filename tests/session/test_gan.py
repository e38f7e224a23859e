"""The GAN part of the session, without widgets: train a tiny AdvGAN generator with live losses and per-epoch
records, cancel and continue from the checkpoint, save it, use it as the window's attack (Explore, Batch, model
B), refuse a generator that does not fit, and GAN adversarial training in the Harden part."""
from __future__ import annotations

import json

import numpy as np
import pytest

from advgui.session.gan import GanRequest

from .conftest import pump

TINY = dict(width=8, blocks=0, batch_size=32, examples=8, val_max=40, lr=1e-2, eps=0.3)


def _train(s, **kw):
    g = s.gan
    fin = []
    g.finished.connect(fin.append)
    assert g.start(GanRequest(**{**TINY, **kw}))
    pump(s, lambda: fin, timeout=180)
    g.finished.disconnect(fin.append)
    return fin[0]


def _tiny_generator(path, size=(28, 28), eps=0.3, seed=0):
    """An untrained generator file (the attack only needs one that fits)."""
    from advgui.core.gan import GeneratorSpec, build_generator, save_generator
    g = build_generator(GeneratorSpec(1, size, eps, width=4, blocks=0), seed=seed)
    save_generator(g, path)
    return path


def test_gan_trains_saves_and_attacks_everywhere(ready_session, tmp_path):
    s = ready_session
    g = s.gan
    seen = {"batches": [], "epochs": []}
    g.batch_added.connect(seen["batches"].append)
    g.epoch_done.connect(seen["epochs"].append)
    assert _train(s, epochs=1, max_images=300) is False
    info = g.data_info
    assert info.n_train + info.n_val == 300 and 0 < info.n_val < 60
    batches = -(-info.n_train // 32)
    # one event per batch, kept in the history arrays; one record per epoch with its example grid
    assert seen["batches"] == list(range(1, batches + 1)) and g.losses.n == batches
    assert np.all(np.isfinite(g.losses["loss_g"])) and np.all(np.isfinite(g.losses["loss_d"]))
    assert g.losses["x"][-1] == pytest.approx(1.0)
    rec = seen["epochs"][0]
    assert len(seen["epochs"]) == 1 and 0 <= rec.val_success8 <= 1 and 0 <= rec.val_success <= 1
    ex = g.examples
    assert ex.clean.dtype == np.uint8 and ex.adv.shape == (8, 1, 28, 28)
    # the 8-bit images respect ε = 0.3 (76.5 grey levels)
    assert np.abs(ex.adv.astype(int) - ex.clean.astype(int)).max() <= 76.5
    assert g.can_save and "Trained 1 epoch" in g.describe_result()
    ck = g.checkpoint_info(GanRequest(**TINY, epochs=1, max_images=300))
    assert ck is not None and ck.complete and not ck.can_continue and ck.path.exists()
    assert g.checkpoint_info(GanRequest(**TINY, epochs=2, max_images=300)).can_continue
    other = g.checkpoint_info(GanRequest(**{**TINY, "eps": 0.2}, epochs=2, max_images=300))
    assert not other.can_continue and any("eps 0.3 there, 0.2 now" in d for d in other.differences)

    saved = []
    g.saved.connect(saved.append)
    assert g.save_to(str(tmp_path / "G"))
    pump(s, lambda: saved)
    weights, sidecar = saved[0]["weights"], saved[0]["sidecar"]
    assert weights.name == "G.safetensors" and weights.exists()
    side = json.loads(sidecar.read_text(encoding="utf-8"))
    assert side["generator"]["eps"] == pytest.approx(0.3) and side["trained_against"]["spec"] == "demo"
    assert len(side["training"]["epochs"]) == 1

    # "Use as attack": AdvGAN with that file and its own ε, in Explore ...
    assert g.use_as_attack()
    a = s.attack
    assert a.name == "advgan" and a.value("generator") == str(weights) and a.params()["eps"] is None
    assert "ε 0.3" in a.describe() and "1×28×28 images" in a.file_description("generator")[0]
    req = a.request()           # the file's ε and norm, stated (the difference view scales by them)
    assert req.eps == pytest.approx(0.3) and req.params["norm"] == "linf"
    fin = []
    s.explore.run_finished.connect(fin.append)
    assert s.explore.run(0)
    pump(s, lambda: fin)
    f = fin[0]
    assert f.steps_run == 1 and s.explore.history.n == 2
    assert np.abs(f.adv - s.explore.clean.image).max() <= 0.3 + 1e-6
    # ... in Batch (the whole set, re-checked after 8-bit rounding) ...
    done = []
    s.batch.finished.connect(lambda summary, cancelled: done.append((summary, cancelled)))
    s.batch.run()
    pump(s, lambda: done, timeout=120)
    summary, cancelled = done[0]
    assert not cancelled
    assert summary.n == 50 and 0 <= summary.success8 <= summary.n
    # ... and against model B (the same request: the generator transfers)
    c = s.compare
    recs = []
    c.record_changed.connect(recs.append)
    c.set_active(True)
    pump(s, lambda: c.model_b is not None and recs)
    fin.clear()
    s.explore.run(1)

    def b_attacked() -> bool:
        r = c.record
        return bool(fin) and r is not None and r.index == 1 and r.final is not None and not s.runner.current(
            "compare")
    pump(s, b_attacked)
    assert c.record.request.attack == "advgan" and c.state().model_name == "demo-robust"
    assert np.abs(c.state().adv - c.state().clean).max() <= 0.3 + 1e-6


def test_cancel_keeps_the_checkpoint_and_continue_resumes(ready_session):
    s = ready_session
    g = s.gan
    fin = []
    g.finished.connect(fin.append)
    req = GanRequest(**TINY, epochs=3, max_images=400)
    assert g.start(req)
    pump(s, lambda: g.losses.n >= 2, timeout=120)
    g.cancel()
    pump(s, lambda: fin, timeout=60)
    assert fin == [True] and g.result.cancelled and g.can_save
    stopped = g.result.position
    ck = g.checkpoint_info(req)
    assert ck.can_continue and (ck.epoch, ck.batch) == (stopped["epoch"], stopped["batch"])
    assert "Continue resumes it" in ck.text() and "Save writes the generator as it is now" in g.describe_result()
    fin.clear()
    assert g.start(req, resume=True)
    pump(s, lambda: fin, timeout=180)
    assert fin == [False] and g.result.complete and g.result.resumed_from == stopped
    assert [r.epoch for r in g.records] == [1, 2, 3]        # the earlier epochs come from the checkpoint
    assert not g.checkpoint_info(req).can_continue


def test_a_generator_that_does_not_fit_is_refused(ready_session, tmp_path):
    s = ready_session
    msgs = []
    s.message.connect(msgs.append)
    s.attack.select("advgan")
    small = _tiny_generator(tmp_path / "small.safetensors", size=(16, 16))
    assert not s.set_attack_file("generator", str(small))
    assert msgs[-1].code == "generator-mismatch" and "16×16" in msgs[-1].text and "28×28" in msgs[-1].text
    assert s.attack.value("generator") == str(small)            # kept: the form says what it is
    assert "1×16×16 images" in s.attack.file_description("generator")[0]
    ok = _tiny_generator(tmp_path / "ok.safetensors", eps=0.3)
    assert s.set_attack_file("generator", str(ok))
    s.attack.set_value("eps", 0.1)                              # ticking "set" and asking for another ε
    assert not s.set_attack_file("generator", str(ok))
    assert "ε 0.3" in msgs[-1].text and "ε 0.1" in msgs[-1].text
    (tmp_path / "junk.safetensors").write_bytes(b"not a generator")
    assert not s.set_attack_file("generator", str(tmp_path / "junk.safetensors"))
    text, readable = s.attack.file_description("generator")
    assert not readable and "junk.safetensors" in text


def test_settings_remember_the_request(make_session, store):
    s = make_session()
    s.gan.request = GanRequest(eps=0.25, target=3, epochs=4)
    s.settings.set("gan", {"eps": 0.25, "target": 3, "epochs": "oops", "unknown": 1})
    r = make_session(store).gan.request
    assert r.eps == pytest.approx(0.25) and r.target == 3 and r.epochs == GanRequest().epochs


@pytest.mark.slow
def test_harden_offers_gan_adversarial_training(ready_session):
    from advgui.session.harden import METHODS, HardenRequest
    assert "advgan" in [m[0] for m in METHODS]
    s = ready_session
    h = s.harden
    fin, curves = [], []
    h.finished.connect(fin.append)
    h.curves_ready.connect(curves.append)
    n = [0]
    h.batch_added.connect(lambda *_: n.__setitem__(0, n[0] + 1))
    r = HardenRequest(method="advgan", eps=0.1, epochs=1, max_images=128, eval_max=40, eval_steps=3, val_steps=3)
    assert r.describe() == "AdvGAN ε 0.1"
    assert h.start(r)
    pump(s, lambda: fin, timeout=180)
    assert fin == [False] and n[0] == 2 and h.result.config.method == "advgan"
    assert len(h.records) == 1 and len(curves[0].trained.worst) == len(curves[0].eps)
