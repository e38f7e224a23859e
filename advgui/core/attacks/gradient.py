"""Gradient-sign family: FGSM, BIM (I-FGSM), PGD (L∞ / L2) and MI-FGSM, on one shared loop.

- FGSM: Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015.
- BIM / I-FGSM: Kurakin et al., "Adversarial examples in the physical world", 2016.
- PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
- MI-FGSM: Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generator, Optional

import torch

from .base import Attack, AttackContext, StepInfo, per_sample_generators
from .norms import project, random_start, step_direction

_TINY = 1e-12


def default_step_size(eps: float, steps: int) -> float:
    """2.5·ε/steps (Madry et al.'s rule of thumb), never more than ε."""
    return min(eps, 2.5 * eps / max(steps, 1))


def iterate(ctx: AttackContext, *, eps: float, norm: str, steps: int, step_size: float, rand_init: bool,
            restarts: int, stop_on_success: bool, momentum: Optional[float] = None
            ) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
    """Projected gradient ascent with per-sample early stop and best-of-restarts.

    Each restart only runs the samples that have not succeeded yet. With ``stop_on_success`` a sample
    leaves the batch as soon as it fools the model, so finished samples cost nothing. The best result
    of a sample over restarts is kept: a success beats a failure, otherwise the higher loss wins.
    """
    clean = ctx.clean
    n = clean.shape[0]
    device = clean.device
    best = clean.clone()
    best_loss = torch.full((n,), -float("inf"), device=device)
    best_succ = torch.zeros(n, dtype=torch.bool, device=device)
    gens = per_sample_generators(ctx.seed, clean) if rand_init else None
    if eps == 0:
        return best
    for restart in range(restarts):
        idx = (~best_succ).nonzero()[:, 0]
        if idx.numel() == 0:
            break
        x0 = clean[idx]
        if rand_init:
            x = random_start(x0, eps, norm, None if gens is None else [gens[i] for i in idx.tolist()])
        else:
            x = x0.clone()
        c = x0
        g_mom = torch.zeros_like(x) if momentum is not None else None
        final_step = 0
        for t in range(steps + 1):
            evaluate_only = t == steps
            if evaluate_only and restarts == 1:
                break  # the final iterate is evaluated by the re-check in finish()
            if evaluate_only:
                with torch.no_grad():
                    logits = ctx.forward(x)
                    loss = ctx.attack_loss(logits, idx)
                grad = None
            else:
                loss, grad, logits = ctx.loss_and_grad(x, idx)
            succ = ctx.success_of(logits, idx)
            # keep the best per sample: success first, then the loss
            better = (succ & ~best_succ[idx]) | ((succ == best_succ[idx]) & (loss > best_loss[idx]))
            if stop_on_success or evaluate_only or restarts > 1:
                upd = idx[better]
                best[upd] = x[better]
                best_loss[upd] = loss[better]
                best_succ[upd] = succ[better]
            full = None
            if ctx.tele.keep_images:
                full = best.clone()
                full[idx] = x
            if (yield from ctx.report(t, restart, idx, logits, loss, x, full)):
                if restarts == 1:
                    best[idx] = x   # cancelled: the current iterate is the best so far
                ctx.final_step = t
                return best
            if evaluate_only:
                break
            keep = ~succ if stop_on_success else torch.ones_like(succ)
            if stop_on_success and not bool(keep.all()):
                idx, x, c, grad = idx[keep], x[keep], c[keep], grad[keep]
                if g_mom is not None:
                    g_mom = g_mom[keep]
                if idx.numel() == 0:
                    break
            if g_mom is not None:
                # per-sample L1 normalisation, guarded against a zero gradient (batch-size independent)
                l1 = grad.abs().flatten(1).sum(1).clamp_min(_TINY).view(-1, *([1] * (grad.ndim - 1)))
                g_mom = momentum * g_mom + grad / l1
                direction = step_direction(g_mom, norm)
            else:
                direction = step_direction(grad, norm)
            x = (c + project(x + step_size * direction - c, eps, norm)).clamp(0, 1).detach()
            ctx.steps_run += 1
            ctx.tele.updates += 1
            final_step = t + 1
        ctx.final_step = final_step
        if restarts == 1 and idx.numel():
            best[idx] = x   # single run: the final iterate is the answer (re-checked in finish)
    return best


@dataclass
class FGSM(Attack):
    """Fast Gradient Sign Method: one step of size ε (L2: one normalised-gradient step, "FGM")."""

    name: ClassVar[str] = "fgsm"
    eps: float = 8 / 255
    norm: str = "linf"

    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        return (yield from iterate(ctx, eps=self.eps, norm=self.norm, steps=1, step_size=self.eps, rand_init=False,
                       restarts=1, stop_on_success=False))


@dataclass
class BIM(Attack):
    """Basic Iterative Method (I-FGSM): PGD without random start."""

    name: ClassVar[str] = "bim"
    eps: float = 8 / 255
    steps: int = 10
    step_size: Optional[float] = None
    norm: str = "linf"
    stop_on_success: bool = False

    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        a = self.step_size if self.step_size is not None else self.eps / self.steps
        return (yield from iterate(ctx, eps=self.eps, norm=self.norm, steps=self.steps, step_size=a, rand_init=False,
                       restarts=1, stop_on_success=self.stop_on_success))


@dataclass
class PGD(Attack):
    """Projected Gradient Descent with a random start, L∞ or L2, with restarts."""

    name: ClassVar[str] = "pgd"
    eps: float = 8 / 255
    steps: int = 10
    step_size: Optional[float] = None
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1
    stop_on_success: bool = False

    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        a = self.step_size if self.step_size is not None else default_step_size(self.eps, self.steps)
        return (yield from iterate(ctx, eps=self.eps, norm=self.norm, steps=self.steps, step_size=a,
                       rand_init=self.random_start, restarts=self.restarts,
                       stop_on_success=self.stop_on_success))


@dataclass
class MIFGSM(Attack):
    """Momentum Iterative FGSM: accumulates L1-normalised gradients with decay ``decay``."""

    name: ClassVar[str] = "mifgsm"
    eps: float = 8 / 255
    steps: int = 10
    step_size: Optional[float] = None
    decay: float = 1.0
    norm: str = "linf"
    stop_on_success: bool = False

    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        a = self.step_size if self.step_size is not None else self.eps / self.steps
        return (yield from iterate(ctx, eps=self.eps, norm=self.norm, steps=self.steps, step_size=a, rand_init=False,
                       restarts=1, stop_on_success=self.stop_on_success, momentum=self.decay))
