"""Minimal-norm attacks: DeepFool (L2 / L∞) and Carlini–Wagner L2.

- DeepFool: Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool deep
  neural networks", CVPR 2016 (Algorithms 2 and 3; overshoot on the total perturbation, as in §3.2).
- C&W: Carlini, Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017
  (the L2 attack of §V.A: tanh change of variables, objective f6, Adam, binary search over c).

Both look for the smallest perturbation that changes the decision, so their float result sits right on
the decision boundary, where rounding to 8 bits often undoes it. Both therefore end with
:func:`~advgui.core.attacks.base.push_until_rounded_success`, which grows the perturbation of those
samples just enough for the exported 8-bit image to stay adversarial.

Telemetry: the per-sample ``loss`` in each StepInfo is the *adversarial logit margin* of the evaluated
images, oriented like every other attack's loss (ascending helps the attack; > 0 means adversarial):
untargeted ``max_{j≠y} Z_j − Z_y``, targeted ``Z_t − max_{j≠t} Z_j``. It does not depend on C&W's
constant c, so the curve stays comparable across binary-search rounds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Generator, Optional

import torch

from .base import Attack, AttackContext, AttackError, StepInfo, push_until_rounded_success
from .norms import project

_TINY = 1e-12


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def adversarial_margin(logits: torch.Tensor, ref: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-sample logit margin, > 0 when adversarial. ``ref`` is the true label (untargeted) or the
    target. The reference class is masked with -inf, so it works for any class index, the last included."""
    z_ref = logits.gather(1, ref[:, None])[:, 0]
    z_other = logits.scatter(1, ref[:, None], -float("inf")).amax(1)
    return z_ref - z_other if targeted else z_other - z_ref


class _MarginTelemetry:
    """Mixin: the final StepInfo reports the adversarial margin too, like every step of these attacks."""

    def telemetry_loss(self, ctx: AttackContext, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ref = ctx.target[idx] if ctx.targeted else ctx.labels[idx]
        return adversarial_margin(logits, ref, ctx.targeted)


# -- DeepFool -------------------------------------------------------------------------------------------

@dataclass
class DeepFool(_MarginTelemetry, Attack):
    """DeepFool: repeatedly linearise the classifier and step onto the nearest linearised boundary.

    Batched over the whole batch; a sample leaves the active set as soon as it is misclassified. The
    candidate classes are the ``candidates`` highest-scoring classes of the clean image other than the
    true one. The gradients of the ``K`` logit differences come from one forward and ``K`` backward passes
    through the same graph (measured on the CPU, demo model, 256 digits: 1.1× faster than one batched
    ``is_grads_batched`` backward, 2.2× faster than repeating the batch K times). When many samples have
    just crossed, the rest get a fresh forward instead of K backward passes through the whole batch.

    Box constraint: gradient components that would push a pixel already at 0 or 1 further out are left
    out of the linearisation, so the step is computed for the pixels that can actually move (on the demo:
    4 iterations instead of 10, median L2 within 2%).

    ``overshoot`` scales the *total* perturbation: x = clip(x0 + (1 + overshoot)·r_total). ``eps`` None gives
    the unbounded minimal perturbation; with ``eps`` the iterate is projected onto the ε-ball every step,
    and a sample stops once a step gains less than 1% of its margin (it has settled on the ε-sphere short
    of the boundary; those still closing in gain ≥ 10% a step).
    """

    name: ClassVar[str] = "deepfool"
    minimal_norm: ClassVar[bool] = True
    supports_targeted: ClassVar[bool] = False
    norms: ClassVar[tuple[str, ...]] = ("l2", "linf")

    steps: int = 50
    overshoot: float = 0.02
    candidates: int = 10
    norm: str = "l2"
    eps: Optional[float] = None

    def validate(self, classifier: torch.nn.Module, images: torch.Tensor) -> None:
        super().validate(classifier, images)
        if not math.isfinite(self.overshoot) or self.overshoot < 0:
            raise AttackError(f"overshoot must be a non-negative number, got {self.overshoot}")
        if self.candidates < 1:
            raise AttackError(f"candidates must be at least 1, got {self.candidates}")

    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        if ctx.num_classes < 2:
            raise AttackError("DeepFool needs a classifier with at least two classes")
        clean, labels = ctx.clean, ctx.labels
        n = clean.shape[0]
        adv = clean.clone()
        if self.eps == 0:
            return adv
        k = min(int(self.candidates), ctx.num_classes - 1)
        # top-k of the clean logits with the true class masked out: correct whatever the true class is
        cand = ctx.clean_logits.detach().float().scatter(1, labels[:, None], -float("inf")).topk(k, 1).indices
        scale = 1.0 + float(self.overshoot)
        idx = torch.arange(n, device=clean.device)
        x = clean.clone()
        r_tot = torch.zeros_like(clean)
        found = torch.zeros(n, dtype=torch.bool, device=clean.device)
        final_step = 0
        prev_margin: Optional[torch.Tensor] = None
        for t in range(self.steps + 1):
            if t == self.steps:
                break  # the last iterate is re-checked by the 8-bit step and finish()
            xg = x.detach().requires_grad_(True)
            logits = ctx.forward(xg)
            margin = adversarial_margin(logits.detach(), labels[idx], False)
            succ = ctx.success_of(logits.detach(), idx)
            if (yield from ctx.report(t, 0, idx, logits.detach(), margin, x,
                                      adv.clone() if ctx.tele.keep_images else None)):
                ctx.final_step = t
                return adv
            found[idx[succ]] = True
            keep = ~succ
            if self.eps is not None:
                # Within ε the projected iterates of a sample either close in on the boundary (the margin
                # shrinks by ≥ 10% a step) or settle on the ε-sphere short of it; stop the latter once a
                # step gains < 1% of the margin, instead of spending the remaining steps on them.
                if prev_margin is not None:
                    keep &= (margin - prev_margin) >= 0.01 * margin.abs()
                prev_margin = margin
            n_keep = int(keep.sum())
            if n_keep == 0:
                break
            rows: Optional[torch.Tensor] = None    # rows of ``logits`` still to differentiate
            if n_keep < idx.numel():
                idx, x = idx[keep], x[keep]
                if prev_margin is not None:
                    prev_margin = prev_margin[keep]
                rows = keep
                # backward over the whole graph costs K passes for the samples that just crossed; when
                # more than 1/(K+1) of the batch crossed, one new forward on the rest is cheaper
                if n_keep * (k + 1) < keep.numel() * k:
                    xg = x.detach().requires_grad_(True)
                    logits = ctx.forward(xg)
                    rows = None
            grads = _candidate_gradients(ctx, xg, logits, cand[idx], labels[idx], rows)
            with torch.no_grad():
                lg = logits.detach() if rows is None else logits.detach()[rows]
                f = lg.gather(1, cand[idx]) - lg.gather(1, labels[idx][:, None])     # (a, K), < 0
                # leave out components that would push a pixel beyond [0, 1]
                xs = x[:, None]
                grads = torch.where(((xs <= 0) & (grads < 0)) | ((xs >= 1) & (grads > 0)),
                                    torch.zeros_like(grads), grads)
                flat = grads.flatten(2)
                dual = flat.norm(dim=2) if self.norm == "l2" else flat.abs().sum(2)
                dist = f.abs() / dual.clamp_min(_TINY)
                dist = torch.where(dual > _TINY, dist, torch.full_like(dist, float("inf")))
                best = dist.argmin(1)
                w = grads[torch.arange(best.numel(), device=best.device), best]
                d = dist.gather(1, best[:, None])[:, 0]
                movable = torch.isfinite(d)   # False: zero gradient towards every candidate, nowhere to go
                d = torch.where(movable, d + 1e-4, torch.zeros_like(d))  # 1e-4: the paper's code
                if self.norm == "l2":
                    wn = w.flatten(1).norm(dim=1).clamp_min(_TINY)
                    r = w * _view(d / wn, w)
                else:
                    r = w.sign() * _view(d, w)
                r_tot[idx] += r
                delta = scale * r_tot[idx]
                if self.eps is not None:
                    delta = project(delta, self.eps, self.norm)
                x = (clean[idx] + delta).clamp(0, 1)
                adv[idx] = x
            ctx.steps_run += 1
            ctx.tele.updates += 1
            final_step = t + 1
            if not bool(movable.all()):
                idx, x = idx[movable], x[movable]
                if prev_margin is not None:
                    prev_margin = prev_margin[movable]
                if idx.numel() == 0:
                    break
        ctx.final_step = final_step
        return push_until_rounded_success(ctx, adv, self.eps, self.norm, found=found)


def _candidate_gradients(ctx: AttackContext, xg: torch.Tensor, logits: torch.Tensor, cand: torch.Tensor,
                         labels: torch.Tensor, rows: Optional[torch.Tensor]) -> torch.Tensor:
    """Gradients w.r.t. the input of Z_cand[k] − Z_label for every candidate k: (a, K, C, H, W).

    ``rows`` (a mask over the rows of ``logits``) selects the samples to differentiate when the graph
    still holds samples that have already crossed; those get a zero output gradient and are dropped.
    ``cand`` and ``labels`` are given for the selected samples only."""
    k = cand.shape[1]
    sel = torch.arange(logits.shape[0], device=logits.device)
    if rows is not None:
        sel = sel[rows]
    grads = []
    for j in range(k):
        go = torch.zeros_like(logits)
        go[sel, cand[:, j]] = 1.0
        go[sel, labels] -= 1.0
        if logits.requires_grad:
            g, = torch.autograd.grad(logits, xg, go, retain_graph=j < k - 1)
        else:   # the model cut the graph (hard threshold): zero gradient, not an error
            g = torch.zeros_like(xg)
        ctx.counter.backward += 1
        grads.append(g if rows is None else g[rows])
    return torch.stack(grads, 1)


# -- Carlini & Wagner L2 ------------------------------------------------------------------------------------

@dataclass
class CarliniWagnerL2(_MarginTelemetry, Attack):
    """Carlini & Wagner's L2 attack.

    Minimises ||x − x0||² + c·f(x) over x = (tanh(w) + 1)/2 with Adam, where
    f = max(Z_y − max_{j≠y} Z_j, −κ) (untargeted) or max(max_{j≠t} Z_j − Z_t, −κ) (targeted) on logits.
    Each sample has its own c, binary-searched over ``binary_steps`` rounds of ``steps`` Adam steps:
    success → upper bound, c = (lo + hi)/2; failure → lower bound, c ×10 until an upper bound exists.
    The smallest-L2 successful iterate of each sample over all rounds is returned; samples never fooled
    are returned unchanged. A success needs a margin above κ (``confidence``).

    ``warm_start`` (default): a round starts each sample from its best adversarial so far instead of from
    the clean image (the paper restarts, with Adam reset, every round). With the paper's budget of up to
    10,000 steps that makes no difference; with 100 steps a round, where pixels saturated at 0 or 1 move
    slowly in tanh space, continuing gives smaller perturbations for less compute (measured on the demo).

    ``abort_early``: a sample leaves the current round when (1) its objective improved by less than 0.01%
    over the last ``steps/10`` steps (the paper's test, per sample), or (2) it is not adversarial and its
    margin fell over two such windows in a row (it slides back towards the clean image: c is too small
    for it, and the round can only record a failure). Finished samples cost nothing.

    ``eps`` optionally bounds the L2 norm of the result (projected by the harness). The telemetry loss is
    the adversarial margin (see the module docstring); ``restart`` is the binary-search round, ``step``
    the Adam step within it.
    """

    name: ClassVar[str] = "cw"
    minimal_norm: ClassVar[bool] = True
    supports_targeted: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = ("l2",)
    norm: ClassVar[str] = "l2"

    steps: int = 100
    binary_steps: int = 5
    c: float = 1.0
    confidence: float = 0.0
    lr: float = 0.01
    abort_early: bool = True
    warm_start: bool = True
    eps: Optional[float] = None

    def validate(self, classifier: torch.nn.Module, images: torch.Tensor) -> None:
        super().validate(classifier, images)
        if self.binary_steps < 1:
            raise AttackError(f"binary_steps must be at least 1, got {self.binary_steps}")
        for pname in ("c", "lr"):
            v = getattr(self, pname)
            if not math.isfinite(v) or v <= 0:
                raise AttackError(f"{pname} must be a positive number, got {v}")
        if not math.isfinite(self.confidence) or self.confidence < 0:
            raise AttackError(f"confidence must be a non-negative number, got {self.confidence}")

    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        if ctx.num_classes < 2:
            raise AttackError("C&W needs a classifier with at least two classes")
        clean = ctx.clean
        n = clean.shape[0]
        dev = clean.device
        if self.eps == 0:
            return clean.clone()
        targeted = ctx.targeted
        ref = ctx.target if targeted else ctx.labels
        kappa = float(self.confidence)
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        window = max(self.steps // 10, 1)

        const = torch.full((n,), float(self.c), device=dev)
        lo = torch.zeros(n, device=dev)
        hi = torch.full((n,), float("inf"), device=dev)
        best_l2 = torch.full((n,), float("inf"), device=dev)
        best_adv = clean.clone()
        w0 = torch.atanh((clean * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        best_w = w0.clone()

        for rnd in range(self.binary_steps):
            # warm start: a sample goes on from its best adversarial so far (the paper restarts from x0)
            warm = torch.isfinite(best_l2) if self.warm_start else torch.zeros(n, dtype=torch.bool, device=dev)
            idx = torch.arange(n, device=dev)
            w = torch.where(_view(warm, w0), best_w, w0)
            m = torch.zeros_like(w)
            v = torch.zeros_like(w)
            c_act, warm_act = const.clone(), warm.clone()
            prev_obj = torch.full((n,), float("inf"), device=dev)
            prev_margin = torch.full((n,), -float("inf"), device=dev)
            falling = torch.zeros(n, dtype=torch.bool, device=dev)
            round_succ = torch.zeros(n, dtype=torch.bool, device=dev)
            done = 0
            for s in range(self.steps):
                x = (torch.tanh(w) + 1) / 2

                def loss_fn(logits: torch.Tensor, ii: torch.Tensor, c_act=c_act) -> torch.Tensor:
                    f = (-adversarial_margin(logits, ref[ii], targeted)).clamp_min(-kappa)
                    return c_act * f

                cf, gx, logits = ctx.loss_and_grad(x, idx, loss_fn)
                with torch.no_grad():
                    d = x - clean[idx]
                    l2sq = d.flatten(1).pow(2).sum(1)
                    obj = l2sq + cf
                    margin = adversarial_margin(logits, ref[idx], targeted)
                    succ = margin > kappa
                    l2 = l2sq.sqrt()
                    better = succ & (l2 < best_l2[idx])
                    best_l2[idx[better]] = l2[better]
                    best_adv[idx[better]] = x[better]
                    best_w[idx[better]] = w[better]
                    # a warm-started sample starts adversarial: its round counts as a success for c only
                    # if it is still (or again) adversarial after the first window
                    counts = succ & (~warm_act | (s >= window))
                    round_succ[idx[counts]] = True
                full = None
                if ctx.tele.keep_images:
                    full = best_adv.clone()
                    full[idx] = x
                if (yield from ctx.report(s, rnd, idx, logits, margin, x, full)):
                    ctx.final_step = s
                    return best_adv
                with torch.no_grad():
                    # Adam on w; d/dw of (tanh(w)+1)/2 is (1 − tanh²(w))/2 = 2x(1 − x)
                    g = (gx + 2 * d) * (2 * x * (1 - x))
                    m.mul_(beta1).add_(g, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    t = s + 1
                    w = w - self.lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + adam_eps)
                ctx.steps_run += 1
                ctx.tele.updates += 1
                done = t
                if self.abort_early and t % window == 0 and t < self.steps:
                    # (1) the paper's test per sample; (2) sliding back towards x0 (see the class docstring)
                    stalled = torch.isfinite(prev_obj) & (obj > prev_obj - 1e-4 * prev_obj.abs())
                    fell = ~succ & (margin < prev_margin)
                    stop = stalled | (fell & falling)
                    prev_obj, prev_margin, falling = obj, margin, fell
                    if bool(stop.any()):
                        keep = ~stop
                        if not bool(keep.any()):
                            break
                        idx, w, m, v = idx[keep], w[keep], m[keep], v[keep]
                        c_act, warm_act = c_act[keep], warm_act[keep]
                        prev_obj, prev_margin, falling = prev_obj[keep], prev_margin[keep], falling[keep]
            ctx.final_step = done
            # per-sample binary search on c
            hi = torch.where(round_succ, torch.minimum(hi, const), hi)
            lo = torch.where(round_succ, lo, torch.maximum(lo, const))
            const = torch.where(torch.isfinite(hi), (lo + hi) / 2, const * 10)
        found = torch.isfinite(best_l2) if self.eps is None else best_l2 <= self.eps + 1e-6
        return push_until_rounded_success(ctx, best_adv, self.eps, self.norm, found=found)
