"""Harden and compare: train a copy of a model against attacks, then measure both models on the same images.

One pipeline for the window's Harden tab and ``advgui train --compare``:

1. :func:`prepare_data` opens the training data (an ImageFolder tree or the built-in digits) and the
   validation images (a second set, or a stratified hold-out of the data), optionally keeps a fixed random
   subset of the training images, and a fixed subset of at most ``eval_max`` validation images;
2. :func:`advgui.core.training.train` trains a copy of the model on them (validation every epoch);
3. :func:`compare_robustness` draws both models' worst-case robustness curves (FGSM and PGD by default) on
   the same validation images at the same ε: 0 and multiples of the training ε up to twice it; or, with
   ``suite="quick"`` (or "standard"), runs the evaluation suite of :mod:`advgui.core.suite` on both models at
   the training ε and gives both robust accuracies with their 95% intervals (a :class:`SuitePair`).

:func:`harden` runs the three and reports every stage through one ``on_event`` callback (plain dataclasses: DataInfo, Phase, the core's BatchInfo and EpochRecord, the
TrainResult as soon as training ends, then the CurvePair),
and stops between batches when ``cancel`` says so; a cancelled run keeps what it trained.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from .data import IMAGE_EXTENSIONS, DataError
from .evaluate import Cancel, evaluate_robustness, is_cancelled
from .models import Classifier, ModelError
from .training import (BatchInfo, EpochRecord, TrainConfig, TrainingSet, TrainResult, architecture_of,
                       load_training_set, split_holdout, train)

EVAL_ATTACKS = ("fgsm", "pgd")
EVAL_FACTORS = (0.0, 0.5, 1.0, 1.5, 2.0)   # robustness curves at these multiples of the training ε


def eval_eps(eps: float, factors: Sequence[float] = EVAL_FACTORS) -> list[float]:
    """0 and a few multiples of the training ε up to 2× (within 0..1)."""
    return sorted({min(1.0, round(f * eps, 10)) for f in factors})


def subset_indices(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of ``k`` of ``n`` items (all, in order, when ``k`` is 0 or ≥ n), sorted."""
    if k <= 0 or k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:k].sort().values


def model_name(spec: str) -> str:
    """A short name for a model spec: ``demo``, ``resnet18`` or a file name."""
    s = str(spec)
    if s.startswith("torchvision:"):
        return s.split(":", 1)[1]
    return Path(s).name if ("/" in s or "\\" in s) else s


# -- events and results (plain values) ------------------------------------------------------------------------

@dataclass
class DataInfo:
    n_train: int
    n_val: int
    data_source: str
    val_source: str
    skipped: list[str]                  # "path: reason"
    notes: list[str] = field(default_factory=list)


@dataclass
class Phase:
    """Where the pipeline is: ``phase`` is training, validating, evaluating or done; ``fraction`` of it done."""

    phase: str
    text: str
    fraction: float


@dataclass
class ModelCurve:
    name: str
    worst: list[float]
    attacks: dict[str, list[float]]
    clean: float
    warnings: list[str]


@dataclass
class CurvePair:
    """Both models' robustness curves on the same images, at the same ε."""

    eps: list[float]
    n: int
    steps: int
    start: ModelCurve
    trained: ModelCurve
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eps_255"] = [e * 255 for e in self.eps]
        return d


@dataclass
class ModelSuite:
    """One model's result under the evaluation suite."""

    name: str
    robust: float                       # robust accuracy (per-image worst case over the stages)
    ci95: tuple[float, float]           # 95% Wilson interval
    clean: float
    stages: list[tuple[str, float]]     # (stage label, robust accuracy after it)
    warnings: list[str]                 # "code: message"
    complete: bool
    seconds: float


@dataclass
class SuitePair:
    """Both models under the same suite, on the same images, at the same ε."""

    suite: str
    eps: float
    norm: str
    n: int
    start: ModelSuite
    trained: ModelSuite
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eps_255"] = self.eps * 255
        return d


@dataclass
class PreparedData:
    train: TrainingSet
    val: TrainingSet
    info: DataInfo


@dataclass
class HardenResult:
    training: TrainResult
    curves: Optional[CurvePair] = None
    data: Optional[DataInfo] = None
    suite: Optional[SuitePair] = None

    @property
    def cancelled(self) -> bool:
        return bool(self.training.cancelled)


# -- the pipeline -------------------------------------------------------------------------------------------------

def _non_images(spec: str) -> list[str]:
    """Files of an image folder that the loader ignores because they are no images at all."""
    root = Path(spec)
    out: list[str] = []
    if root.is_dir():
        for f in sorted(root.rglob("*")):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in IMAGE_EXTENSIONS:
                out.append(f"{f}: not an image file (extension {f.suffix or 'missing'})")
    return out


def prepare_data(classifier: Classifier, data: str, val: Optional[str] = None, *, val_fraction: float = 0.1,
                 max_images: int = 0, eval_max: int = 200, seed: int = 0) -> PreparedData:
    """Open the training and validation images (see the module docstring). Raises DataError."""
    if not 0 < val_fraction < 1:
        raise DataError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
    notes: list[str] = []
    full = load_training_set(data, classifier)
    skipped = list(full.skipped)
    if val:
        val_set = load_training_set(val, classifier)
        skipped += val_set.skipped
        train_set = full
    else:
        (tx, ty), (vx, vy) = split_holdout(full.images, full.labels, val_fraction, seed)
        if len(vy) == 0:
            raise DataError(f"{full.source}: too few images to hold out a validation split; choose validation "
                            "images")
        train_set = TrainingSet(tx, ty, full.source, full.skipped)
        share = len(vy) / max(1, len(full))
        val_set = TrainingSet(vx, vy, f"{len(vy)} images ({100 * share:.0f}%) held out from {full.source}")
    for spec in {data, val or ""} - {""}:
        skipped += _non_images(spec)
    n_all = len(train_set)
    if max_images and max_images < n_all:
        idx = subset_indices(n_all, max_images, seed)
        train_set = TrainingSet(train_set.images[idx], train_set.labels[idx], train_set.source, train_set.skipped)
        notes.append(f"a random {len(idx)} of the {n_all} training images")
    vidx = subset_indices(len(val_set), eval_max, seed)
    if len(vidx) < len(val_set):
        notes.append(f"validation and curves on a random {len(vidx)} of the {len(val_set)} validation images")
    val_set = TrainingSet(val_set.images[vidx], val_set.labels[vidx], val_set.source, val_set.skipped)
    info = DataInfo(len(train_set), len(val_set), train_set.source, val_set.source, skipped, notes)
    return PreparedData(train_set, val_set, info)


def compare_robustness(start: Classifier, trained: Classifier, images: torch.Tensor, labels: torch.Tensor, *,
                       eps: Sequence[float], steps: int = 10, seed: int = 0, attacks: Sequence[str] = EVAL_ATTACKS,
                       names: tuple[str, str] = ("start", "trained"),
                       on_phase: Optional[Callable[[Phase], Any]] = None, cancel: Cancel = None,
                       suite: Optional[str] = None, norm: str = "linf") -> Optional[CurvePair | SuitePair]:
    """Both models' robustness curves on the same images at the same ε; None when cancelled.

    With ``suite`` ("quick" or "standard"), both models go through that evaluation suite instead, at the
    largest ε of ``eps`` (``norm``), and a :class:`SuitePair` comes back."""
    if suite:
        return compare_with_suite(start, trained, images, labels, eps=max(eps), suite=suite, norm=norm, seed=seed,
                                  names=names, on_phase=on_phase, cancel=cancel)
    t0 = time.perf_counter()
    curves = []
    models = [(start, names[0]), (trained, names[1])]
    for k, (model, name) in enumerate(models):
        def progress(p: Any, k: int = k, name: str = name) -> bool:
            frac = (k + p.done / max(1, p.total)) / len(models)
            if on_phase is not None:
                on_phase(Phase("evaluating", f"robustness curves · {name} · {p.attack.upper()} ε {p.eps:.3g}",
                               frac))
            return is_cancelled(cancel)
        if on_phase is not None:
            on_phase(Phase("evaluating", f"robustness curves · {name}", k / len(models)))
        rep = evaluate_robustness(model, images, labels, attacks=list(attacks), eps=list(eps), steps=steps,
                                  seed=seed, on_progress=progress, cancel=cancel)
        if rep.cancelled:
            return None
        curves.append(ModelCurve(name, [float(v) for v in rep.worst],
                                 {a: [float(v) for v in c.acc] for a, c in rep.curves.items()},
                                 float(rep.clean_acc), [str(w) for w in rep.warnings]))
    return CurvePair([float(e) for e in eps], int(labels.shape[0]), steps, curves[0], curves[1],
                     time.perf_counter() - t0)


def compare_with_suite(start: Classifier, trained: Classifier, images: torch.Tensor, labels: torch.Tensor, *,
                       eps: float, suite: str = "quick", norm: str = "linf", seed: int = 0,
                       names: tuple[str, str] = ("start", "trained"), attacks: Optional[Sequence[Any]] = None,
                       on_phase: Optional[Callable[[Phase], Any]] = None, cancel: Cancel = None
                       ) -> Optional[SuitePair]:
    """Both models under the evaluation suite (:func:`advgui.core.suite.run_suite`) on the same images at ε;
    ``attacks`` replaces the suite's stages. None when cancelled (a half-evaluated model compares nothing)."""
    from .suite import run_suite
    t0 = time.perf_counter()
    label = "custom" if attacks is not None else suite
    out = []
    models = [(start, names[0]), (trained, names[1])]
    for k, (model, name) in enumerate(models):
        def progress(ev: Any, k: int = k, name: str = name) -> bool:
            if on_phase is not None and ev.kind in ("stage-start", "step", "stage-end", "probe"):
                frac = (ev.stage_index + ev.fraction) / max(1, ev.n_stages) if ev.stage_index >= 0 else 1.0
                where = f"{ev.stage} ({ev.stage_index + 1}/{ev.n_stages})" if ev.stage_index >= 0 else \
                    f"check: {ev.stage}"
                on_phase(Phase("evaluating", f"{label} suite · {name} · {where}", (k + frac) / len(models)))
            return is_cancelled(cancel)
        if on_phase is not None:
            on_phase(Phase("evaluating", f"{label} suite · {name}", k / len(models)))
        rep = run_suite(model, images, labels, suite=suite, eps=eps, norm=norm, seed=seed, attacks=attacks,
                        keep_adv=False, progress=progress, cancel=cancel)
        if rep.cancelled:
            return None
        out.append(ModelSuite(name, rep.robust_accuracy, rep.ci95, rep.clean_accuracy,
                              [(st.label, st.robust_accuracy) for st in rep.stages],
                              [f"{w.code}: {w.message}" for w in rep.warnings], rep.complete, rep.seconds))
    return SuitePair(rep.suite, float(eps), norm, int(labels.shape[0]), out[0], out[1], time.perf_counter() - t0)


def harden(classifier: Classifier, data: str, config: TrainConfig, *, val: Optional[str] = None,
           val_fraction: float = 0.1, max_images: int = 0, eval_steps: int = 10, curves: bool = True,
           compare: str = "curves", start_name: str = "", on_event: Optional[Callable[[Any], Any]] = None,
           cancel: Cancel = None) -> HardenResult:
    """Prepare the data, train, and (with ``curves``) compare both models; ``on_event`` receives DataInfo,
    core BatchInfo and EpochRecord, Phase and finally the CurvePair — or, with ``compare`` "quick" or
    "standard", the SuitePair of that evaluation suite at the validation ε. The classifier passed in is
    untouched."""
    if compare not in ("curves", "quick", "standard"):
        raise ValueError(f"compare must be curves, quick or standard, got {compare!r}")
    emit = on_event or (lambda _e: None)
    config.validate()
    notes: list[str] = []
    try:
        architecture_of(classifier)
    except ModelError as e:
        notes.append(f"the trained weights cannot be saved: {e}")
    prepared = prepare_data(classifier, data, val, val_fraction=val_fraction, max_images=max_images,
                            eval_max=config.val_max, seed=config.seed)
    prepared.info.notes = notes + prepared.info.notes
    emit(prepared.info)
    if is_cancelled(cancel):
        return HardenResult(TrainResult(classifier, config, [], cancelled=True), None, prepared.info)
    emit(Phase("training", "starting the first epoch…", 0.0))

    def on_batch(info: BatchInfo) -> bool:
        emit(info)
        if info.batch == info.batches:
            emit(Phase("validating", f"epoch {info.epoch}/{info.epochs} · validating…", info.progress))
        return is_cancelled(cancel)

    def on_epoch(rec: EpochRecord) -> bool:
        emit(rec)
        return is_cancelled(cancel)

    tr, vs = prepared.train, prepared.val
    result = train(classifier, tr.images, tr.labels, config, val=(vs.images, vs.labels), on_batch=on_batch,
                   on_epoch=on_epoch, cancel=cancel)
    result.notes = prepared.info.notes + result.notes
    result.data_source, result.val_source = tr.source, vs.source
    result.skipped = list(prepared.info.skipped)
    emit(result)
    out = HardenResult(result, None, prepared.info)
    if not curves or result.cancelled or is_cancelled(cancel) or not result.history:
        return out
    val_eps = config.val_eps if config.val_eps is not None else config.eps
    eps = eval_eps(val_eps if math.isfinite(val_eps) and val_eps > 0 else config.eps)
    names = (start_name or model_name(classifier.spec), "trained")
    if compare != "curves":
        suite_eps = val_eps if math.isfinite(val_eps) and val_eps > 0 else config.eps
        if not suite_eps > 0:
            return out
        out.suite = compare_with_suite(classifier, result.classifier, vs.images, vs.labels, eps=suite_eps,
                                       suite=compare, seed=config.seed, names=names, on_phase=emit, cancel=cancel)
        if out.suite is not None:
            emit(Phase("done", "finished", 1.0))
            emit(out.suite)
        return out
    out.curves = compare_robustness(classifier, result.classifier, vs.images, vs.labels, eps=eps,
                                    steps=eval_steps, seed=config.seed, names=names, on_phase=emit, cancel=cancel)
    if out.curves is not None:
        emit(Phase("done", "finished", 1.0))
        emit(out.curves)
    return out
