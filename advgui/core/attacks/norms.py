"""The three per-norm pieces every gradient attack is made of: random start, step direction, projection.

All work per sample on perturbations ``delta`` of shape (N, C, H, W). Callers clip ``clean + delta`` to
[0, 1] after projecting (project onto the ε-ball, then clip: both constraints then hold, since clipping
towards the box never leaves an ε-ball centred inside the box).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

_TINY = 1e-12


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def random_start(clean: torch.Tensor, eps: float, norm: str,
                 generators: Optional[Sequence[torch.Generator]] = None) -> torch.Tensor:
    """A random point of the ε-ball around ``clean``, clipped to [0, 1].

    L∞: uniform in the cube (Madry et al. 2018). L2: uniform in the ball (direction from a Gaussian,
    radius ε·u^(1/d)), not on its surface.
    """
    n = clean.shape[0]
    shape = clean.shape[1:]
    d = clean[0].numel()

    def draw(kind: str) -> torch.Tensor:
        if generators is None:
            if kind == "uniform":
                return torch.rand(clean.shape)
            if kind == "normal":
                return torch.randn(clean.shape)
            return torch.rand(n)
        out = []
        for g in generators:
            if kind == "uniform":
                out.append(torch.rand(shape, generator=g))
            elif kind == "normal":
                out.append(torch.randn(shape, generator=g))
            else:
                out.append(torch.rand(1, generator=g))
        return torch.stack(out).reshape(n, *shape) if kind != "radius" else torch.cat(out)

    if norm == "linf":
        delta = (draw("uniform") * 2 - 1) * eps
    elif norm == "l2":
        direction = draw("normal")
        direction = direction / _view(direction.flatten(1).norm(dim=1).clamp_min(_TINY), direction)
        radius = eps * draw("radius").pow(1.0 / d)
        delta = direction * _view(radius, direction)
    else:
        raise ValueError(f"unknown norm {norm!r}")
    delta = delta.to(device=clean.device, dtype=clean.dtype)
    return (clean + delta).clamp(0, 1)


def step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit norm: sign for L∞, the per-sample normalised gradient for L2.

    A zero gradient gives a zero step (no NaN)."""
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        g = grad.flatten(1).norm(dim=1)
        return grad / _view(g.clamp_min(_TINY), grad)
    raise ValueError(f"unknown norm {norm!r}")


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project perturbations onto the ε-ball of the given norm (per sample)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = delta.flatten(1).norm(dim=1)
        factor = torch.where(n > eps, eps / n.clamp_min(_TINY), torch.ones_like(n))
        return delta * _view(factor, delta)
    raise ValueError(f"unknown norm {norm!r}")


def step(x: torch.Tensor, clean: torch.Tensor, grad: torch.Tensor, step_size: float, eps: float,
         norm: str) -> torch.Tensor:
    """One projected gradient-ascent step: move, project onto the ε-ball, clip to [0, 1]."""
    x = x + step_size * step_direction(grad, norm)
    return (clean + project(x - clean, eps, norm)).clamp(0, 1)
