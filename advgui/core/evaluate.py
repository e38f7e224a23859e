"""Robustness curves: accuracy against ε for each attack, the worst case over attacks, sanity warnings.

``evaluate_robustness(classifier, images, labels, attacks, eps)`` attacks every image with every attack
at every ε and returns a :class:`RobustnessReport` (table, CSV, JSON, PNG plot).

How the curves are built:
- An image counts as robust against an attack at ε when the attack's re-checked float result is still
  classified correctly (``acc``); ``acc8`` uses the result rounded to 8 bits (AutoAttack issue #44).
- Accuracy never rises with ε, by construction: an adversarial image found at a smaller ε lies inside
  every larger ε-ball, so an image fooled at ε_k is counted as fooled at every ε > ε_k
  (robust(ε_k) = robust_raw(ε_k) ∧ robust(ε_{k-1})). The raw per-ε numbers are kept in the report, and
  a rise in them is exactly what fires the "more budget doing worse" warning.
- The worst case counts an image as robust only if it survives every attack (a per-image AND), so it is
  never above any single attack's curve.

Sanity warnings (see :mod:`advgui.core.sanity`) go into the report.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .attacks import AttackError, make_attack
from .attacks.base import model_as_found
from .eps import as_255_fraction, format_eps
from .fileio import atomic_write_bytes, atomic_write_text
from .sanity import SanityWarning, _as_float01, check_budget, check_model  # noqa: F401 (re-exported)

Cancel = Optional[Callable[[], bool] | threading.Event]



def is_cancelled(cancel: Cancel) -> bool:
    """``cancel`` may be None, a threading.Event, or a callable returning True to stop."""
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


# -- curves ------------------------------------------------------------------------------------------

@dataclass
class EvalProgress:
    """Reported after every attacked batch. ``done``/``total`` count image-attacks (images × attacks × ε)."""

    attack: str
    eps: float
    done: int
    total: int
    elapsed: float


@dataclass
class AttackCurve:
    attack: str
    params: dict
    acc: list[float]          # per ε, monotone (see module docstring); float re-check
    acc8: list[float]         # per ε, monotone; after 8-bit rounding
    raw_acc: list[float]      # per ε, as measured
    raw_acc8: list[float]
    seconds: list[float]      # attack time per ε
    robust: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), bool))   # (E, N) monotone
    robust8: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), bool))


@dataclass
class RobustnessReport:
    eps: list[float]
    n: int
    norm: str
    clean_acc: float
    curves: dict[str, AttackCurve]
    worst: list[float]
    worst8: list[float]
    warnings: list[SanityWarning]
    model: str = ""
    images: str = ""
    label_source: str = "labels"      # "labels" or "predictions" (unlabelled images)
    skipped: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    cancelled: bool = False
    settings: dict = field(default_factory=dict)

    def accuracy(self, attack: str, eps: float, *, eight_bit: bool = False) -> float:
        k = _eps_index(self.eps, eps)
        if attack == "worst":
            return (self.worst8 if eight_bit else self.worst)[k]
        c = self.curves[attack]
        return (c.acc8 if eight_bit else c.acc)[k]

    def rows(self) -> list[dict[str, Any]]:
        """Long format: one row per (attack or "worst", ε)."""
        out = []
        for name, c in self.curves.items():
            for k, e in enumerate(self.eps):
                out.append({"attack": name, "eps": e, "eps_255": (as_255_fraction(e) or "") if e else "0", "accuracy": c.acc[k],
                            "accuracy_8bit": c.acc8[k], "raw_accuracy": c.raw_acc[k],
                            "raw_accuracy_8bit": c.raw_acc8[k], "n": self.n, "seconds": round(c.seconds[k], 4)})
        for k, e in enumerate(self.eps):
            out.append({"attack": "worst", "eps": e, "eps_255": (as_255_fraction(e) or "") if e else "0", "accuracy": self.worst[k],
                        "accuracy_8bit": self.worst8[k], "raw_accuracy": "", "raw_accuracy_8bit": "",
                        "n": self.n, "seconds": ""})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "advgui-robustness-1", "model": self.model, "images": self.images, "n": self.n,
            "label_source": self.label_source, "norm": self.norm, "eps": self.eps,
            "eps_text": [format_eps(e) for e in self.eps], "clean_accuracy": self.clean_acc,
            "attacks": {name: {"params": _jsonable(c.params), "accuracy": c.acc, "accuracy_8bit": c.acc8,
                               "raw_accuracy": c.raw_acc, "raw_accuracy_8bit": c.raw_acc8, "seconds": c.seconds}
                        for name, c in self.curves.items()},
            "worst": {"accuracy": self.worst, "accuracy_8bit": self.worst8},
            "warnings": [w.to_dict() for w in self.warnings], "skipped": self.skipped,
            "elapsed": self.elapsed, "cancelled": self.cancelled, "settings": _jsonable(self.settings),
            "versions": _versions(),
            "monotone": "an image fooled at a smaller eps counts as fooled at every larger eps; raw_accuracy "
                        "is as measured",
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        rows = self.rows()
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["attack"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    def table(self) -> str:
        """A plain-text table: rows are ε, columns the attacks and the worst case (float and 8-bit)."""
        names = list(self.curves)
        head = ["eps"] + names + ["worst", "worst 8-bit"]
        body = []
        for k, e in enumerate(self.eps):
            body.append([format_eps(e)] + [f"{100 * self.curves[n].acc[k]:.1f}%" for n in names]
                        + [f"{100 * self.worst[k]:.1f}%", f"{100 * self.worst8[k]:.1f}%"])
        widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
        fmt = lambda r: "  ".join(s.ljust(widths[0]) if i == 0 else s.rjust(widths[i])  # noqa: E731
                                  for i, s in enumerate(r))
        lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body]
        return "\n".join(lines)

    def save(self, out_dir: str | os.PathLike, stem: str = "robustness", plot: bool = True) -> dict[str, Path]:
        """Write ``stem``.csv, .json and (with ``plot``, when matplotlib is installed: the 'report' extra) .png
        into ``out_dir`` atomically."""
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"csv": atomic_write_text(d / f"{stem}.csv", self.to_csv()),
                 "json": atomic_write_text(d / f"{stem}.json",
                                     json.dumps(_jsonable(self.to_dict()), indent=2, allow_nan=False) + "\n")}
        if plot:
            from .report_plots import have_matplotlib
            if have_matplotlib():
                paths["png"] = plot_curves(self, d / f"{stem}.png")
        return paths


def _versions() -> dict[str, Any]:
    from .export import versions
    return versions()


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None   # not measured (cancelled); strict JSON has no NaN
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def _eps_index(eps_list: Sequence[float], eps: float) -> int:
    for k, e in enumerate(eps_list):
        if abs(e - eps) <= 1e-9 + 1e-6 * abs(eps):
            return k
    raise KeyError(f"eps {eps} was not evaluated (have {', '.join(format_eps(e) for e in eps_list)})")


def evaluate_robustness(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        attacks: Sequence[str] = ("fgsm", "pgd"), eps: Sequence[float] = (0, 2 / 255, 4 / 255, 8 / 255),
                        *, norm: str = "linf", steps: int = 20, restarts: int = 1, step_size: Optional[float] = None,
                        batch_size: int = 128, seed: int = 0, sanity: bool = True, budget_tol: float = 0.01,
                        on_progress: Optional[Callable[[EvalProgress], Optional[bool]]] = None,
                        cancel: Cancel = None) -> RobustnessReport:
    """Accuracy against ε for each attack and the worst case over all of them.

    ``images``: (N, C, H, W) uint8 or float in [0, 1]; ``labels``: (N,). Every attack runs on every image
    at every ε > 0 (ε = 0 is the clean accuracy), in batches of ``batch_size``. ``steps``, ``restarts``
    and ``step_size`` go to the attacks that take them. ``on_progress`` is called after each batch and
    may return True to cancel, as may ``cancel`` (a callable or threading.Event); a cancelled report holds
    what was finished (unfinished entries are NaN) and ``cancelled=True``.
    """
    t0 = time.perf_counter()
    names = [a.strip().lower() for a in attacks if a.strip()]
    if not names:
        raise AttackError("no attacks given")
    if len(set(names)) != len(names):
        raise AttackError(f"an attack is listed twice: {', '.join(names)}")
    eps_list = sorted({float(e) for e in eps})
    if not eps_list:
        raise AttackError("no eps values given")
    if any(e < 0 or not math.isfinite(e) for e in eps_list):
        raise AttackError("eps values must be finite and non-negative")
    x_all = images          # converted to float per batch: a uint8 set stays small in memory
    y_all = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    n = int(x_all.shape[0])
    if n == 0:
        raise AttackError("no images to evaluate")
    if y_all.shape[0] != n:
        raise AttackError(f"{y_all.shape[0]} labels for {n} images")
    configs = {name: make_attack(name, eps=max(eps_list) or 1 / 255, steps=steps, restarts=restarts,
                                 step_size=step_size, norm=norm) for name in names}
    for name, atk in configs.items():   # fail early on a bad name, norm or step count
        atk.validate(classifier, _as_float01(x_all[:1]))
    # clean predictions (ε = 0)
    dev = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    clean_pred = np.empty(n, np.int64)
    with model_as_found(classifier), torch.no_grad():
        for b in range(0, n, batch_size):
            clean_pred[b:b + batch_size] = classifier(_as_float01(x_all[b:b + batch_size]).to(dev)).argmax(1).cpu().numpy()
    y_np = y_all.numpy()
    clean_ok = clean_pred == y_np
    warnings = check_model(classifier, x_all, y_all) if sanity else []
    E = len(eps_list)
    total = n * len(names) * sum(1 for e in eps_list if e > 0)
    done = 0
    cancelled = False
    raw: dict[str, np.ndarray] = {}
    raw8: dict[str, np.ndarray] = {}
    measured: dict[str, np.ndarray] = {}
    secs: dict[str, list[float]] = {}
    for name in names:
        r = np.zeros((E, n), bool)
        r8 = np.zeros((E, n), bool)
        have = np.zeros(E, bool)
        secs[name] = [0.0] * E
        for k, e in enumerate(eps_list):
            if cancelled:
                break
            if e == 0:
                r[k], r8[k], have[k] = clean_ok, clean_ok, True
                continue
            atk = make_attack(name, eps=e, steps=steps, restarts=restarts, step_size=step_size, norm=norm)
            t1 = time.perf_counter()
            for b in range(0, n, batch_size):
                if is_cancelled(cancel):
                    cancelled = True
                    break
                res = atk.run(classifier, _as_float01(x_all[b:b + batch_size]), y_all[b:b + batch_size], seed=seed)
                yb = y_np[b:b + batch_size]
                r[k, b:b + batch_size] = res.adv_pred == yb
                r8[k, b:b + batch_size] = res.adv8_pred == yb
                done += len(yb)
                if on_progress is not None and on_progress(EvalProgress(name, e, done, total, time.perf_counter() - t0)):
                    cancelled = True
                    break
            else:
                have[k] = True
            secs[name][k] = time.perf_counter() - t1
        raw[name], raw8[name], measured[name] = r, r8, have
    curves: dict[str, AttackCurve] = {}
    worst = np.ones((E, n), bool)
    worst8 = np.ones((E, n), bool)
    for name in names:
        mono = np.logical_and.accumulate(raw[name], axis=0)
        mono8 = np.logical_and.accumulate(raw8[name], axis=0)
        worst &= mono
        worst8 &= mono8
        have = measured[name]
        acc = lambda m: [float(m[k].mean()) if have[k] else float("nan") for k in range(E)]  # noqa: E731
        curves[name] = AttackCurve(attack=name, params=configs[name].params(), acc=acc(mono), acc8=acc(mono8),
                                   raw_acc=acc(raw[name]), raw_acc8=acc(raw8[name]), seconds=secs[name],
                                   robust=mono, robust8=mono8)
    all_have = np.logical_and.reduce([measured[nm] for nm in names])
    worst_acc = [float(worst[k].mean()) if all_have[k] else float("nan") for k in range(E)]
    worst_acc8 = [float(worst8[k].mean()) if all_have[k] else float("nan") for k in range(E)]
    if sanity and not cancelled:
        warnings += check_budget(eps_list, {nm: c.raw_acc for nm, c in curves.items()}, tol=budget_tol)
    return RobustnessReport(
        eps=eps_list, n=n, norm=norm, clean_acc=float(clean_ok.mean()), curves=curves, worst=worst_acc,
        worst8=worst_acc8, warnings=warnings, model=str(getattr(classifier, "spec", "")), elapsed=time.perf_counter() - t0,
        cancelled=cancelled,
        settings={"steps": steps, "restarts": restarts, "step_size": step_size, "batch_size": batch_size, "seed": seed,
                  "budget_tol": budget_tol},
    )


# -- the plot: matplotlib's Agg backend (the 'report' extra) -------------------------------------------------

def plot_curves(report: RobustnessReport, path: str | os.PathLike, size: tuple[int, int] = (800, 520)) -> Path:
    """Accuracy (%) against ε: one line per attack and a thick dashed black worst case, written atomically.
    Needs matplotlib (the 'report' extra); MissingExtra names the pip command when it is missing."""
    from .report_plots import accuracy_curves
    png = accuracy_curves(report.eps, [(name, c.acc) for name, c in report.curves.items()], report.worst,
                          title=f"Accuracy vs ε ({report.norm}): {report.model or 'model'}, {report.n} images",
                          norm=report.norm, n_warnings=len(report.warnings), size=(size[0] / 100, size[1] / 100))
    return atomic_write_bytes(path, png)
