"""The standard robustness evaluation: an AutoAttack-grade sequence of attacks, per-image worst case.

Each stage draws its own random starts (seed + 1000 × stage number), so a repeated attack is a real
restart; the same seed gives the same report.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", ICML 2020: run complementary attacks one after the other, each on the images that are still
robust, and count an image as robust only if it survives all of them.

Suites (``SUITES``):
- ``standard``: APGD-CE (100 steps), APGD-T (top 9 other classes × 100 steps), a second APGD-T pass over
  the top 3 classes from new random starts, Square (5000 queries). AutoAttack's standard version runs
  FAB-T where the second APGD-T pass is; on our benchmarks the second pass found more, at a fraction of
  FAB-T's cost (docs/robustness.md, docs/benchmarks.md).
- ``quick``: APGD-CE (50 steps), APGD-T (top 3 × 50 steps), Square (1000 queries): about a fifth of the
  standard cost, for a first look.

Around the stages, sanity checks say when the number cannot be trusted (codes in docs/robustness.md):
model checks (probabilities, randomness, non-finite outputs), gradient health (distribution of input-
gradient norms, vanishing / non-finite share, shattered directions), the black box beating the white box,
and two probes on the images that survived everything: the same attack at ε/2 (accuracy not monotone in
ε) and a cheap PGD-10 (more budget doing worse). Images a probe fools are counted as not robust: every
adversarial image found inside the ε-ball counts.

Use without the CLI (and from the GUI)::

    report = run_suite(classifier, images, labels, suite="standard", eps=8/255,
                       progress=lambda ev: print(ev.kind, ev.stage, ev.fraction), cancel=event)
    report.save("out/")          # robustness.json + card.json

or iterate the events yourself: ``for ev in iter_suite(...)`` (send True to cancel; the generator's return
value is the report). Cancelling stops the running attack at its next step; finished stages are kept.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Optional, Sequence

import numpy as np
import torch

from .attacks import Attack, AttackError, StepInfo, make_attack
from .attacks.base import _model_device, model_as_found
from .eps import as_255_fraction, format_eps
from .evaluate import Cancel, _jsonable, is_cancelled
from .fileio import atomic_write_text
from .sanity import (SanityWarning, _as_float01, check_blackbox_vs_whitebox, check_budget_probe, check_eps_probe,
                     check_model, check_sample_size, gradient_health, wilson_interval)

FORMAT = "advgui-suite-1"

# (attack, parameters, label) per stage; ε and norm are added per run
SUITES: dict[str, list[tuple[str, dict[str, Any], str]]] = {
    "standard": [("apgd", {"loss": "ce", "steps": 100, "restarts": 1}, "APGD-CE"),
                 ("apgd-t", {"steps": 100, "n_targets": 9, "restarts": 1}, "APGD-T"),
                 ("apgd-t", {"steps": 100, "n_targets": 3, "restarts": 1}, "APGD-T top-3 restart"),
                 ("square", {"queries": 5000, "p_init": 0.8}, "Square")],
    "quick": [("apgd", {"loss": "ce", "steps": 50, "restarts": 1}, "APGD-CE"),
              ("apgd-t", {"steps": 50, "n_targets": 3, "restarts": 1}, "APGD-T"),
              ("square", {"queries": 1000, "p_init": 0.8}, "Square")],
}
STAGE_LABELS = {"apgd": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "square": "Square"}
GRADIENT_FREE = ("square",)


def suite_attacks(suite: str, eps: float, norm: str = "linf") -> list[Attack]:
    """The configured attacks of a suite, in order."""
    key = suite.strip().lower()
    if key not in SUITES:
        raise AttackError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}", code="attack",
                          suite=suite, choices=list(SUITES))
    return [make_attack(name, eps=eps, norm=norm, stop_on_success=True, **params) for name, params, _label in SUITES[key]]


def suite_labels(suite: str) -> list[str]:
    """The stages' display names ("APGD-CE", "APGD-T", ...), in order."""
    return [label for _n, _p, label in SUITES[suite.strip().lower()]]


# -- events ---------------------------------------------------------------------------------------------

@dataclass
class SuiteEvent:
    """One progress event of :func:`iter_suite`.

    ``kind``: "start", "checks" (model and gradient checks done), "stage-start", "step" (one attack step;
    ``step`` holds its StepInfo), "stage-end" (``stage_result`` holds the finished stage), "probe" (a
    sanity probe's step), "done". ``fraction`` is the progress of the current stage in [0, 1];
    ``robust`` the images still robust out of ``n``. For "step" and "probe", ``step`` is the attack's StepInfo
    for the current batch and ``batch`` the indices of that batch's images in the whole set."""

    kind: str
    stage: str = ""
    stage_index: int = -1
    n_stages: int = 0
    fraction: float = 0.0
    robust: int = 0
    n: int = 0
    elapsed: float = 0.0
    message: str = ""
    step: Optional[StepInfo] = field(default=None, repr=False)
    batch: Optional[np.ndarray] = field(default=None, repr=False)   # indices of ``step``'s images in the set
    stage_result: Optional["StageResult"] = field(default=None, repr=False)

    @property
    def robust_accuracy(self) -> float:
        return self.robust / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "stage": self.stage, "stage_index": self.stage_index, "n_stages": self.n_stages,
                "fraction": self.fraction, "robust": self.robust, "n": self.n, "elapsed": self.elapsed,
                "message": self.message}


# -- results --------------------------------------------------------------------------------------------

@dataclass
class StageResult:
    """One stage: which attack, on how many images, what it found, what it cost."""

    attack: str
    label: str
    params: dict
    attacked: int = 0                 # images this stage attacked (those still robust before it)
    fooled: int = 0                   # of those, fooled (re-checked float result)
    fooled_8bit: int = 0              # of those, fooled after rounding to 8 bits
    robust: int = 0                   # images still robust after this stage (whole set)
    n: int = 0
    seconds: float = 0.0
    forward_calls: int = 0            # batched forward passes (harness counters)
    backward_calls: int = 0
    forward_images: int = 0           # forward passes × images in them
    backward_images: int = 0
    queries: int = 0                  # model queries spent per image, summed (Square: its budget measure)
    status: str = "pending"           # pending, done, cancelled, skipped
    note: str = ""

    @property
    def robust_accuracy(self) -> float:
        return self.robust / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        lo, hi = wilson_interval(self.robust, self.n)
        return {"attack": self.attack, "label": self.label, "params": _jsonable(self.params),
                "attacked": self.attacked, "fooled": self.fooled, "fooled_8bit": self.fooled_8bit,
                "robust": self.robust, "robust_accuracy": self.robust_accuracy, "ci95": [lo, hi],
                "seconds": round(self.seconds, 4), "forward_calls": self.forward_calls,
                "backward_calls": self.backward_calls, "forward_images": self.forward_images,
                "backward_images": self.backward_images, "queries": self.queries, "status": self.status,
                "note": self.note}


@dataclass
class SuiteReport:
    """Everything a run of the suite found. Per-image arrays have one entry per input image."""

    suite: str
    eps: float
    norm: str
    labels: np.ndarray                # (N,) int
    clean_pred: np.ndarray            # (N,) int
    robust: np.ndarray                # (N,) bool: survived every stage and probe (float re-check)
    robust8: np.ndarray               # (N,) bool: no stage's 8-bit result fooled the model (upper bound)
    fooled_by: list[str]              # (N,) the stage or probe that first fooled the image, "" if none
    adv_pred: np.ndarray              # (N,) prediction on the adversarial image (clean prediction if none)
    linf: np.ndarray                  # (N,) norm of the adversarial perturbation (0 if none)
    l2: np.ndarray
    stages: list[StageResult]
    warnings: list[SanityWarning]
    checks: dict[str, Any] = field(default_factory=dict)
    adv: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)   # index -> (C, H, W) float image
    paths: Optional[list[str]] = None
    model: str = ""
    images: str = ""
    label_source: str = "labels"
    seed: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    settings: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def clean_correct(self) -> np.ndarray:
        return self.clean_pred == self.labels

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean()) if self.n else 0.0

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.mean()) if self.n else 0.0

    @property
    def robust_accuracy_8bit(self) -> float:
        return float(self.robust8.mean()) if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(int(self.robust.sum()), self.n)

    @property
    def complete(self) -> bool:
        return all(s.status in ("done", "skipped") for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.ci95
        per_image = []
        for i in range(self.n):
            per_image.append({
                "index": i, "path": self.paths[i] if self.paths else None, "label": int(self.labels[i]),
                "clean_pred": int(self.clean_pred[i]), "correct": bool(self.clean_correct[i]),
                "robust": bool(self.robust[i]), "robust_8bit": bool(self.robust8[i]),
                "fooled_by": self.fooled_by[i] or None, "adv_pred": int(self.adv_pred[i]),
                "linf": float(self.linf[i]), "l2": float(self.l2[i])})
        from .export import versions
        return _jsonable({
            "format": FORMAT,
            "suite": {"name": self.suite, "eps": self.eps, "eps_255": as_255_fraction(self.eps) or f"{self.eps * 255:.4g}/255",
                      "eps_text": format_eps(self.eps), "norm": self.norm, "n": self.n,
                      "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
                      "ci95": [lo, hi], "robust_accuracy_8bit": self.robust_accuracy_8bit,
                      "complete": self.complete, "cancelled": self.cancelled, "seconds": round(self.seconds, 3),
                      "seed": self.seed,
                      "stages": [s.attack for s in self.stages]},
            "model": self.model, "images": self.images, "label_source": self.label_source,
            "stages": [s.to_dict() for s in self.stages],
            "checks": self.checks,
            "warnings": [w.to_dict() for w in self.warnings],
            "per_image": per_image,
            "settings": self.settings,
            "versions": versions(),
        })

    def card(self, *, name: Optional[str] = None, architecture: str = "", dataset: Optional[str] = None,
             link: str = "", authors: str = "", venue: str = "", reported: str = "",
             additional_data: bool = False, number_forward_passes: int = 1) -> dict[str, Any]:
        """A model card with RobustBench's ``model_info`` fields (accuracies as percentage strings, ε as
        "8/255" where it is a whole number of grey levels), plus advgui's own (``advgui_*``)."""
        eps_txt = as_255_fraction(self.eps) or f"{self.eps:g}"
        lo, hi = self.ci95
        stages = " → ".join(s.label for s in self.stages)
        foot = (f"advgui {self.suite} suite ({stages}; no FAB-T), {self.n} images, "
                f"{'L∞' if self.norm == 'linf' else 'L2'}, 95% interval {100 * lo:.2f}–{100 * hi:.2f}%")
        if not self.complete:
            foot += "; INCOMPLETE (cancelled): the robust accuracy is an upper bound"
        return {
            "link": link, "name": name if name is not None else self.model, "authors": authors,
            "additional_data": additional_data, "number_forward_passes": number_forward_passes,
            "dataset": dataset if dataset is not None else self.images, "venue": venue,
            "architecture": architecture, "eps": eps_txt, "clean_acc": f"{100 * self.clean_accuracy:.2f}",
            "reported": reported, "autoattack_acc": f"{100 * self.robust_accuracy:.2f}", "footnote": foot,
            "threat_model": "Linf" if self.norm == "linf" else "L2",
            "advgui_suite": self.suite, "advgui_n_images": self.n, "advgui_ci95": [round(100 * lo, 2), round(100 * hi, 2)],
            "advgui_complete": self.complete, "advgui_warnings": [w.code for w in self.warnings],
        }

    def table(self) -> str:
        """Plain text: one row per stage, then the total."""
        rows = [("stage", "attacked", "fooled", "robust acc", "95% interval", "seconds", "fwd img", "bwd img", "queries")]
        rows.append(("clean", "", "", f"{100 * self.clean_accuracy:.1f}%", "", "", "", "", ""))
        for s in self.stages:
            lo, hi = wilson_interval(s.robust, s.n)
            mark = "" if s.status == "done" else f" ({s.status})"
            rows.append((s.label + mark, str(s.attacked), str(s.fooled), f"{100 * s.robust_accuracy:.1f}%",
                         f"{100 * lo:.1f}–{100 * hi:.1f}%", f"{s.seconds:.1f}", str(s.forward_images),
                         str(s.backward_images), str(s.queries) if s.queries else ""))
        lo, hi = self.ci95
        rows.append(("robust (worst case)", "", "", f"{100 * self.robust_accuracy:.1f}%", f"{100 * lo:.1f}–{100 * hi:.1f}%",
                     f"{self.seconds:.1f}", "", "", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        fmt = lambda r: "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))  # noqa: E731
        return "\n".join([fmt(rows[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]])

    def save(self, out_dir: str | os.PathLike, **card_fields: Any) -> dict[str, Path]:
        """Write robustness.json and card.json into ``out_dir`` (atomically)."""
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        dump = lambda obj: json.dumps(_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False) + "\n"  # noqa: E731
        return {"json": atomic_write_text(d / "robustness.json", dump(self.to_dict())),
                "card": atomic_write_text(d / "card.json", dump(self.card(**card_fields)))}


# -- counting ---------------------------------------------------------------------------------------------

class _PassCounter:
    """Counts images through the model's forward and backward passes with hooks (removed on close)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.forward = 0
        self.backward = 0
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:  # noqa: ANN001
        if not isinstance(output, torch.Tensor):
            return
        self.forward += int(output.shape[0])
        if output.requires_grad:
            k = int(output.shape[0])

            def on_grad(g: torch.Tensor) -> None:
                self.backward += k

            output.register_hook(on_grad)

    def close(self) -> None:
        self._handle.remove()


# -- the run ----------------------------------------------------------------------------------------------

SuiteStream = Generator[SuiteEvent, Optional[bool], SuiteReport]


def suite_model_checks(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0
                       ) -> tuple[list[SanityWarning], dict[str, Any]]:
    """The suite's model-level checks before any stage (model checks on the first 64 images, gradient health on
    the first 256): the warnings, and ``{"gradient_health": ...}`` for the report's checks."""
    warnings: list[SanityWarning] = []
    try:
        warnings += check_model(classifier, images, labels)
    except RuntimeError as e:   # a model whose output carries no gradient at all
        warnings.append(SanityWarning(
            "zero-gradients", f"the model's output has no input gradient ({e}); gradient attacks are blind, "
            "so their accuracy is an upper bound; the Square stage does not need gradients"))
    health, hw = gradient_health(classifier, images, labels, seed=seed)
    return warnings + hw, {"gradient_health": health.to_dict()}


def iter_suite(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, suite: str = "standard",
               eps: float = 8 / 255, norm: str = "linf", batch_size: int = 128, seed: int = 0, sanity: bool = True,
               paths: Optional[Sequence[str]] = None, attacks: Optional[Sequence[Attack]] = None,
               keep_adv: bool = True) -> SuiteStream:
    """The suite as a generator of :class:`SuiteEvent`; send True to cancel; returns the :class:`SuiteReport`.

    ``images``: (N, C, H, W) uint8 or float in [0, 1]; ``labels``: (N,). ``attacks`` replaces the suite's
    stages (configured Attack objects, run in order). Each stage attacks only the images still robust, in
    batches of ``batch_size``. Nothing is raised for a model that misbehaves (no gradients, probabilities,
    randomness, NaN): it gets its warning and a finished report. Parameter errors raise AttackError before
    the first event.
    """
    t0 = time.perf_counter()
    if norm not in ("linf", "l2"):
        raise AttackError(f"norm must be linf or l2, got {norm!r}")
    if not math.isfinite(eps) or eps <= 0:
        raise AttackError(f"eps must be a positive number, got {eps}")
    stages_cfg = list(attacks) if attacks is not None else suite_attacks(suite, eps, norm)
    y_all = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    n = int(images.shape[0])
    if n == 0:
        raise AttackError("no images to evaluate")
    if y_all.shape[0] != n:
        raise AttackError(f"{y_all.shape[0]} labels for {n} images")
    if paths is not None and len(paths) != n:
        raise AttackError(f"{len(paths)} paths for {n} images")
    if batch_size < 1:
        raise AttackError(f"batch_size must be at least 1, got {batch_size}")
    for atk in stages_cfg:
        atk.validate(classifier, _as_float01(images[:1]))
    dev = _model_device(classifier)
    y_np = y_all.numpy()
    n_stages = len(stages_cfg)
    labels_ = suite_labels(suite) if attacks is None else [STAGE_LABELS.get(a.name, a.name) for a in stages_cfg]
    results = [StageResult(a.name, lab, a.params()) for a, lab in zip(stages_cfg, labels_)]
    for r in results:
        r.n = n
    warnings: list[SanityWarning] = []
    checks: dict[str, Any] = {}

    def event(kind: str, **kw: Any) -> SuiteEvent:
        return SuiteEvent(kind, n=n, n_stages=n_stages, robust=int(robust.sum()),
                          elapsed=time.perf_counter() - t0, **kw)

    # clean predictions
    clean_pred = np.empty(n, np.int64)
    with model_as_found(classifier), torch.no_grad():
        for b in range(0, n, batch_size):
            out = classifier(_as_float01(images[b:b + batch_size]).to(dev)).float()
            clean_pred[b:b + batch_size] = out.nan_to_num(nan=-float("inf")).argmax(1).cpu().numpy()
    robust = clean_pred == y_np
    robust8 = robust.copy()
    fooled_by = ["" if robust[i] else "clean" for i in range(n)]
    adv_pred = clean_pred.copy()
    linf = np.zeros(n, np.float32)
    l2 = np.zeros(n, np.float32)
    adv: dict[int, torch.Tensor] = {}
    cancelled = False

    if (yield event("start", message=f"{suite}: {n} images, clean accuracy {100 * robust.mean():.1f}%")):
        cancelled = True
    if sanity and not cancelled:
        mw, checks = suite_model_checks(classifier, images, y_all, seed=seed)
        warnings += mw
        if (yield event("checks", message="; ".join(w.code for w in warnings) or "no warnings")):
            cancelled = True

    def drive(atk: Attack, idx: np.ndarray, kind: str, label: str, stage_index: int, counts: StageResult
              ) -> Generator[SuiteEvent, Optional[bool], tuple[np.ndarray, np.ndarray, bool]]:
        """Attack the images ``idx`` in batches; returns (fooled float, fooled 8-bit, cancelled)."""
        fooled = np.zeros(len(idx), bool)
        fooled8 = np.zeros(len(idx), bool)
        runs = int(getattr(atk, "restarts", 1))
        if hasattr(atk, "n_targets"):
            n_cls = int(getattr(classifier, "num_classes", 0) or 0)
            runs *= min(int(atk.n_targets), n_cls - 1) if n_cls > 1 else int(atk.n_targets)
        runs = max(1, runs)
        stop = False
        counter = _PassCounter(classifier)
        try:
            for b in range(0, len(idx), batch_size):
                bi = idx[b:b + batch_size]
                xb = _as_float01(images[torch.as_tensor(bi)])
                # each stage draws its own random starts (a repeated attack is a real restart), seeded
                steps = atk.iter_steps(classifier, xb, y_all[torch.as_tensor(bi)], seed=seed + 1000 * (stage_index + 1),
                                       telemetry=True)
                try:
                    info = next(steps)
                    while True:
                        within = min(1.0, (info.restart * info.total_steps + info.step) / (runs * max(info.total_steps, 1)))
                        frac = (b + within * len(bi)) / max(len(idx), 1)
                        ask = yield event(kind, stage=label, stage_index=stage_index, fraction=frac, step=info,
                                          batch=bi)
                        stop = stop or bool(ask)
                        info = steps.send(stop)
                except StopIteration as fin:
                    res = fin.value
                sel = slice(b, b + len(bi))
                fooled[sel] = res.success
                fooled8[sel] = res.success8
                counts.forward_calls += res.n_forward
                counts.backward_calls += res.n_backward
                if atk.name in GRADIENT_FREE:
                    first = res.first_success_step
                    counts.queries += int(np.where(first >= 0, np.maximum(first, 1), getattr(atk, "queries", 0)).sum())
                for j, i in enumerate(bi):
                    if res.success[j]:
                        adv_pred[i] = int(res.adv_pred[j])
                        linf[i] = float(res.linf[j])
                        l2[i] = float(res.l2[j])
                        if keep_adv:
                            adv[int(i)] = res.adv[j].clone()
                if stop:
                    break
        finally:
            counter.close()
            counts.forward_images += counter.forward
            counts.backward_images += counter.backward
        return fooled, fooled8, stop

    for si, atk in enumerate(stages_cfg):
        st = results[si]
        if cancelled:
            st.status, st.note = "cancelled", "not run: the suite was cancelled"
            st.robust = int(robust.sum())
            continue
        idx = np.nonzero(robust)[0]
        st.attacked = len(idx)
        if len(idx) == 0:
            st.status, st.note = "skipped", "no robust images left"
            st.robust = 0
            yield event("stage-end", stage=st.label, stage_index=si, fraction=1.0, stage_result=st)
            continue
        if (yield event("stage-start", stage=st.label, stage_index=si, message=f"{len(idx)} images")):
            cancelled = True
            st.status, st.note, st.robust = "cancelled", "not run: the suite was cancelled", int(robust.sum())
            continue
        t1 = time.perf_counter()
        fooled, fooled8, stop = yield from drive(atk, idx, "step", st.label, si, st)
        st.seconds = time.perf_counter() - t1
        hit = idx[fooled]
        robust[hit] = False
        for i in hit:
            fooled_by[i] = atk.name
        robust8[idx[fooled8]] = False
        st.fooled, st.fooled_8bit = int(fooled.sum()), int(fooled8.sum())
        st.robust = int(robust.sum())
        st.status = "cancelled" if stop else "done"
        if stop:
            st.note = "cancelled: the images it fooled before the stop are counted; the rest were not fully attacked"
            cancelled = True
        yield event("stage-end", stage=st.label, stage_index=si, fraction=1.0, stage_result=st)

    if sanity:
        grad_names = [s.label for s, a in zip(results, stages_cfg) if a.name not in GRADIENT_FREE and s.status == "done"]
        for s, a in zip(results, stages_cfg):
            if a.name in GRADIENT_FREE and s.status == "done" and grad_names:
                warnings += check_blackbox_vs_whitebox(n, s.fooled, blackbox=s.label)
    probes: list[dict[str, Any]] = []
    if sanity and not cancelled and bool(robust.any()):
        first = stages_cfg[0]
        probe_specs = []
        if first.name not in GRADIENT_FREE:
            half = make_attack(first.name, **{**first.params(), "eps": eps / 2, "steps": max(10, getattr(first, "steps", 20) // 4)})
            probe_specs.append(("eps", half, f"{STAGE_LABELS.get(first.name, first.name)} at ε/2"))
        probe_specs.append(("budget", make_attack("pgd", eps=eps, norm=norm, steps=10, random_start=False,
                                                  stop_on_success=True), "PGD-10 without random start"))
        for kind, atk, label in probe_specs:
            idx = np.nonzero(robust)[0]
            if len(idx) == 0:
                break
            rec = StageResult(atk.name, label, atk.params(), n=n, attacked=len(idx))
            t1 = time.perf_counter()
            try:
                fooled, fooled8, stop = yield from drive(atk, idx, "probe", label, -1, rec)
            except RuntimeError as e:   # PGD on a model whose output has no gradient at all
                rec.status, rec.note, rec.robust = "skipped", f"the model has no usable gradient: {e}", int(robust.sum())
                probes.append({**rec.to_dict(), "probe": kind})
                continue
            rec.seconds = time.perf_counter() - t1
            hit = idx[fooled]
            robust[hit] = False
            robust8[idx[fooled8]] = False
            for i in hit:
                fooled_by[i] = f"probe:{atk.name}"
            rec.fooled, rec.fooled_8bit, rec.robust = int(fooled.sum()), int(fooled8.sum()), int(robust.sum())
            rec.status = "cancelled" if stop else "done"
            d = rec.to_dict()
            d["probe"] = kind
            probes.append(d)
            full = " → ".join(s.label for s in results)
            if kind == "eps":
                warnings += check_eps_probe(eps, eps / 2, rec.fooled, n, attack=label)
            else:
                warnings += check_budget_probe(rec.fooled, n, cheap=label, full=full)
            if stop:
                cancelled = True
                break
    checks["probes"] = probes
    if sanity:
        warnings += check_sample_size(n, int(robust.sum()))
    report = SuiteReport(
        suite=suite if attacks is None else "custom", eps=float(eps), norm=norm, labels=y_np.copy(),
        clean_pred=clean_pred, robust=robust, robust8=robust8,
        fooled_by=fooled_by, adv_pred=adv_pred, linf=linf, l2=l2, stages=results, warnings=warnings, checks=checks,
        adv=adv, paths=list(paths) if paths is not None else None, model=str(getattr(classifier, "spec", "")),
        seed=seed, seconds=time.perf_counter() - t0, cancelled=cancelled,
        settings={"batch_size": batch_size, "seed": seed, "sanity": sanity},
    )
    yield event("done", fraction=1.0, message=f"robust accuracy {100 * report.robust_accuracy:.1f}%")
    return report


def run_suite(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, suite: str = "standard",
              eps: float = 8 / 255, norm: str = "linf", batch_size: int = 128, seed: int = 0, sanity: bool = True,
              paths: Optional[Sequence[str]] = None, attacks: Optional[Sequence[Attack]] = None,
              keep_adv: bool = True, progress: Optional[Callable[[SuiteEvent], Optional[bool]]] = None,
              cancel: Cancel = None) -> SuiteReport:
    """Run :func:`iter_suite` to its end. ``progress`` gets every event and may return True to cancel, as
    may ``cancel`` (a threading.Event or a callable). A cancelled run returns within one attack step:
    finished stages are kept and ``report.cancelled`` is True."""
    stream = iter_suite(classifier, images, labels, suite=suite, eps=eps, norm=norm, batch_size=batch_size, seed=seed,
                        sanity=sanity, paths=paths, attacks=attacks, keep_adv=keep_adv)
    try:
        ev = next(stream)
        while True:
            stop = bool(progress(ev)) if progress is not None else False
            stop = stop or is_cancelled(cancel)
            ev = stream.send(stop)
    except StopIteration as fin:
        return fin.value
