"""APGD-CE / APGD-DLR / APGD-T and Square: bounds, strength, determinism per image, stop requests,
targeted mode, telemetry over queries, models without gradients or with NaN outputs.

Small models and few images/steps so the file runs in seconds on two CPU cores.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from advgui.core.attacks import ATTACKS, AttackError, attack_class, make_attack
from advgui.core.attacks.apgd import checkpoints, dlr_loss
from advgui.core.attacks.square import p_schedule
from advgui.core.models import Classifier

NEW = ("apgd", "apgd-dlr", "apgd-t", "square")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def small(name: str, **kw):
    base = {"steps": 10} if name != "square" else {"queries": 150}
    if name == "apgd-t":
        base["n_targets"] = 2
    base.update(kw)
    return make_attack(name, **base)


def wrap(net: nn.Module, size: int = 4, classes: int = 3) -> Classifier:
    return Classifier(net, mean=[0.0], std=[1.0], input_size=(size, size), channels=1,
                      class_names=[str(i) for i in range(classes)], spec="tiny").eval()


class Linear(nn.Module):
    def __init__(self, d: int = 16, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(d, classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(classes, d, generator=g))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.prep(x).flatten(1) - 0.5)

    def prep(self, x):
        return x


class Threshold(Linear):
    """A hard threshold: the output carries no gradient at all."""

    def prep(self, x):
        return (x > 0.5).float()


class NaNOut(Linear):
    """NaN logits for images whose first pixel is bright."""

    def forward(self, x):
        out = super().forward(x)
        bad = (x.flatten(1)[:, 0] > 0.5)[:, None]
        return torch.where(bad, torch.full_like(out, float("nan")), out)


def rand_images(n: int = 8, size: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=g) * 255).round() / 255


def own_labels(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.fixture(scope="module")
def demo_set(demo_model, digits):
    x, y = digits
    return demo_model, x[:12], y[:12]


def test_registered_with_aliases_and_classvars():
    for name in NEW:
        cls = ATTACKS[name]
        assert cls.name == name and set(cls.norms) == {"linf", "l2"} and not cls.minimal_norm
    assert attack_class("APGD-CE") is ATTACKS["apgd"]
    assert make_attack("apgd-dlr").loss == "dlr"
    assert ATTACKS["apgd-t"].supports_targeted is False and ATTACKS["square"].supports_targeted


def test_checkpoints_follow_the_paper():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == []
    assert all(0 < w < 50 for w in checkpoints(50))


def test_dlr_is_invariant_to_shift_and_scale_and_positive_when_fooled():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 10, generator=g)
    y = torch.arange(6)
    assert torch.allclose(dlr_loss(z, y), dlr_loss(3 * z + 7, y), atol=1e-5)
    fooled = z.argmax(1) != y
    assert bool(((dlr_loss(z, y) > 0) == fooled).all())


def test_square_schedule_shrinks():
    ps = [p_schedule(0.8, q, 5000) for q in (0, 10, 100, 1000, 4999)]
    assert ps[0] == 0.8 and all(a >= b for a, b in zip(ps, ps[1:])) and ps[-1] < 0.01


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 2.0)])
def test_bounds_and_strength(demo_set, name, norm, eps):
    model, x, y = demo_set
    r = (small(name, eps=eps, norm=norm) if name != "square" else small(name, eps=eps, norm=norm, queries=400)
         ).run(model, x, y)
    d = (r.adv - r.clean).flatten(1)
    assert float(r.adv.min()) >= 0 and float(r.adv.max()) <= 1
    if norm == "linf":
        assert float(d.abs().max()) <= eps + 1e-6
    else:
        assert float(d.norm(dim=1).max()) <= eps + 1e-4
    # the demo model is undefended: gradient attacks fool most images; 150 queries of Square some
    assert r.success.mean() > 0.4 if name != "square" else r.success.any()
    if name == "square":
        assert r.n_backward == 0             # score-based: never a gradient


def test_apgd_at_least_as_strong_as_fgsm_and_eps_zero_changes_nothing(demo_set):
    model, x, y = demo_set
    fgsm = make_attack("fgsm", eps=0.08).run(model, x, y)
    apgd = make_attack("apgd", eps=0.08, steps=20).run(model, x, y)
    assert apgd.success.sum() >= fgsm.success.sum()
    for name in NEW:
        r = small(name, eps=0.0).run(model, x, y)
        assert torch.equal(r.adv, r.clean)


@pytest.mark.parametrize("name", ["apgd", "apgd-t", "square"])
def test_one_image_alone_or_in_a_batch(demo_set, name):
    model, x, y = demo_set
    atk = small(name, eps=0.06)
    batch = atk.run(model, x[:5], y[:5], seed=3)
    alone = atk.run(model, x[2:3], y[2:3], seed=3)
    assert torch.allclose(batch.adv[2], alone.adv[0], atol=1e-5)


@pytest.mark.parametrize("name", NEW)
def test_stop_request_returns_best_so_far(demo_set, name):
    model, x, y = demo_set
    atk = small(name, eps=0.03, stop_on_success=False) if name != "apgd-t" else small(name, eps=0.03)
    if name == "square":
        atk.report_every = 1     # one StepInfo per query
    steps = atk.iter_steps(model, x, y)
    info = next(steps)
    seen = 1
    try:
        for _ in range(2):
            info = steps.send(False)
            seen += 1
        info = steps.send(True)
        while True:
            assert info.final
            info = steps.send(True)
    except StopIteration as fin:
        res = fin.value
    assert res.cancelled and res.steps_run <= 3 and seen == 3


def test_square_steps_count_queries_and_stop_per_sample(demo_set):
    model, x, y = demo_set
    infos = []
    r = make_attack("square", eps=0.15, queries=300, report_every=1).run(model, x, y, observer=infos.append)
    assert infos[0].step == 1 and all(i.total_steps == 300 for i in infos)
    steps = [i.step for i in infos if not i.final]
    assert steps == list(range(1, len(steps) + 1))
    blocks = []
    r10 = make_attack("square", eps=0.15, queries=300).run(model, x, y, observer=blocks.append)
    bsteps = [b.step for b in blocks if not b.final]
    assert len(blocks) < len(infos) and bsteps == sorted(set(bsteps))
    assert np.array_equal(r10.first_success_step, r.first_success_step)   # exact queries, whatever the blocks
    # fooled samples stop costing queries: later steps have fewer active samples than the first
    assert infos[-2].active.sum() < infos[1].active.sum()
    assert (r.first_success_step[r.success] >= 1).all()


def test_targeted_apgd_and_square_hit_the_target(demo_set):
    model, x, y = demo_set
    t = (y + 1) % 10
    r = make_attack("apgd", eps=0.3, steps=30).run(model, x, y, target=t)
    assert r.success.mean() >= 0.9 and (r.adv_pred[r.success] == t.numpy()[r.success]).all()
    s = make_attack("square", eps=0.3, queries=400).run(model, x[:4], y[:4], target=t[:4])
    assert (s.adv_pred[s.success] == t[:4].numpy()[s.success]).all() and s.success.any()
    with pytest.raises(AttackError):
        small("apgd-t").run(model, x, y, target=t)


def test_model_left_as_found(bn_classifier):
    clf = bn_classifier
    clf.train()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    x = rand_images(4, 28)
    for name in NEW:
        small(name, eps=0.05).run(clf, x, torch.zeros(4, dtype=torch.long))
    assert clf.training and all(p.requires_grad and p.grad is None for p in clf.parameters())
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())


def test_no_gradient_model_square_still_works_and_apgd_does_not_crash():
    clf = wrap(Threshold())
    x = rand_images(8)
    y = own_labels(clf, x)
    r = small("apgd", eps=0.3).run(clf, x, y)          # zero gradient: no crash, bounded
    assert float((r.adv - r.clean).abs().max()) <= 0.3 + 1e-6
    s = make_attack("square", eps=0.3, queries=200).run(clf, x, y)
    assert s.success.any() and s.n_backward == 0


def test_nan_outputs_do_not_crash_or_leak_nan():
    clf = wrap(NaNOut())
    x = rand_images(8)
    y = torch.zeros(8, dtype=torch.long)
    for name in NEW:
        r = small(name, eps=0.1).run(clf, x, y)
        assert torch.isfinite(r.adv).all()
        assert np.isfinite(r.linf).all()
