"""Properties of FGSM, BIM, PGD (L∞/L2) and MI-FGSM on the demo model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from advgui.core.attacks import AttackError, make_attack
from advgui.core.attacks.base import round_within_eps
from advgui.core.attacks.norms import project, random_start

GRADIENT = ["fgsm", "bim", "pgd", "mifgsm"]
EPS = {"linf": 0.1, "l2": 1.5}


@pytest.mark.parametrize("name", GRADIENT)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbation_within_eps_and_box(demo_model, digits, name, norm, seed):
    x, y = digits
    eps = EPS[norm]
    r = make_attack(name, eps=eps, norm=norm, steps=5).run(demo_model, x[:32], y[:32], seed=seed)
    d = (r.adv - r.clean).flatten(1)
    assert r.adv.min() >= 0 and r.adv.max() <= 1
    bound = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert bound.max() <= eps + 1e-5
    # the written 8-bit image also stays within eps of the clean 8-bit image
    d8 = (r.adv8.float() - (r.clean * 255).round()).flatten(1) / 255
    b8 = d8.abs().amax(1) if norm == "linf" else d8.norm(dim=1)
    assert b8.max() <= eps + 1e-5
    # something actually happened
    assert r.success.any()


@pytest.mark.parametrize("name", GRADIENT)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_changes_nothing(demo_model, digits, name, norm):
    x, y = digits
    r = make_attack(name, eps=0.0, norm=norm, steps=3).run(demo_model, x[:16], y[:16])
    assert torch.equal(r.adv, r.clean)
    assert torch.equal(r.adv8, (r.clean * 255).round().to(torch.uint8))
    assert not r.success.any()  # the demo classifies these 16 correctly


@pytest.mark.parametrize("name,norm", [("pgd", "linf"), ("pgd", "l2"), ("fgsm", "linf"), ("mifgsm", "linf")])
def test_success_never_falls_as_eps_grows(demo_model, digits, name, norm):
    x, y = digits
    grid = [0, 0.05, 0.1, 0.15, 0.2, 0.3] if norm == "linf" else [0, 0.5, 1.0, 2.0, 3.0]
    rates = [make_attack(name, eps=e, norm=norm, steps=10).run(demo_model, x, y).success_rate for e in grid]
    assert rates[0] == 0
    assert rates[-1] > 0.5
    assert all(b >= a - 1 / len(y) for a, b in zip(rates, rates[1:])), rates


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_at_least_as_strong_as_fgsm(demo_model, digits, norm):
    x, y = digits
    eps = EPS[norm]
    fgsm = make_attack("fgsm", eps=eps, norm=norm).run(demo_model, x, y)
    pgd = make_attack("pgd", eps=eps, norm=norm, steps=20).run(demo_model, x, y)
    assert pgd.success_rate >= fgsm.success_rate
    assert pgd.success_rate8 >= fgsm.success_rate8


@pytest.mark.parametrize("name", ["bim", "pgd", "mifgsm"])
def test_targeted_reaches_target(demo_model, digits, name):
    x, y = digits
    keep = y != 3
    r = make_attack(name, eps=0.3, steps=30).run(demo_model, x[keep][:24], y[keep][:24], target=3)
    assert (r.adv_pred == 3).mean() >= 0.9
    assert np.array_equal(r.success, r.adv_pred == 3)
    assert r.success8.mean() >= 0.9


@pytest.mark.parametrize("name", GRADIENT)
def test_model_left_as_found(bn_classifier, digits, name):
    x, y = digits
    clf = bn_classifier
    clf.train()
    clf.net.fc.eval()  # a mixed state must come back exactly
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    modes = [m.training for m in clf.modules()]
    flags = [p.requires_grad for p in clf.parameters()]
    make_attack(name, eps=0.1, steps=3).run(clf, x[:8], y[:8])
    assert [m.training for m in clf.modules()] == modes
    assert [p.requires_grad for p in clf.parameters()] == flags
    assert all(p.grad is None for p in clf.parameters())
    for k, v in clf.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name,norm", [("pgd", "linf"), ("pgd", "l2"), ("mifgsm", "linf"), ("bim", "l2")])
def test_one_image_alone_or_in_batch_gives_same_result(demo_model, digits, name, norm):
    x, y = digits
    atk = make_attack(name, eps=EPS[norm], norm=norm, steps=5)
    batch = atk.run(demo_model, x[:16], y[:16], seed=7)
    for i in (0, 5, 15):
        alone = atk.run(demo_model, x[i:i + 1], y[i:i + 1], seed=7)
        assert torch.allclose(alone.adv[0], batch.adv[i], atol=1e-5)
        assert alone.adv_pred[0] == batch.adv_pred[i]


def test_seed_changes_random_start_but_is_reproducible(demo_model, digits):
    x, y = digits
    atk = make_attack("pgd", eps=0.1, steps=2)
    a = atk.run(demo_model, x[:8], y[:8], seed=1).adv
    b = atk.run(demo_model, x[:8], y[:8], seed=1).adv
    c = atk.run(demo_model, x[:8], y[:8], seed=2).adv
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_telemetry_one_step_info_per_step_without_extra_passes(demo_model, digits):
    x, y = digits
    infos = []
    r = make_attack("pgd", eps=0.1, steps=7).run(demo_model, x[:16], y[:16],
                                                 observer=lambda i: infos.append(i), keep_images=True)
    # steps 0..6 from the attack loop (each the forward pass that produced a gradient) + the final re-check
    assert [i.step for i in infos] == list(range(8))
    assert infos[-1].final
    assert r.n_backward == 7
    assert r.n_forward == 7 + 3  # + clean forward + float re-check + 8-bit re-check
    info = infos[3]
    assert info.loss.shape == (16,) and info.topk_labels.shape == (16, 5)
    assert np.allclose(info.topk_probs.sum(1) <= 1 + 1e-5, True)
    assert info.images.shape == x[:16].shape
    # the final frame shows the returned images, and its success matches the result's
    assert torch.allclose(infos[-1].images.cpu(), r.adv)
    assert np.array_equal(infos[-1].success, r.success)
    assert (infos[-1].linf <= 0.1 + 1e-5).all()
    # the loss increases overall for an untargeted attack
    assert infos[-1].loss.mean() > infos[0].loss.mean()


def test_first_success_step_matches_telemetry(demo_model, digits):
    x, y = digits
    infos = []
    r = make_attack("pgd", eps=0.15, steps=10).run(demo_model, x[:32], y[:32], observer=infos.append)
    for i in range(32):
        s = r.first_success_step[i]
        if r.success[i] and s < 10:
            assert infos[s].success[i] and not any(infos[k].success[i] for k in range(s))
        if not r.success[i]:
            assert s == -1


def test_stop_on_success_saves_compute_and_keeps_success(demo_model, digits):
    x, y = digits
    full = make_attack("pgd", eps=0.2, steps=20).run(demo_model, x, y)
    early = make_attack("pgd", eps=0.2, steps=20, stop_on_success=True).run(demo_model, x, y)
    assert early.success_rate >= full.success_rate - 2 / len(y)
    # stopped samples keep a smaller perturbation than running to the end
    both = early.success & full.success
    assert np.median(early.l2[both]) < np.median(full.l2[both])
    infos = []
    make_attack("pgd", eps=0.2, steps=20, stop_on_success=True).run(demo_model, x, y, observer=infos.append)
    active = [int(i.active.sum()) for i in infos[:-1]]
    assert active[-1] < active[0]  # finished samples left the batch


def test_restarts_keep_the_best(demo_model, digits):
    x, y = digits
    one = make_attack("pgd", eps=0.08, steps=5, restarts=1).run(demo_model, x, y, seed=3)
    many = make_attack("pgd", eps=0.08, steps=5, restarts=4).run(demo_model, x, y, seed=3)
    assert many.success_rate >= one.success_rate
    assert (many.linf <= 0.08 + 1e-6).all()


def test_cancel_returns_within_one_step(demo_model, digits):
    x, y = digits
    seen = []

    def observer(info):
        seen.append(info.step)
        return info.step == 2 and not info.final

    r = make_attack("pgd", eps=0.1, steps=50).run(demo_model, x[:8], y[:8], observer=observer)
    assert r.cancelled
    assert r.n_backward == 3  # steps 0, 1, 2 were computed, nothing after the cancel
    assert (r.linf <= 0.1 + 1e-5).all() and r.adv.min() >= 0 and r.adv.max() <= 1


def test_bad_parameters_are_clear_errors(demo_model, digits):
    x, y = digits
    with pytest.raises(AttackError, match="eps"):
        make_attack("pgd", eps=-0.1).run(demo_model, x[:2], y[:2])
    with pytest.raises(AttackError, match="larger than"):
        make_attack("pgd", eps=2.0).run(demo_model, x[:2], y[:2])
    with pytest.raises(AttackError, match="steps"):
        make_attack("pgd", eps=0.1, steps=0).run(demo_model, x[:2], y[:2])
    with pytest.raises(AttackError, match="unknown attack"):
        make_attack("nonsense")
    with pytest.raises(AttackError, match="target"):
        make_attack("pgd", eps=0.1).run(demo_model, x[:2], y[:2], target=10)
    with pytest.raises(AttackError, match="norm"):
        make_attack("pgd", eps=0.1, norm="l1").run(demo_model, x[:2], y[:2])


def test_l2_random_start_is_inside_the_ball_and_clipped():
    torch.manual_seed(0)
    clean = torch.rand(256, 3, 8, 8)
    x = random_start(clean, 0.5, "l2")
    n = (x - clean).flatten(1).norm(dim=1)
    assert n.max() <= 0.5 + 1e-6
    assert x.min() >= 0 and x.max() <= 1
    # uniform in the ball, not on its sphere: in d dimensions (r/eps)^d is uniform on [0, 1]
    mid = torch.full((4000, 1, 2, 2), 0.5)  # far enough from the box that nothing is clipped
    u = ((random_start(mid, 0.3, "l2") - mid).flatten(1).norm(dim=1) / 0.3) ** 4
    assert abs(u.mean().item() - 0.5) < 0.03
    assert abs((u < 0.25).float().mean().item() - 0.25) < 0.03
    xl = random_start(clean, 0.1, "linf")
    assert (xl - clean).abs().max() <= 0.1 + 1e-6 and xl.min() >= 0 and xl.max() <= 1


def test_projection_then_clip_satisfies_both():
    torch.manual_seed(0)
    clean = torch.rand(64, 1, 6, 6)
    delta = torch.randn_like(clean)
    for norm, eps in (("linf", 0.05), ("l2", 0.3)):
        x = (clean + project(delta, eps, norm)).clamp(0, 1)
        d = (x - clean).flatten(1)
        assert (d.abs().amax(1) if norm == "linf" else d.norm(dim=1)).max() <= eps + 1e-6


def test_rounding_stays_within_eps():
    clean = torch.full((1, 1, 2, 2), 100 / 255)
    adv = clean + 0.0999  # 25.47 grey levels: nearest rounding gives 25 (inside); with eps 25.2/255 -> 25
    r = round_within_eps(clean, adv, 25.2 / 255, "linf")
    assert int(r.max()) - 100 == 25
    adv = clean + 25.6 / 255  # nearest would be 26 > eps=25.55/255: must round towards clean
    r = round_within_eps(clean, adv, 25.55 / 255, "linf")
    assert int(r.max()) - 100 == 25


@pytest.mark.parametrize("name", ["fgsm", "pgd", "deepfool", "cw"])
def test_step_stream_yields_every_step_and_returns_the_result(demo_model, digits, name):
    """The attack is a generator: one StepInfo per step, the last one final, the result as its return
    value; driving it by hand gives exactly what run() gives."""
    x, y = digits
    attack = make_attack(name, eps=0.1 if name in ("fgsm", "pgd") else None, steps=6)
    gen = attack.iter_steps(demo_model, x[:8], y[:8], seed=3)
    infos = []
    try:
        while True:
            infos.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert infos and infos[-1].final and not any(i.final for i in infos[:-1])
    assert all(i.loss.shape == (8,) for i in infos)
    # the final StepInfo describes the re-checked result
    np.testing.assert_array_equal(infos[-1].success, result.success)
    ref = attack.run(demo_model, x[:8], y[:8], seed=3)
    torch.testing.assert_close(result.adv, ref.adv)
    np.testing.assert_array_equal(result.adv8_pred, ref.adv8_pred)
    # run() without an observer yields no telemetry but computes the same thing
    quiet = attack.iter_steps(demo_model, x[:8], y[:8], seed=3, telemetry=False)
    with pytest.raises(StopIteration):
        next(quiet)


def test_stop_request_returns_the_best_so_far(demo_model, digits):
    x, y = digits
    gen = make_attack("pgd", eps=0.1, steps=100).iter_steps(demo_model, x[:4], y[:4])
    assert next(gen).step == 0
    assert gen.send(False).step == 1          # one more step: pausing is simply not asking for the next
    final = gen.send(True)                    # stop: the attack finishes with what it has
    assert final.final
    with pytest.raises(StopIteration) as stop:
        gen.send(False)
    r = stop.value.value                      # the StopIteration's value: the AttackResult
    assert r.cancelled and r.n_backward == 2 and r.steps_run == 1


def test_result_carries_topk(demo_model, digits):
    x, y = digits
    r = make_attack("pgd", eps=0.1, steps=5).run(demo_model, x[:16], y[:16])
    assert r.clean_topk_labels.shape == (16, 5) == r.adv8_topk_probs.shape
    np.testing.assert_array_equal(r.clean_topk_labels[:, 0], r.clean_pred)
    np.testing.assert_array_equal(r.adv_topk_labels[:, 0], r.adv_pred)
    np.testing.assert_array_equal(r.adv8_topk_labels[:, 0], r.adv8_pred)
    np.testing.assert_allclose(r.adv8_topk_probs[:, 0], r.adv8_conf, rtol=1e-6)
    assert (np.diff(r.adv_topk_probs, axis=1) <= 1e-7).all()     # sorted, highest first
