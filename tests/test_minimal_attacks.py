"""Properties of the minimal-norm attacks (DeepFool L2/L∞, Carlini–Wagner L2) on the demo model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from advgui.core.attacks import AttackError, make_attack
from advgui.core.attacks.minimal import adversarial_margin
from advgui.core.models import Classifier

# a short C&W budget that still fools every demo digit (lr 0.1 converges in 20 steps here)
CW_FAST = dict(steps=20, binary_steps=3, lr=0.1)
ATTACKS = [("deepfool", {}), ("deepfool", {"norm": "linf"}), ("cw", CW_FAST)]
IDS = ["deepfool-l2", "deepfool-linf", "cw"]


def _norm_of(kw: dict) -> str:
    return kw.get("norm", "l2")


@pytest.fixture(scope="module")
def results(demo_model, digits):
    """Each attack once on the 64 test digits (shared by the tests that only read results)."""
    torch.manual_seed(0)
    x, y = digits
    return {key: make_attack(name, **kw).run(demo_model, x, y) for key, (name, kw) in zip(IDS, ATTACKS)}


@pytest.mark.parametrize("key", IDS)
def test_success_high_after_8bit_rounding(results, key):
    r = results[key]
    assert r.clean_accuracy == 1.0
    assert r.success_rate >= 0.97
    assert r.success_rate8 >= 0.97
    # the 8-bit step makes the float and the exported result agree
    assert np.array_equal(r.success, r.success8)
    assert r.adv.min() >= 0 and r.adv.max() <= 1


@pytest.fixture(scope="module")
def pgd_results(demo_model, digits):
    """PGD at budgets where it fools most digits (L2 ε = 2, L∞ ε = 0.15)."""
    x, y = digits
    return {norm: make_attack("pgd", eps=eps, norm=norm, steps=20).run(demo_model, x, y, seed=0)
            for norm, eps in (("l2", 2.0), ("linf", 0.15))}


@pytest.mark.parametrize("key", IDS)
def test_minimal_norm_beats_pgd(results, pgd_results, key):
    """Smaller perturbations than PGD needs, in the norm the attack minimises."""
    norm = "linf" if key == "deepfool-linf" else "l2"
    pgd = pgd_results[norm]
    assert pgd.success_rate >= 0.8
    r = results[key]
    size = (lambda res: res.linf) if norm == "linf" else (lambda res: res.l2)
    assert np.median(size(r)[r.success]) < 0.9 * np.median(size(pgd)[pgd.success])


@pytest.mark.parametrize("name,kw,eps", [("deepfool", {}, 1.0), ("deepfool", {"norm": "linf"}, 20 / 255),
                                         ("cw", CW_FAST, 1.0)], ids=IDS)
def test_perturbation_within_eps_and_box(demo_model, digits, name, kw, eps):
    x, y = digits
    norm = _norm_of(kw)
    kw = dict(kw, steps=10) if name == "deepfool" else kw
    r = make_attack(name, eps=eps, **kw).run(demo_model, x[:32], y[:32])
    assert r.adv.min() >= 0 and r.adv.max() <= 1
    d = (r.adv - r.clean).flatten(1)
    d8 = (r.adv8.float() - (r.clean * 255).round()).flatten(1) / 255
    for dd in (d, d8):
        bound = dd.abs().amax(1) if norm == "linf" else dd.norm(dim=1)
        assert bound.max() <= eps + 1e-5
    assert 0 < r.success_rate < 1   # eps bites: some but not all digits fall
    # the 8-bit step finds an adversarial 8-bit image inside the ball for every float success
    assert np.array_equal(r.success, r.success8)


@pytest.mark.parametrize("name,kw", ATTACKS, ids=IDS)
def test_eps_zero_changes_nothing(demo_model, digits, name, kw):
    x, y = digits
    r = make_attack(name, eps=0.0, **kw).run(demo_model, x[:8], y[:8])
    assert torch.equal(r.adv, r.clean)
    assert not r.success.any()


def test_cw_targeted_reaches_target(demo_model, digits):
    x, y = digits
    x, y = x[:24], y[:24]
    target = (y + 3) % 10
    r = make_attack("cw", **CW_FAST).run(demo_model, x, y, target=target)
    assert np.array_equal(r.success, r.adv_pred == target.numpy())
    assert r.success.mean() >= 0.9
    assert r.success8.mean() >= 0.9
    # going to a chosen class costs more than going to the nearest one
    u = make_attack("cw", **CW_FAST).run(demo_model, x, y)
    both = r.success & u.success
    assert np.median(u.l2[both]) < np.median(r.l2[both])


def test_deepfool_is_untargeted_only(demo_model, digits):
    x, y = digits
    with pytest.raises(AttackError, match="untargeted"):
        make_attack("deepfool").run(demo_model, x[:2], y[:2], target=1)


@pytest.mark.parametrize("name,kw", ATTACKS, ids=IDS)
def test_one_image_alone_or_in_batch_gives_same_result(demo_model, digits, name, kw):
    x, y = digits
    atk = make_attack(name, **kw)
    batch = atk.run(demo_model, x[:12], y[:12])
    for i in (0, 7, 11):
        alone = atk.run(demo_model, x[i:i + 1], y[i:i + 1])
        assert torch.allclose(alone.adv[0], batch.adv[i], atol=1e-3)
        assert alone.adv8_pred[0] == batch.adv8_pred[i]


@pytest.mark.parametrize("name,kw", ATTACKS, ids=IDS)
def test_model_left_as_found(bn_classifier, digits, name, kw):
    x, y = digits
    clf = bn_classifier
    clf.train()
    clf.net.fc.eval()  # a mixed state must come back exactly
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    modes = [m.training for m in clf.modules()]
    flags = [p.requires_grad for p in clf.parameters()]
    kw = dict(kw, steps=3) if name == "deepfool" else dict(kw, steps=3, binary_steps=2)
    make_attack(name, **kw).run(clf, x[:8], y[:8])
    assert [m.training for m in clf.modules()] == modes
    assert [p.requires_grad for p in clf.parameters()] == flags
    assert all(p.grad is None for p in clf.parameters())
    for k, v in clf.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name,kw", ATTACKS, ids=IDS)
def test_cancel_returns_within_one_step(demo_model, digits, name, kw):
    x, y = digits
    seen = []

    def observer(info):
        seen.append((info.restart, info.step, info.final))
        return info.step == 1 and not info.final

    r = make_attack(name, **kw).run(demo_model, x[:16], y[:16], observer=observer)
    assert r.cancelled
    assert r.steps_run == 1          # one update, then the cancel at the report of step 1
    assert seen[:2] == [(0, 0, False), (0, 1, False)] and seen[-1][2] and len(seen) == 3
    if name == "cw":
        assert r.n_backward == 2     # steps 0 and 1, nothing after the cancel
    assert r.adv.min() >= 0 and r.adv.max() <= 1 and np.isfinite(r.l2).all()


def test_cw_telemetry_rounds_and_margin_loss(demo_model, digits):
    x, y = digits
    infos = []
    r = make_attack("cw", steps=10, binary_steps=3, lr=0.1, abort_early=False).run(
        demo_model, x[:8], y[:8], observer=infos.append, keep_images=True)
    steps = [(i.restart, i.step) for i in infos[:-1]]
    assert steps == [(k, s) for k in range(3) for s in range(10)]
    assert all(i.total_steps == 10 for i in infos)
    # one StepInfo per Adam step, each from the forward/backward pass that produced the gradient
    assert r.n_backward == len(infos) - 1 == r.steps_run
    for i in infos:
        # the reported loss is the adversarial margin: positive exactly where the images fool the model
        assert np.array_equal(i.loss > 0, i.success)
        assert i.images is not None and i.images.shape == x[:8].shape
    assert infos[-1].final and np.array_equal(infos[-1].success, r.success)
    assert torch.allclose(infos[-1].images.cpu(), r.adv)


def test_deepfool_telemetry_and_active_set(demo_model, digits):
    x, y = digits
    infos = []
    r = make_attack("deepfool").run(demo_model, x, y, observer=infos.append)
    steps = [i.step for i in infos[:-1]]
    assert steps == list(range(len(steps))) and all(i.restart == 0 for i in infos)
    active = [int(i.active.sum()) for i in infos[:-1]]
    assert active[0] == len(y) and active == sorted(active, reverse=True) and active[-1] < len(y) / 4
    assert r.steps_run == len(steps) - 1   # the last report finds every sample across, no update follows
    assert all(np.array_equal(i.loss > 0, i.success) for i in infos)


class _Affine(nn.Module):
    """x -> W x + b on flattened images: DeepFool's linearisation is exact for it."""

    def __init__(self, classes: int, d: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d, classes)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(classes, d, generator=g) * 0.05)
            self.lin.bias.zero_()
            self.lin.bias[-1] = 0.3   # the last class wins for many inputs

    def forward(self, x):
        return self.lin(x.flatten(1))


def _affine_classifier(classes: int) -> Classifier:
    return Classifier(_Affine(classes, 64), mean=[0.0], std=[1.0], input_size=(8, 8), channels=1,
                      class_names=[str(i) for i in range(classes)], spec="affine")


@pytest.mark.parametrize("classes", [2, 3])
def test_deepfool_true_label_last_class_and_few_classes(classes):
    """Fewer classes than candidates, true label = last class: the first step lands on the nearest
    linear boundary (times the overshoot), computed in closed form."""
    clf = _affine_classifier(classes)
    g = torch.Generator().manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(200, 1, 8, 8, generator=g)   # far from the box: nothing is clipped
    with torch.no_grad():
        pred = clf(x).argmax(1)
    x = x[pred == classes - 1][:16]
    y = torch.full((x.shape[0],), classes - 1)
    assert x.shape[0] >= 8
    infos = []
    r = make_attack("deepfool", overshoot=0.02, candidates=10).run(clf, x, y, observer=infos.append)
    assert r.success.all() and r.success8.all()
    w, b = clf.net.lin.weight.detach(), clf.net.lin.bias.detach()
    z = x.flatten(1) @ w.T + b
    wk = w[:-1] - w[-1]                                        # (classes-1, d): Z_k − Z_true
    dist = (z[:, -1:] - z[:, :-1]) / wk.norm(dim=1)           # distance to each linear boundary
    expect = (dist.min(1).values + 1e-4) * 1.02
    step1 = infos[1]
    assert np.allclose(step1.l2, expect.numpy(), rtol=1e-4, atol=1e-5)
    # after one exact step every sample is across (the second report finds them all adversarial)
    assert step1.success.all() and r.steps_run == 1
    # and it goes to the class of the nearest boundary
    assert np.array_equal(step1.pred, dist.argmin(1).numpy())


def test_deepfool_stops_samples_without_gradient():
    """A sample whose logits do not depend on the input cannot move: it leaves after one step instead of
    costing K backward passes for every remaining step."""
    clf = _affine_classifier(3)
    with torch.no_grad():
        clf.net.lin.weight.zero_()
    x = torch.full((4, 1, 8, 8), 0.5)
    y = torch.full((4,), 2)
    r = make_attack("deepfool", steps=50).run(clf, x, y)
    assert r.steps_run == 1 and not r.success.any() and torch.equal(r.adv, r.clean)


def test_deepfool_candidates_are_the_clean_runner_up(demo_model, digits):
    """With one candidate the attack heads for the clean runner-up class (never the true class), for
    digits of every label, the last class 9 included."""
    x, y = digits
    with torch.no_grad():
        logits = demo_model(x)
    runner_up = logits.scatter(1, y[:, None], -float("inf")).argmax(1)
    r = make_attack("deepfool", candidates=1).run(demo_model, x, y)
    assert r.success_rate >= 0.9
    assert (r.adv_pred[r.success] == runner_up.numpy()[r.success]).mean() >= 0.8
    nine = (y == 9).numpy()
    assert nine.any() and r.success[nine].all()


def test_adversarial_margin_masks_the_reference_class():
    logits = torch.tensor([[-5.0, -7.0, -6.0], [1.0, 3.0, 2.0]])
    ref = torch.tensor([2, 2])
    # the other logits are all negative in row 0: a multiply-by-zero mask would get this wrong
    assert torch.allclose(adversarial_margin(logits, ref, False), torch.tensor([1.0, 1.0]))
    assert torch.allclose(adversarial_margin(logits, ref, True), torch.tensor([-1.0, -1.0]))


@pytest.mark.parametrize("norm,eps", [("l2", None), ("l2", 0.5), ("linf", 10 / 255)])
def test_directed_rounding_stays_on_grid_and_in_ball(norm, eps):
    from advgui.core.attacks.base import _directed_round
    g = torch.Generator().manual_seed(0)
    clean = (torch.rand(16, 1, 8, 8, generator=g) * 255).round() / 255
    delta = torch.randn(16, 1, 8, 8, generator=g) * 0.05
    if eps is not None:
        from advgui.core.attacks.norms import project
        delta = project(delta, eps, norm)
    adv = (clean + delta).clamp(0, 1)
    grad = torch.randn(16, 1, 8, 8, generator=g)
    r = _directed_round(clean, adv, grad, eps, norm)
    a = adv * 255
    assert torch.equal(r, r.round()) and r.min() >= 0 and r.max() <= 255
    assert ((r - a).abs() < 1 + 1e-4).all()               # floor or ceil of the float value
    d = (r - (clean * 255).round()).flatten(1) / 255
    if eps is not None:
        size = d.norm(dim=1) if norm == "l2" else d.abs().amax(1)
        assert size.max() <= eps + 1e-5
    else:   # unbounded: every value moved the way the gradient points
        moved = r - a
        assert ((moved.abs() < 2e-3) | (torch.sign(moved) == torch.sign(grad))).all()


def test_bad_parameters_are_clear_errors(demo_model, digits):
    x, y = digits
    with pytest.raises(AttackError, match="overshoot"):
        make_attack("deepfool", overshoot=-0.1).run(demo_model, x[:2], y[:2])
    with pytest.raises(AttackError, match="candidates"):
        make_attack("deepfool", candidates=0).run(demo_model, x[:2], y[:2])
    with pytest.raises(AttackError, match="norm"):
        make_attack("deepfool", norm="l1").run(demo_model, x[:2], y[:2])
    with pytest.raises(AttackError, match="binary_steps"):
        make_attack("cw", binary_steps=0).run(demo_model, x[:2], y[:2])
    with pytest.raises(AttackError, match="lr"):
        make_attack("cw", lr=0.0).run(demo_model, x[:2], y[:2])
    with pytest.raises(AttackError, match="confidence"):
        make_attack("cw", confidence=-1.0).run(demo_model, x[:2], y[:2])
    assert make_attack("C&W").name == make_attack("cw-l2").name == "cw"


def test_one_parameter_set_configures_both():
    """The GUI/CLI pass one parameter set: unused ones are ignored; C&W's fixed norm is not a parameter."""
    shared = dict(eps=None, norm="l2", steps=7, overshoot=0.05, c=2.0, binary_steps=2, lr=0.02, decay=1.0)
    cw = make_attack("cw", **shared)
    assert (cw.steps, cw.c, cw.binary_steps, cw.lr, cw.norm) == (7, 2.0, 2, 0.02, "l2")
    assert "norm" not in cw.params()
    df = make_attack("deepfool", **dict(shared, norm="linf"))
    assert (df.steps, df.overshoot, df.norm, df.eps) == (7, 0.05, "linf", None)
