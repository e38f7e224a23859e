"""The figures of ``advgui report`` and ``advgui eval``'s robustness.png, drawn by matplotlib's Agg backend.

matplotlib comes with the 'report' extra (and the 'explain' one) and is imported only inside these functions;
each returns PNG bytes (the report inlines them, ``eval`` writes them atomically). Figures are made without
pyplot's global state, so they are safe in a worker thread.
"""
from __future__ import annotations

import io
import math
from typing import Optional, Sequence

from .eps import as_255_fraction
from .plots import MissingExtra

REPORT_PIP = "pip install 'advgui[report]'"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(w: float, h: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtra(f"plots need the 'report' extra: {REPORT_PIP}", extra="report") from None
    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _png(fig, dpi: int = 100) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def eps_tick(e: float) -> str:
    if e == 0:
        return "0"
    frac = as_255_fraction(e)
    return frac if frac else f"{e:.3g}"


def accuracy_curves(eps: Sequence[float], curves: Sequence[tuple[str, Sequence[float]]],
                    worst: Optional[Sequence[float]], *, title: str, norm: str = "linf",
                    n_warnings: int = 0, size: tuple[float, float] = (8.0, 5.2)) -> bytes:
    """Accuracy (%) against ε: one line per attack and a thick dashed black worst case (``eval``'s plot)."""
    fig = _figure(*size)
    ax = fig.add_subplot()
    for name, acc in curves:
        pts = [(e, 100 * a) for e, a in zip(eps, acc) if a is not None and math.isfinite(a)]
        if pts:
            ax.plot(*zip(*pts), marker="o", linewidth=2, label=name)
    if worst is not None:
        pts = [(e, 100 * a) for e, a in zip(eps, worst) if a is not None and math.isfinite(a)]
        if pts:
            ax.plot(*zip(*pts), color="black", linestyle="--", linewidth=3, marker="o", label="worst case")
    ax.set_ylim(-2, 102)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel(f"ε ({norm}, pixel units of images in [0, 1])")
    ax.set_xticks(list(eps), [eps_tick(e) for e in eps])
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper right", fontsize=9)
    if n_warnings:
        ax.text(0.01, 0.02, f"{n_warnings} sanity warning(s): see the JSON", transform=ax.transAxes,
                color="#b3261e", fontsize=9)
    return _png(fig)


def suite_stages(labels: Sequence[str], robust: Sequence[Optional[float]], ci: Sequence[Optional[Sequence[float]]],
                 clean: Optional[float], *, title: str, size: tuple[float, float] = (7.0, 3.6)) -> bytes:
    """Robust accuracy after each stage of a suite (a step down per stage), with 95% intervals."""
    fig = _figure(*size)
    ax = fig.add_subplot()
    xs = ["clean"] + list(labels) if clean is not None else list(labels)
    ys = ([100 * clean] if clean is not None else []) + [100 * r if r is not None else math.nan for r in robust]
    ax.step(range(len(xs)), ys, where="mid", color="#1f77b4", linewidth=2)
    ax.plot(range(len(xs)), ys, "o", color="#1f77b4")
    off = 1 if clean is not None else 0
    for k, c in enumerate(ci):
        if c and None not in c:
            ax.errorbar(k + off, ys[k + off], yerr=[[ys[k + off] - 100 * c[0]], [100 * c[1] - ys[k + off]]],
                        color="black", capsize=4)
    ax.set_xticks(range(len(xs)), xs, fontsize=9)
    ax.set_ylim(-2, 102)
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title, fontsize=11)
    return _png(fig)


def budget_curve(linf: Sequence[Optional[float]], success: Sequence[bool], correct: Sequence[bool],
                 eps: Optional[float], l2: Sequence[Optional[float]], *, title: str,
                 size: tuple[float, float] = (9.0, 3.4)) -> bytes:
    """An export's curves: accuracy if the attacker's L∞ budget were at most x (an image counts as fooled at
    every budget at least as large as its adversarial image's L∞), and the L2 of the successful perturbations."""
    import numpy as np
    fig = _figure(*size)
    ax, hx = fig.subplots(1, 2)
    n = len(success)
    ok = np.array([bool(c) for c in correct])
    fooled_at = np.array([float(v) if s and v is not None else np.inf for v, s in zip(linf, success)])
    seen = float(np.max(fooled_at[np.isfinite(fooled_at)])) if np.isfinite(fooled_at).any() else 0.0
    top = max(eps or 0.0, seen, 1e-6) * 1.05          # past the largest perturbation, so its drop shows
    xs = np.linspace(0, top, 101)
    acc = [100 * float(np.mean(ok & ~(fooled_at <= x))) if n else math.nan for x in xs]
    ax.plot(xs, acc, color="#d62728", linewidth=2)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("L∞ budget (pixel units)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.set_title("accuracy within a budget", fontsize=10)
    vals = [float(v) for v, s in zip(l2, success) if s and v is not None]
    if vals:
        hx.hist(vals, bins=min(30, max(5, len(vals) // 3)), color="#1f77b4")
    hx.set_xlabel("L2 of successful perturbations")
    hx.set_ylabel("images")
    hx.set_title("perturbation size", fontsize=10)
    fig.suptitle(title, fontsize=11)
    return _png(fig)
