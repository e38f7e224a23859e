"""Perturbation budgets as users write them: ``8/255``, ``0.0314``, ``0``.

ε is always in pixel units (images in [0, 1]). ``parse_eps`` reads one value, ``parse_eps_list`` a
comma-separated list, and ``format_eps`` shows a value both ways (``0.0314 (8/255)``).
"""
from __future__ import annotations

import math
from typing import Sequence


def parse_eps(text: str | float | int) -> float:
    """One ε from a decimal (``0.0314``, ``.1``, ``1e-2``), a fraction (``8/255``) or ``0``.

    Raises ValueError with a message that quotes the input for anything else, for negative values and
    for NaN/infinity. No upper bound is applied here: an L2 budget may exceed 1; attacks check ranges.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid eps {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
        shown = repr(text)
    else:
        s = str(text).strip()
        shown = repr(str(text))
        if not s:
            raise ValueError("empty eps value")
        try:
            if "/" in s:
                num, _, den = s.partition("/")
                n, d = float(num.strip()), float(den.strip())
                if d == 0:
                    raise ValueError(f"eps {shown} divides by zero")
                value = n / d
            else:
                value = float(s)
        except ValueError as e:
            if "divides by zero" in str(e):
                raise
            raise ValueError(f"invalid eps {shown}: write a number like 0.0314 or a fraction like 8/255") from None
    if not math.isfinite(value):
        raise ValueError(f"eps {shown} is not a finite number")
    if value < 0:
        raise ValueError(f"eps {shown} is negative")
    return value


def parse_eps_list(text: str | Sequence[str | float]) -> list[float]:
    """Several ε from ``"0,2/255,4/255,8/255"`` (or a sequence). Sorted, duplicates removed."""
    parts = [p for p in text.split(",")] if isinstance(text, str) else list(text)
    parts = [p for p in parts if not (isinstance(p, str) and not p.strip())]
    if not parts:
        raise ValueError("no eps values given")
    values = sorted({parse_eps(p) for p in parts})
    return values


def as_255_fraction(eps: float, tol: float = 1e-6) -> str | None:
    """``"8/255"`` when ε is (within ``tol``) a whole number of grey levels, else None."""
    k = eps * 255
    if abs(k - round(k)) < tol * 255:
        return f"{round(k)}/255"
    return None


def format_eps(eps: float) -> str:
    """``0`` / ``0.03137 (8/255)`` / ``0.1``: how ε is shown to users."""
    if eps == 0:
        return "0"
    frac = as_255_fraction(eps)
    dec = f"{eps:.4g}"
    return f"{dec} ({frac})" if frac else dec
