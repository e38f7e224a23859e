"""Square Attack: a score-based black-box attack with a query budget (L∞ and L2).

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box adversarial attack
via random search", ECCV 2020.

It needs only the model's scores, never a gradient, so it also measures models that have none (hard
thresholds, non-differentiable pre-processing) and is the suite's check against gradient masking.

Random search on the logit margin m = z_y − max_{i≠y} z_i (targeted: max_{i≠t} z_i − z_t); a sample is
fooled once m < 0. Every iteration proposes, per sample, a change inside one random square window of side
s and keeps it only if the margin drops. The window covers a fraction p of the image, p shrinking from
``p_init`` on the paper's schedule (halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10 000
queries, rescaled to the budget).
- L∞: start from vertical stripes of ±ε; a proposal sets the window to ±ε per channel (a vertex of the
  ε-cube), flipped when it would change nothing.
- L2 (our reading of the paper's L2 update, with one budget over all channels): start from a grid of
  ring-shaped bumps with random signs scaled to norm ε; a proposal moves the perturbation mass of a
  second window into the first, adds a fresh bump with random signs there, and rescales the first window
  so that the whole perturbation has norm exactly ε.

Telemetry: one StepInfo per block of ``report_every`` queries (and at least every 50 ms, so a stop
request is honoured quickly). ``StepInfo.step`` is the number of queries spent per image so far (1 = the
starting point) and ``total_steps`` is the budget ``queries``, so curves run over queries; a sample that is
fooled stops costing queries (``active`` is False for it) and ``first_success_step`` of the result is the
exact query that fooled it. Each sample draws from its own seeded generator, so an image gets the same
result alone or in a batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import time
from typing import ClassVar, Generator, Optional

import torch

from .base import Attack, AttackContext, AttackError, StepInfo, per_sample_generators
from .norms import project

_TINY = 1e-12
_CHUNK = 256   # random numbers are drawn per sample in blocks of this many queries


def margin(logits: torch.Tensor, labels: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
    """Positive while the sample is not fooled; Square minimises it."""
    z = logits.float()
    ref = labels if target is None else target
    z_ref = z.gather(1, ref[:, None])[:, 0]
    z_other = z.scatter(1, ref[:, None], -float("inf")).amax(1)
    m = z_ref - z_other if target is None else z_other - z_ref
    return torch.nan_to_num(m, nan=float("inf"))


def p_schedule(p_init: float, query: int, budget: int) -> float:
    """Fraction of the image a window covers at ``query`` (the paper's schedule, rescaled to 10 000)."""
    q = int(query / max(budget, 1) * 10000)
    p = p_init
    for limit in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000):
        if q > limit:
            p /= 2
    return p


def bump(s: int, device: torch.device) -> torch.Tensor:
    """A centred s×s pattern of unit L2 norm, largest in the middle, falling off as 1/(ring+1)²."""
    r = torch.arange(s, device=device, dtype=torch.float32)
    c = (s - 1) / 2
    ring = torch.maximum((r[:, None] - c).abs(), (r[None, :] - c).abs()).floor()
    b = 1.0 / (ring + 1) ** 2
    return b / b.norm().clamp_min(_TINY)


def _window(pos_h: torch.Tensor, pos_w: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(m, 1, H, W) bool masks of the s×s windows with top-left corners (pos_h, pos_w)."""
    rows = torch.arange(h, device=pos_h.device)
    cols = torch.arange(w, device=pos_h.device)
    mh = (rows[None, :] >= pos_h[:, None]) & (rows[None, :] < pos_h[:, None] + s)
    mw = (cols[None, :] >= pos_w[:, None]) & (cols[None, :] < pos_w[:, None] + s)
    return (mh[:, :, None] & mw[:, None, :])[:, None]


@dataclass
class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020): score-based random search, no gradients, a query budget."""

    name: ClassVar[str] = "square"
    needs_gradients: ClassVar[bool] = False
    step_unit: ClassVar[str] = "queries"      # StepInfo.step counts queries per image, total_steps is the budget
    budget_param: ClassVar[str] = "queries"
    eps: float = 8 / 255
    queries: int = 5000
    norm: str = "linf"
    p_init: float = 0.8
    stop_on_success: bool = True
    report_every: int = 10

    def validate(self, classifier: torch.nn.Module, images: torch.Tensor) -> None:
        super().validate(classifier, images)
        if self.queries < 1:
            raise AttackError(f"square: queries must be at least 1, got {self.queries}")
        if not 0 < self.p_init <= 1:
            raise AttackError(f"square: p_init must be in (0, 1], got {self.p_init}")
        if self.report_every < 1:
            raise AttackError(f"square: report_every must be at least 1, got {self.report_every}")

    def telemetry_loss(self, ctx: AttackContext, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return -margin(logits, ctx.labels[idx], None if ctx.target is None else ctx.target[idx])

    @torch.no_grad()
    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        clean = ctx.clean
        n, ch, h, w = clean.shape
        ctx.tele.total_steps = self.queries
        eps, norm = float(self.eps), self.norm
        if eps == 0:
            return clean.clone()
        dev = clean.device
        gens = per_sample_generators(ctx.seed, clean)
        # random numbers per sample: (n, queries so far in the block, 2 positions × 2 windows + ch signs)
        width = 4 + ch
        idx = torch.arange(n, device=dev)
        # -- the starting point
        signs = torch.stack([(torch.rand(ch, 1, w, generator=g) < 0.5).float() * 2 - 1 for g in gens]).to(dev)
        if norm == "linf":
            delta = eps * signs.expand(n, ch, h, w).clone()
        else:
            t = max(1, min(h, w) // 5)
            pattern = torch.zeros(h, w, device=dev)
            tile = bump(t, dev)
            for i in range(0, h - t + 1, t):
                for j in range(0, w - t + 1, t):
                    pattern[i:i + t, j:j + t] = tile
            tiles_sign = torch.stack([(torch.rand(ch, h // t + 1, w // t + 1, generator=g) < 0.5).float() * 2 - 1
                                      for g in gens]).to(dev)
            sign_map = tiles_sign.repeat_interleave(t, 2).repeat_interleave(t, 3)[:, :, :h, :w]
            delta = pattern * sign_map
            delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(_TINY)).view(-1, 1, 1, 1)
        x = (clean + delta).clamp(0, 1)
        logits = ctx.forward(x)
        m = margin(logits, ctx.labels, ctx.target)
        cur_logits = logits.clone()
        ctx.steps_run += 1
        ctx.tele.updates += 1
        all_idx = idx
        if (yield from ctx.report(1, 0, all_idx, cur_logits, -m, x, x if ctx.tele.keep_images else None)):
            ctx.final_step = 1
            return x
        rand = torch.empty(n, 0, width, device=dev)
        first = ctx.tele.first_success
        newly = (m < 0).cpu().numpy() & (first < 0)
        first[newly] = 1
        last_report = time.perf_counter()
        for q in range(1, self.queries):
            active = (m > 0) if self.stop_on_success else torch.ones(n, dtype=torch.bool, device=dev)
            a = active.nonzero()[:, 0]
            if a.numel() == 0:
                ctx.final_step = q
                return x
            col = (q - 1) % _CHUNK
            if col == 0:   # the next block of random numbers, for the samples still running
                rand = torch.zeros(n, _CHUNK, width, device=dev)
                rand[a] = torch.stack([torch.rand(_CHUNK, width, generator=gens[i]) for i in a.tolist()]).to(dev)
            u = rand[a, col]
            p = p_schedule(self.p_init, q, self.queries)
            s = int(round(math.sqrt(p * h * w)))
            s = max(1, min(s, h - 1 if h > 1 else 1, w - 1 if w > 1 else 1))
            ph = (u[:, 0] * (h - s + 1)).long().clamp_max(h - s)
            pw = (u[:, 1] * (w - s + 1)).long().clamp_max(w - s)
            win = _window(ph, pw, s, h, w)
            sgn = (u[:, 4:] < 0.5).float() * 2 - 1
            d = delta[a]
            if norm == "linf":
                prop = eps * sgn[:, :, None, None]
                same = ((d == prop) | ~win).flatten(1).all(1)
                prop = torch.where(same[:, None, None, None], -prop, prop)
                new = torch.where(win, prop, d)
            else:
                ph2 = (u[:, 2] * (h - s + 1)).long().clamp_max(h - s)
                pw2 = (u[:, 3] * (w - s + 1)).long().clamp_max(w - s)
                win2 = _window(ph2, pw2, s, h, w) & ~win
                union = win | win2
                out2 = (d * ~union).flatten(1).pow(2).sum(1)
                budget = (eps ** 2 - out2).clamp_min(0).sqrt()
                inside = d * win
                fresh = torch.zeros_like(d)
                b = bump(s, dev)
                # boolean indexing visits each (sample, channel) window row by row: s*s values each
                fresh[win.expand_as(d)] = b.flatten().repeat(a.numel() * ch)
                fresh = fresh * sgn[:, :, None, None]
                cand = inside + fresh * budget.view(-1, 1, 1, 1)
                cand = cand * (budget / cand.flatten(1).norm(dim=1).clamp_min(_TINY)).view(-1, 1, 1, 1)
                new = torch.where(union, cand, d)
                new = project(new, eps, "l2")
            xn = (clean[a] + new).clamp(0, 1)
            ln = ctx.forward(xn)
            mn = margin(ln, ctx.labels[a], None if ctx.target is None else ctx.target[a])
            better = mn < m[a]
            if bool(better.any()):
                j = a[better]
                delta[j] = new[better]
                x[j] = xn[better]
                m[j] = mn[better]
                cur_logits[j] = ln[better]
                jj = j[mn[better] < 0].cpu().numpy()
                jj = jj[first[jj] < 0]
                first[jj] = q + 1          # the exact query that fooled these samples
            ctx.steps_run += 1
            ctx.tele.updates += 1
            now = time.perf_counter()
            if (q + 1) % self.report_every == 0 or q + 1 == self.queries or now - last_report > 0.05:
                last_report = now
                if (yield from ctx.report(q + 1, 0, a, cur_logits[a], -m[a], x[a],
                                          x if ctx.tele.keep_images else None)):
                    ctx.final_step = q + 1
                    return x
        ctx.final_step = self.queries
        return x
