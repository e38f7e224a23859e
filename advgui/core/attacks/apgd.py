"""Auto-PGD: APGD-CE, APGD-DLR and the targeted APGD-T (L∞ and L2).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", ICML 2020 (§3: the step-size schedule, Algorithm 1; §4: the DLR loss and its targeted form).

What makes it "auto":
- the step size η starts at 2ε and is halved at *checkpoints* (at 22%, 41%, 57%, ... of the iterations)
  for every sample whose loss rose in fewer than ρ = 75% of the steps since the last checkpoint, or whose
  best loss did not improve since the last checkpoint while η stayed the same; such a sample restarts
  from the best point it has found;
- each update mixes the projected gradient step with the previous move: x ← P(x + α(z − x) +
  (1 − α)(x − x_prev)) with α = 0.75 (the paper's momentum), z = P(x + η·dir(∇));
- restarts (and APGD-T's target classes) run only on the samples that are still robust, and each sample
  keeps its best result: a success beats a failure, otherwise the higher loss wins.

Losses, oriented like every advgui loss (ascending helps the attack):
- ``ce``: cross-entropy to the true class (targeted: minus cross-entropy to the target);
- ``dlr``: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3), invariant to shifting and scaling the logits, so a
  saturated softmax or rescaled logits cannot hide the gradient; targeted:
  −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2). With fewer than 3 (untargeted) or 4 (targeted) classes the
  denominator is 1: the plain logit margin.

APGD-T attacks, for every sample, each of the ``n_targets`` classes the clean image scores highest
after the true one, one after the other (StepInfo.restart counts target × restarts); success is still
*misclassification*, as in AutoAttack. A model whose output carries no gradient (a hard threshold, a
detached forward) is treated as having a zero gradient: the attack then only explores its random start,
and the suite's Square stage and sanity checks say what that means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Generator, Optional

import torch
import torch.nn.functional as F

from .base import Attack, AttackContext, AttackError, StepInfo, per_sample_generators
from .norms import project, random_start, step_direction

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_TINY = 1e-12


def checkpoints(steps: int) -> list[int]:
    """Iterations after which APGD decides on halving the step size: ⌈p_j·steps⌉ with p_0 = 0,
    p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) (Croce & Hein 2020, §3.2)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    out: list[int] = []
    for q in p[1:]:
        w = int(math.ceil(q * steps - 1e-9))   # 0.22 * 100 is 22.000000000000004 in floats
        if 0 < w < steps and (not out or w > out[-1]):
            out.append(w)
    return out


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Difference-of-logits-ratio loss per sample, larger = closer to fooling the model."""
    z = logits.float()
    n_cls = z.shape[1]
    z_y = z.gather(1, labels[:, None])[:, 0]
    srt = z.sort(1, descending=True).values
    if target is None:
        z_other = z.scatter(1, labels[:, None], -float("inf")).amax(1)
        den = (srt[:, 0] - srt[:, 2]) if n_cls >= 3 else torch.ones_like(z_y)
        return -(z_y - z_other) / (den + _TINY)
    z_t = z.gather(1, target[:, None])[:, 0]
    den = (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3])) if n_cls >= 4 else torch.ones_like(z_y)
    return -(z_y - z_t) / (den + _TINY)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    if target is None:
        return F.cross_entropy(logits.float(), labels, reduction="none")
    return -F.cross_entropy(logits.float(), target, reduction="none")


LOSSES = {"ce": ce_loss, "dlr": dlr_loss}


def safe_loss_and_grad(ctx: AttackContext, x: torch.Tensor, idx: torch.Tensor, loss_fn: LossFn
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward + backward like ``ctx.loss_and_grad``, but a model whose output carries no gradient, or
    whose gradient is NaN/inf, gives a zero gradient instead of an exception or NaN images."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = ctx.forward(xg)
        loss = loss_fn(logits, idx)
        grad = None
        if loss.requires_grad:
            grad, = torch.autograd.grad(loss.sum(), xg, allow_unused=True)
            ctx.counter.backward += 1
    grad = torch.zeros_like(x) if grad is None else torch.nan_to_num(grad.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    return loss.detach(), grad, logits.detach()


def _proj(x: torch.Tensor, clean: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    return (clean + project(x - clean, eps, norm)).clamp(0, 1)


def _bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


class Best:
    """Each sample's best result over runs (restarts, targets): a success beats a failure, then the higher
    loss. Kept on the attack device, indexed by the sample's position in the whole batch."""

    def __init__(self, clean: torch.Tensor) -> None:
        n = clean.shape[0]
        self.x = clean.clone()
        self.loss = torch.full((n,), -float("inf"), device=clean.device)
        self.succ = torch.zeros(n, dtype=torch.bool, device=clean.device)

    def offer(self, idx: torch.Tensor, x: torch.Tensor, loss: torch.Tensor, succ: torch.Tensor) -> None:
        loss = torch.nan_to_num(loss, nan=-float("inf"))
        better = (succ & ~self.succ[idx]) | ((succ == self.succ[idx]) & (loss > self.loss[idx]))
        if bool(better.any()):
            j = idx[better]
            self.x[j] = x[better]
            self.loss[j] = loss[better]
            self.succ[j] = succ[better]


def apgd_run(ctx: AttackContext, best: Best, idx: torch.Tensor, x: torch.Tensor, loss_fn: LossFn, *,
             eps: float, norm: str, steps: int, restart: int, stop_on_success: bool, rho: float = 0.75,
             alpha: float = 0.75) -> Generator[StepInfo, Optional[bool], bool]:
    """One APGD run from the start points ``x`` of the samples ``idx``. Updates ``best``; yields a StepInfo
    per iteration; returns True when the consumer asked to stop."""
    clean = ctx.clean[idx]
    ckpts = checkpoints(steps)
    loss, grad, logits = safe_loss_and_grad(ctx, x, idx, loss_fn)
    succ = ctx.success_of(logits, idx)
    best.offer(idx, x, loss, succ)

    def full_images() -> Optional[torch.Tensor]:
        if not ctx.tele.keep_images:
            return None
        out = best.x.clone()
        out[idx] = x
        return out

    if (yield from ctx.report(0, restart, idx, logits, loss, x, full_images())):
        return True
    m = idx.numel()
    dev = x.device
    eta = torch.full((m,), 2.0 * eps, device=dev)
    x_prev = x.clone()
    x_max, loss_max, grad_max = x.clone(), torch.nan_to_num(loss.clone(), nan=-float("inf")), grad.clone()
    loss_prev = loss_max.clone()
    loss_max_ckpt = loss_max.clone()
    reduced_ckpt = torch.zeros(m, dtype=torch.bool, device=dev)
    n_rise = torch.zeros(m, device=dev)
    last_ckpt = 0
    for k in range(steps):
        if stop_on_success and bool(succ.any()):
            keep = ~succ
            if not bool(keep.any()):
                ctx.final_step = k
                return False
            (idx, clean, x, x_prev, grad, eta, x_max, loss_max, grad_max, loss_prev, loss_max_ckpt, reduced_ckpt,
             n_rise) = (t[keep] for t in (idx, clean, x, x_prev, grad, eta, x_max, loss_max, grad_max, loss_prev,
                                          loss_max_ckpt, reduced_ckpt, n_rise))
        with torch.no_grad():
            z = _proj(x + _bview(eta, x) * step_direction(grad, norm), clean, eps, norm)
            if k > 0:
                z = _proj(x + alpha * (z - x) + (1 - alpha) * (x - x_prev), clean, eps, norm)
            x_prev, x = x, z
        last = k == steps - 1
        if last:   # the last iterate needs a loss, not a gradient
            with torch.no_grad():
                logits = ctx.forward(x)
                loss = loss_fn(logits, idx).detach()
        else:
            loss, grad, logits = safe_loss_and_grad(ctx, x, idx, loss_fn)
        ctx.steps_run += 1
        ctx.tele.updates += 1
        succ = ctx.success_of(logits, idx)
        best.offer(idx, x, loss, succ)
        lf = torch.nan_to_num(loss, nan=-float("inf"))
        n_rise += (lf > loss_prev).float()
        loss_prev = lf
        improved = lf > loss_max
        if bool(improved.any()):
            x_max[improved], loss_max[improved] = x[improved], lf[improved]
            if not last:
                grad_max[improved] = grad[improved]
        if (yield from ctx.report(k + 1, restart, idx, logits, loss, x, full_images())):
            ctx.final_step = k + 1
            return True
        if ckpts and k + 1 == ckpts[0]:
            window = ckpts.pop(0) - last_ckpt
            last_ckpt += window
            oscillating = n_rise < rho * window
            stalled = ~reduced_ckpt & (loss_max <= loss_max_ckpt)
            reduce = oscillating | stalled
            eta = torch.where(reduce, eta / 2, eta)
            if bool(reduce.any()):   # restart these samples from their best point, without momentum
                x = torch.where(_bview(reduce, x), x_max, x)
                x_prev = torch.where(_bview(reduce, x), x_max, x_prev)
                grad = torch.where(_bview(reduce, x), grad_max, grad)
            reduced_ckpt = reduce
            loss_max_ckpt = loss_max.clone()
            n_rise.zero_()
    ctx.final_step = steps
    return False


@dataclass
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020): PGD whose step size adapts to progress, with momentum and restarts."""

    name: ClassVar[str] = "apgd"
    eps: float = 8 / 255
    steps: int = 100
    norm: str = "linf"
    loss: str = "ce"
    restarts: int = 1
    stop_on_success: bool = True
    rho: float = 0.75

    def validate(self, classifier: torch.nn.Module, images: torch.Tensor) -> None:
        super().validate(classifier, images)
        if self.loss not in LOSSES:
            raise AttackError(f"{self.name}: loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0 < self.rho <= 1:
            raise AttackError(f"{self.name}: rho must be in (0, 1], got {self.rho}")

    def _loss_fn(self, ctx: AttackContext, target: Optional[torch.Tensor] = None) -> LossFn:
        fn = LOSSES[self.loss]
        tgt = target if target is not None else ctx.target

        def loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return fn(logits, ctx.labels[idx], None if tgt is None else tgt[idx])

        return loss

    def telemetry_loss(self, ctx: AttackContext, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self._loss_fn(ctx)(logits, idx)

    def _runs(self, ctx: AttackContext) -> list[Optional[torch.Tensor]]:
        """The target of each run (None: the user's target or untargeted)."""
        return [None]

    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        clean = ctx.clean
        best = Best(clean)
        if self.eps == 0:
            return best.x
        gens = per_sample_generators(ctx.seed, clean)
        run = 0
        for target in self._runs(ctx):
            loss_fn = self._loss_fn(ctx, target)
            for _ in range(self.restarts):
                idx = (~best.succ).nonzero()[:, 0]
                if idx.numel() == 0:
                    return best.x
                x0 = random_start(clean[idx], self.eps, self.norm, [gens[i] for i in idx.tolist()])
                stop = yield from apgd_run(ctx, best, idx, x0, loss_fn, eps=self.eps, norm=self.norm,
                                           steps=self.steps, restart=run, stop_on_success=self.stop_on_success,
                                           rho=self.rho)
                run += 1
                if stop:
                    return best.x
        return best.x


@dataclass
class APGDDLR(APGD):
    """APGD on the DLR loss (shift- and scale-invariant logit margin; Croce & Hein 2020)."""

    name: ClassVar[str] = "apgd-dlr"
    loss: str = "dlr"


@dataclass
class APGDT(APGD):
    """APGD-T: targeted DLR towards each of the n_targets classes the model ranks highest after the true one."""

    name: ClassVar[str] = "apgd-t"
    supports_targeted: ClassVar[bool] = False
    loss: str = "dlr"
    n_targets: int = 9

    def validate(self, classifier: torch.nn.Module, images: torch.Tensor) -> None:
        super().validate(classifier, images)
        if self.n_targets < 1:
            raise AttackError(f"{self.name}: n_targets must be at least 1, got {self.n_targets}")

    def telemetry_loss(self, ctx: AttackContext, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return dlr_loss(logits, ctx.labels[idx])

    def _runs(self, ctx: AttackContext) -> list[Optional[torch.Tensor]]:
        k = min(int(self.n_targets), ctx.num_classes - 1)
        if k < 1:
            raise AttackError(f"{self.name} needs a classifier with at least two classes")
        ranked = ctx.clean_logits.detach().float().scatter(1, ctx.labels[:, None], -float("inf")).topk(k, 1).indices
        return [ranked[:, j].contiguous() for j in range(k)]
