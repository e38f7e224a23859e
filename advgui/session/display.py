"""What the three image views show at one moment, as plain values (no Qt).

A :class:`DisplayState` is built by the session for one movie frame (or a batch row, or a clean image) and
drawn by the Explore views, the presentation window, model B's row and the saved comparison PNG, so they
always agree. Strings in it are raw user data (class and file names): every view shows them as plain text or
escapes them before putting them into rich text.

The difference image is shown on a fixed scale: ±ε (in 0–255 pixel units) divided by the amplification,
never scaled to the data, so tiny noise looks tiny.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

UNBOUNDED_SCALE = 16 / 255     # the difference scale of attacks without ε, before any run


@dataclass
class DisplayState:
    name: str = ""
    clean: Optional[np.ndarray] = None       # (C, H, W) float in [0, 1]
    adv: Optional[np.ndarray] = None         # (C, H, W) float in [0, 1] or None before a run
    eps: Optional[float] = None
    amplification: float = 1.0
    true_name: str = ""
    label_source: str = "folder"
    clean_top: Sequence[tuple[str, float, str]] = ()   # (class name, prob, role)
    adv_top: Sequence[tuple[str, float, str]] = ()
    clean_pred: str = ""
    clean_conf: float = float("nan")
    adv_pred: str = ""
    adv_conf: float = float("nan")
    success: Optional[bool] = None
    linf: float = float("nan")
    l2: float = float("nan")
    frame_text: str = ""
    attack_text: str = ""
    model_name: str = ""
    notes: list[str] = field(default_factory=list)

    def diff(self) -> Optional[np.ndarray]:
        if self.clean is None or self.adv is None:
            return None
        return signed_diff(self.adv, self.clean)

    @property
    def limit255(self) -> float:
        return diff_limit(self.eps, self.amplification)

    @property
    def clean_wrong(self) -> bool:
        return self.label_source == "folder" and self.clean_pred != self.true_name


def signed_diff(adv_chw: np.ndarray, clean_chw: np.ndarray) -> np.ndarray:
    """adv − clean in 0..255 units as (H, W). For colour images each pixel shows the channel with the
    largest change (keeping its sign), so the ±ε scale still holds."""
    d = (np.asarray(adv_chw, np.float32) - np.asarray(clean_chw, np.float32)) * 255.0
    if d.ndim == 2:
        return d
    if d.shape[0] == 1:
        return d[0]
    idx = np.abs(d).argmax(axis=0)
    return np.take_along_axis(d, idx[None], axis=0)[0]


def diff_limit(eps: Optional[float], amplification: float, fallback: float = UNBOUNDED_SCALE) -> float:
    """The colour scale's end in 0..255 units: ε/amplification (a fixed fallback for unbounded attacks)."""
    e = eps if eps is not None and eps > 0 else fallback
    return float(e) * 255.0 / max(amplification, 1e-6)


def fmt_prob(p: float) -> str:
    if p != p:  # NaN
        return "–"
    return f"{100 * p:.1f}%"


def top_items(labels: Sequence[int], probs: Sequence[float], names: Sequence[str], true_label: int,
              target: Optional[int]) -> list[tuple[str, float, str]]:
    """Top-k rows for the confidence bars: (name, probability, role); role is "true", "target", "wrong"
    (the model's answer is another class) or ""."""
    out = []
    for rank, (lab, p) in enumerate(zip(labels, probs)):
        lab = int(lab)
        if lab < 0:
            continue
        role = "true" if lab == true_label else "target" if (target is not None and lab == target) else ""
        if rank == 0 and not role:
            role = "wrong"
        out.append((class_name(names, lab), float(p), role))
    return out


def class_name(names: Sequence[str], i: Optional[int]) -> str:
    if i is None or i < 0:
        return "–"
    return str(names[i]) if i < len(names) else str(i)
