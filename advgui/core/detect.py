"""Adversarial-input detection: feature squeezing and a multi-layer Mahalanobis detector, fitted on clean
images only; ROC, AUC, TPR at a fixed FPR; a saved detector (safetensors + JSON, no pickle); and the
adaptive attack that defeats both.

- **Feature squeezing** (Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep
  Neural Networks", NDSS 2018): score = the largest L1 distance between the softmax on the input and on
  each squeezed copy. Squeezers default to the paper's MNIST choice (1-bit depth, 2×2 median) for grey
  images and its CIFAR-10 choice (5-bit depth, 2×2 median) for colour images.
- **Mahalanobis** (Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
  Samples and Adversarial Attacks", NeurIPS 2018): class-conditional Gaussians with one shared covariance
  on the features of several intermediate blocks (:func:`advgui.core.probe.block_layers`: the output of
  each resolution stage and the penultimate features). A feature map is summarised by its per-channel mean
  and standard deviation over space (the paper uses the mean; the spread is what PGD's texture changes
  most). Per layer the score is the distance to the closest class mean. The paper combines layers with a
  logistic regression fitted on adversarial or OOD validation data; fitted on clean images only, we
  standardise each layer's distance on clean held-out images and add the z-scores.
- Thresholds are set on clean held-out images (``holdout`` of the fit set) for a chosen false-positive
  rate.
- **Adaptive attack** (Carlini & Wagner, "Adversarial Examples Are Not Easily Detected: Bypassing Ten
  Detection Methods", AISec 2017): :class:`DetectorEvasion` is PGD on a loss that asks for a wrong class
  *and* for every detector score below its threshold (gradients through the squeezers are BPDA). Against
  an attacker who knows the detector, neither detector holds: see docs/detect.md.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Generator, Optional, Sequence

import numpy as np
import torch

from .attacks.base import Attack, AttackContext, StepInfo, model_as_found
from .attacks.norms import project
from .defenses import BitDepth, Median, Transform, parse_transform
from .errors import UserError
from .evaluate import Cancel, _jsonable, is_cancelled
from .models import Classifier
from .probe import block_layers, get_module, trace_layers

FORMAT = "advgui-detector-1"
DETECTORS = ("squeeze", "mahalanobis")


class DetectorError(UserError):
    """A detector cannot be fitted, read, or used with this model."""

    code = "detector"


# -- features -------------------------------------------------------------------------------------------------

def _summarise(f: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → per-channel mean and standard deviation over space, (N, 2C); vectors pass through."""
    if f.ndim == 2:
        return f
    if f.ndim == 4:
        flat = f.flatten(2)
        if flat.shape[2] == 1:
            return flat[:, :, 0]
        return torch.cat([flat.mean(2), flat.std(2)], 1)
    return f.flatten(1)


class FeatureTap:
    """Forward hooks that keep the summarised features of named layers during one forward pass.
    ``"name:input"`` taps the module's input (the penultimate features before a Linear head)."""

    def __init__(self, model: torch.nn.Module, layers: Sequence[str]) -> None:
        self.layers = list(layers)
        self.out: dict[str, torch.Tensor] = {}
        self._handles = []
        for key in self.layers:
            name, _, where = key.partition(":")
            try:
                mod = get_module(model, name)
            except KeyError:
                raise DetectorError(f"layer {name!r} is not in this model", code="detector_mismatch",
                                    layer=name) from None
            if isinstance(mod, torch.jit.ScriptModule):
                self.close()
                raise DetectorError(f"layer {name!r} is TorchScript: its features cannot be read",
                                    code="detector_layers", layer=name)
            if where == "input":
                self._handles.append(mod.register_forward_pre_hook(self._pre(key)))
            else:
                self._handles.append(mod.register_forward_hook(self._post(key)))

    def _pre(self, key: str):
        def hook(_m, inp):
            self.out[key] = _summarise(inp[0].flatten(1) if inp[0].ndim > 2 else inp[0])
        return hook

    def _post(self, key: str):
        def hook(_m, _i, out):
            self.out[key] = _summarise(out)
        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the detector ---------------------------------------------------------------------------------------------

@dataclass
class GaussianLayer:
    """Class-conditional Gaussians with a shared covariance for one layer's features."""

    name: str
    means: torch.Tensor        # (K, d) float64; rows of absent classes are NaN
    precision: torch.Tensor    # (d, d) float64, inverse of the shrunk shared covariance
    z_mean: float = 0.0        # distance statistics on clean held-out images
    z_std: float = 1.0

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def distance(self, f: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance to the closest class mean, (N,), differentiable in ``f``."""
        dt = torch.float32 if f.device.type == "mps" else torch.float64   # MPS has no float64
        mu = self.means.to(f.device, dt)
        P = self.precision.to(f.device, dt)
        ok = ~torch.isnan(mu[:, 0])
        mu = mu[ok]
        diff = f.to(dt)[:, None, :] - mu[None]                   # (N, K, d)
        m = torch.einsum("nkd,de,nke->nk", diff, P, diff)
        return m.min(1).values

    def z(self, f: torch.Tensor) -> torch.Tensor:
        return (self.distance(f) - self.z_mean) / self.z_std


@dataclass
class Detector:
    """A fitted detector for one model: feature squeezing and multi-layer Mahalanobis.

    Scores are "higher = more suspicious"; an image is flagged by a detector when its score exceeds that
    detector's threshold (set on clean held-out images for ``fpr``)."""

    classes: int
    channels: int
    input_size: tuple[int, int]
    layers: list[GaussianLayer]
    squeezers: list[Transform]
    thresholds: dict[str, float]
    fpr: float
    score_std: dict[str, float] = field(default_factory=dict)   # held-out spread of each score
    model: str = ""
    class_names: list[str] = field(default_factory=list)
    n_fit: int = 0
    n_holdout: int = 0
    feature: str = "per-channel mean and std over space; vectors as they are"

    @property
    def shape_text(self) -> str:
        return f"{self.classes} classes, {self.channels}×{self.input_size[0]}×{self.input_size[1]} inputs"

    def check_model(self, clf: Classifier, path: str = "") -> None:
        """Refuse a model whose classes or input size differ from the fitted one, naming both shapes."""
        mine = (self.classes, self.channels, tuple(self.input_size))
        theirs = (clf.num_classes, clf.channels, tuple(clf.input_size))
        if mine != theirs:
            where = f"{path}: " if path else ""
            raise DetectorError(
                f"{where}the detector was fitted on a model with {self.shape_text}; this model has "
                f"{clf.num_classes} classes, {clf.channels}×{clf.input_size[0]}×{clf.input_size[1]} inputs",
                code="detector_mismatch", detector_classes=self.classes,
                detector_input=[self.channels, *self.input_size], model_classes=clf.num_classes,
                model_input=[clf.channels, *clf.input_size])

    # -- scoring --------------------------------------------------------------------------------------------
    def score_tensors(self, clf: Classifier, x: torch.Tensor, *, bpda: bool = False,
                      which: Sequence[str] = DETECTORS) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits, {detector: (N,) score}) for float images ``x`` on the model's device, for the detectors
        in ``which``. Differentiable in ``x`` when gradients are enabled (squeezers straight-through with
        ``bpda``). Costs one forward pass, plus one per squeezer for ``squeeze``."""
        with FeatureTap(clf, [g.name for g in self.layers] if "mahalanobis" in which else []) as tap:
            logits = clf(x)
        feats = dict(tap.out)
        scores: dict[str, torch.Tensor] = {}
        if "mahalanobis" in which:
            zs = [g.z(feats[g.name]) for g in self.layers]
            scores["mahalanobis"] = torch.stack(zs).sum(0).float() if zs else torch.zeros(x.shape[0], device=x.device)
        if "squeeze" not in which:
            return logits, scores
        p = logits.float().softmax(1)
        sq = []
        for t in self.squeezers:
            xs = t.apply(x)
            if bpda and torch.is_grad_enabled() and x.requires_grad:
                xs = x + (xs - x).detach()
            sq.append((p - clf(xs).float().softmax(1)).abs().sum(1))
        scores["squeeze"] = torch.stack(sq).max(0).values if sq else torch.zeros(x.shape[0], device=x.device)
        return logits, scores

    @torch.no_grad()
    def score(self, clf: Classifier, images: torch.Tensor, *, batch_size: int = 256,
              cancel: Cancel = None) -> dict[str, np.ndarray]:
        """Per-image scores of both detectors for (N, C, H, W) images (uint8 or float in [0, 1])."""
        self.check_model(clf)
        out: dict[str, list[np.ndarray]] = {k: [] for k in DETECTORS}
        with model_as_found(clf):
            for b in range(0, images.shape[0], batch_size):
                if is_cancelled(cancel):
                    break
                _, s = self.score_tensors(clf, _float01(images[b:b + batch_size]).to(clf.device))
                for k in DETECTORS:
                    out[k].append(s[k].cpu().numpy())
        return {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in out.items()}

    def flagged(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: scores[k] > self.thresholds[k] for k in DETECTORS}

    # -- files ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON half of the saved detector (the tensors are in the safetensors half)."""
        return {
            "format": FORMAT, "model": self.model, "classes": self.classes, "class_names": self.class_names,
            "channels": self.channels, "input_size": list(self.input_size), "fpr": self.fpr,
            "thresholds": self.thresholds, "score_std": self.score_std,
            "squeezers": [t.spec for t in self.squeezers], "feature": self.feature,
            "layers": [{"name": g.name, "dim": g.dim, "z_mean": g.z_mean, "z_std": g.z_std} for g in self.layers],
            "n_fit": self.n_fit, "n_holdout": self.n_holdout,
            "combine": "mahalanobis = sum over layers of (distance - z_mean) / z_std",
        }

    def save(self, path: str | os.PathLike) -> Path:
        """One .safetensors file: class means and precisions as tensors, everything else as JSON in its
        metadata (key ``advgui_detector``). No pickle anywhere."""
        from safetensors.torch import save_file

        from .fileio import atomic_write_with
        tensors = {}
        for i, g in enumerate(self.layers):
            tensors[f"layer{i}.means"] = g.means.detach().cpu().double().contiguous()
            tensors[f"layer{i}.precision"] = g.precision.detach().cpu().double().contiguous()
        meta = {"advgui_detector": json.dumps(_jsonable(self.to_dict())), "format": FORMAT}
        return atomic_write_with(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_detector(path: str | os.PathLike, clf: Optional[Classifier] = None) -> Detector:
    """Read a detector saved by :meth:`Detector.save`; with ``clf``, refuse it unless it was fitted on a model
    with the same classes and input size (and the same layers)."""
    from safetensors import SafetensorError, safe_open

    from .fileio import FileProblem, check_regular_file
    try:
        p = check_regular_file(path, "detector file")
    except FileProblem as e:
        raise DetectorError(str(e), code="detector_file", path=str(path)) from None
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise DetectorError(f"{p}: not a readable detector file ({e})", code="detector_file", path=str(p)) from None
    try:
        d = json.loads(meta["advgui_detector"])
        if d.get("format") != FORMAT:
            raise KeyError("format")
        layers = []
        for i, L in enumerate(d["layers"]):
            layers.append(GaussianLayer(L["name"], tensors[f"layer{i}.means"].double(),
                                        tensors[f"layer{i}.precision"].double(), float(L["z_mean"]),
                                        float(L["z_std"])))
        det = Detector(classes=int(d["classes"]), channels=int(d["channels"]),
                       input_size=(int(d["input_size"][0]), int(d["input_size"][1])), layers=layers,
                       squeezers=[parse_transform(s) for s in d["squeezers"]],
                       thresholds={k: float(d["thresholds"][k]) for k in DETECTORS}, fpr=float(d["fpr"]),
                       score_std={k: float(v) for k, v in d.get("score_std", {}).items()},
                       model=str(d.get("model", "")), class_names=list(d.get("class_names", [])),
                       n_fit=int(d.get("n_fit", 0)), n_holdout=int(d.get("n_holdout", 0)))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise DetectorError(f"{p}: not an advgui detector (missing or bad {e})", code="detector_file",
                            path=str(p)) from None
    if clf is not None:
        det.check_model(clf, str(p))
        with torch.no_grad(), FeatureTap(clf, [g.name for g in det.layers]) as tap:
            with model_as_found(clf):
                clf(torch.zeros(1, clf.channels, *clf.input_size, device=clf.device))
        for g in det.layers:
            got = tap.out[g.name].shape[1]
            if got != g.dim:
                raise DetectorError(f"{p}: layer {g.name} has {got} features in this model but {g.dim} in the "
                                    f"detector (fitted on another architecture)", code="detector_mismatch",
                                    layer=g.name)
    return det


# -- fitting --------------------------------------------------------------------------------------------------

@dataclass
class FitProgress:
    stage: str        # "features" or "thresholds"
    done: int
    total: int
    elapsed: float


def default_squeezers(channels: int) -> list[Transform]:
    """Xu et al.'s best joint squeezers: MNIST 1-bit + 2×2 median; colour images 5-bit + 2×2 median."""
    return [BitDepth(1), Median(2)] if channels == 1 else [BitDepth(5), Median(2)]


def fit_detector(clf: Classifier, images: torch.Tensor, labels: Optional[torch.Tensor] = None, *,
                 layers: Optional[Sequence[str]] = None, squeezers: Optional[Sequence[Transform | str]] = None,
                 fpr: float = 0.05, holdout: float = 0.2, shrinkage: float = 1e-3, batch_size: int = 256,
                 seed: int = 0, progress: Optional[Callable[[FitProgress], Optional[bool]]] = None,
                 cancel: Cancel = None) -> Detector:
    """Fit both detectors on clean ``images`` (uint8 or float in [0, 1]).

    ``labels`` give the class of each image (None: the model's predictions stand in). A random
    ``holdout`` share is kept out of the Gaussians and used to standardise the layer distances and to set
    each threshold at the (1 − ``fpr``) quantile of clean scores. ``layers`` default to
    :func:`advgui.core.probe.block_layers`. Raises DetectorError for too few images or a bad parameter;
    returns None-free results only (cancellation raises DetectorError with code ``cancelled``)."""
    t0 = time.perf_counter()
    if not (0 < fpr < 1):
        raise DetectorError(f"fpr {fpr}: must be between 0 and 1 (e.g. 0.05)", code="detector_param", value=fpr)
    if not (0 < holdout < 1):
        raise DetectorError(f"holdout {holdout}: must be between 0 and 1 (e.g. 0.2)", code="detector_param",
                            value=holdout)
    n = int(images.shape[0])
    n_hold = int(round(n * holdout))
    if n_hold < 20 or n - n_hold < 2 * clf.num_classes:
        raise DetectorError(f"{n} clean images are too few to fit a detector (need at least "
                            f"{max(100, 2 * clf.num_classes + 20)})", code="detector_data", n=n)
    sq = [parse_transform(s) if isinstance(s, str) else s for s in (squeezers or default_squeezers(clf.channels))]
    if layers is None:
        layers = block_layers(trace_layers(clf, clf.channels, clf.input_size))
    layers = list(layers)
    if not layers:
        raise DetectorError("the model's layers cannot be hooked (TorchScript?): the Mahalanobis detector "
                            "needs intermediate features", code="detector_layers")
    x_all = images
    with torch.no_grad(), model_as_found(clf):
        feats: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
        preds = []
        with FeatureTap(clf, layers) as tap:
            for b in range(0, n, batch_size):
                if is_cancelled(cancel):
                    raise DetectorError("fitting cancelled", code="cancelled")
                xb = _float01(x_all[b:b + batch_size]).to(clf.device)
                preds.append(clf(xb).argmax(1).cpu())
                for k in layers:
                    feats[k].append(tap.out[k].double().cpu())
                if progress is not None and progress(FitProgress("features", min(n, b + batch_size), n,
                                                                 time.perf_counter() - t0)):
                    raise DetectorError("fitting cancelled", code="cancelled")
    y = torch.cat(preds) if labels is None else torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    hold, fit = perm[:n_hold], perm[n_hold:]
    K = clf.num_classes
    glayers = []
    for k in layers:
        F_all = torch.cat(feats[k])
        a, ya = F_all[fit], y[fit]
        d = a.shape[1]
        means = torch.full((K, d), float("nan"), dtype=torch.float64)
        cen = torch.empty_like(a)
        for c in range(K):
            m = ya == c
            if m.any():
                means[c] = a[m].mean(0)
                cen[m] = a[m] - means[c]
        cov = cen.T @ cen / max(1, a.shape[0] - 1)
        # shrinkage towards a scaled identity keeps the inverse stable when d is near the sample count
        cov = (1 - shrinkage) * cov + shrinkage * torch.trace(cov) / d * torch.eye(d, dtype=torch.float64)
        try:
            prec = torch.linalg.inv(cov + 1e-10 * torch.eye(d, dtype=torch.float64))
        except RuntimeError:
            prec = torch.linalg.pinv(cov)
        gl = GaussianLayer(k, means, prec)
        dh = gl.distance(F_all[hold])
        gl.z_mean = float(dh.mean())
        gl.z_std = float(dh.std().clamp_min(1e-12))
        glayers.append(gl)
    det = Detector(classes=K, channels=clf.channels, input_size=tuple(clf.input_size), layers=glayers,
                   squeezers=sq, thresholds={}, fpr=fpr, model=str(clf.spec), class_names=list(clf.class_names),
                   n_fit=int(fit.numel()), n_holdout=int(hold.numel()))
    if progress is not None:
        progress(FitProgress("thresholds", n, n, time.perf_counter() - t0))
    held = det.score(clf, x_all[hold], batch_size=batch_size)
    for k in DETECTORS:
        det.thresholds[k] = float(np.quantile(held[k], 1 - fpr, method="higher"))
        det.score_std[k] = float(max(np.std(held[k]), 1e-6))
    return det


# -- ROC -----------------------------------------------------------------------------------------------------

def roc(clean_scores: np.ndarray, adv_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for "score > threshold means adversarial", from (−∞ flag-all) to none."""
    s = np.concatenate([clean_scores, adv_scores]).astype(np.float64)
    lab = np.concatenate([np.zeros(len(clean_scores)), np.ones(len(adv_scores))])
    if len(s) == 0:
        return np.zeros(1), np.zeros(1), np.full(1, np.inf)
    order = np.argsort(-s, kind="mergesort")
    s, lab = s[order], lab[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(lab)[distinct]
    fp = np.cumsum(1 - lab)[distinct]
    P, N = max(1, lab.sum()), max(1, len(lab) - lab.sum())
    fpr = np.r_[0.0, fp / N]
    tpr = np.r_[0.0, tp / P]
    thr = np.r_[np.inf, s[distinct]]
    return fpr, tpr, thr


def auc(clean_scores: np.ndarray, adv_scores: np.ndarray) -> float:
    """Area under the ROC curve: P(adversarial score > clean score), ties counting one half."""
    if len(clean_scores) == 0 or len(adv_scores) == 0:
        return float("nan")
    a = np.asarray(adv_scores, np.float64)[:, None]
    c = np.asarray(clean_scores, np.float64)[None, :]
    if a.size * c.size <= 4_000_000:
        return float(((a > c).sum() + 0.5 * (a == c).sum()) / (a.size * c.size))
    fpr, tpr, _ = roc(clean_scores, adv_scores)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(clean_scores: np.ndarray, adv_scores: np.ndarray, max_fpr: float = 0.05) -> tuple[float, float]:
    """(TPR, threshold): the best detection rate of any threshold whose FPR on these clean images is at
    most ``max_fpr``."""
    fpr, tpr, thr = roc(clean_scores, adv_scores)
    ok = fpr <= max_fpr + 1e-12
    i = int(np.argmax(np.where(ok, tpr, -1)))
    return float(tpr[i]), float(thr[i])


# -- evaluation ----------------------------------------------------------------------------------------------

@dataclass
class DetectorResult:
    name: str
    auc: float
    tpr_at_5: float               # best TPR with FPR ≤ 5% on this set's clean images (ROC)
    threshold_at_5: float         # the threshold that achieves it
    threshold: float              # the fitted threshold (clean held-out images of the fit set)
    fitted_fpr: float             # target FPR of the fitted threshold
    tpr: float                    # detection rate of the fitted threshold on the adversarial images
    fpr: float                    # false-positive rate of the fitted threshold on this set's clean images
    roc_fpr: list[float] = field(default_factory=list, repr=False)
    roc_tpr: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, with_roc: bool = True) -> dict[str, Any]:
        d = dict(self.__dict__)
        if not with_roc:
            d.pop("roc_fpr")
            d.pop("roc_tpr")
        return d


def evaluate_scores(det: Detector, clean: dict[str, np.ndarray], adv: dict[str, np.ndarray]
                    ) -> dict[str, DetectorResult]:
    out = {}
    for k in DETECTORS:
        c, a = clean[k], adv[k]
        fpr, tpr, _ = roc(c, a)
        t5, th5 = tpr_at_fpr(c, a, 0.05)
        thr = det.thresholds[k]
        out[k] = DetectorResult(k, auc(c, a), t5, th5, thr, det.fpr,
                                float((a > thr).mean()) if len(a) else float("nan"),
                                float((c > thr).mean()) if len(c) else float("nan"),
                                [float(v) for v in fpr], [float(v) for v in tpr])
    return out


@dataclass
class DetectProgress:
    stage: str       # "fit", "attack", "score", "adaptive"
    done: int
    total: int
    elapsed: float


@dataclass
class DetectionReport:
    """What ``advgui detect`` writes. Per-image arrays have one entry per clean image (and the same for the
    adversarial images, in the same order)."""

    detectors: dict[str, DetectorResult]
    clean_scores: dict[str, np.ndarray]
    adv_scores: dict[str, np.ndarray]
    attack_success: np.ndarray            # (N,) bool: the plain attack fooled the model
    labels: np.ndarray
    thresholds: dict[str, float]
    sources: list[str]
    attack: str
    attack_params: dict
    adaptive: Optional[dict] = None       # results of the adaptive attacks (see run_detection)
    adaptive_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)   # per target
    adaptive_success: dict[str, np.ndarray] = field(default_factory=dict)             # per target
    model: str = ""
    images: str = ""
    fit: str = ""
    detector_file: str = ""
    elapsed: float = 0.0
    cancelled: bool = False

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def better(self) -> str:
        return max(self.detectors, key=lambda k: (self.detectors[k].tpr_at_5, self.detectors[k].auc))

    def score_rows(self) -> list[dict[str, Any]]:
        """scores.csv: one row per image and version (clean, adversarial, and each adaptive run)."""
        rows = []
        versions = [("clean", self.clean_scores, np.zeros(self.n, bool)), ("adv", self.adv_scores, self.attack_success)]
        for target, sc in self.adaptive_scores.items():
            versions.append((f"adaptive-{target}", sc, self.adaptive_success[target]))
        for kind, scores, succ in versions:
            for i in range(self.n):
                r = {"source": self.sources[i] if i < len(self.sources) else str(i), "version": kind,
                     "adversarial": int(kind != "clean"), "attack_success": int(bool(succ[i])),
                     "label": int(self.labels[i])}
                for k in DETECTORS:
                    r[f"{k}_score"] = float(scores[k][i])
                    r[f"{k}_flagged"] = int(scores[k][i] > self.thresholds[k])
                rows.append(r)
        return rows

    def to_csv(self) -> str:
        rows = self.score_rows()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["source"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        eps = self.attack_params.get("eps")
        return {
            "format": "advgui-detect-1", "model": self.model, "images": self.images, "fit": self.fit,
            "detector_file": self.detector_file, "n": self.n,
            "n_adversarial": int(self.attack_success.sum()), "attack": self.attack,
            "attack_params": _jsonable(self.attack_params), "eps": eps,
            "eps_255": None if eps is None else round(eps * 255, 4),
            "detectors": {k: v.to_dict() for k, v in self.detectors.items()}, "better": self.better,
            "adaptive": self.adaptive, "elapsed": self.elapsed, "cancelled": self.cancelled,
            "positives": "successful adversarial images of the plain attack; negatives: all clean images",
        }

    def save(self, out_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
        """detect.json, scores.csv and (with ``plot``) roc.png, written atomically."""
        from .fileio import atomic_write_text
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"json": atomic_write_text(d / "detect.json",
                                           json.dumps(_jsonable(self.to_dict()), indent=2, allow_nan=False) + "\n"),
                 "csv": atomic_write_text(d / "scores.csv", self.to_csv())}
        if plot:
            from .plots import roc_plot
            paths["png"] = roc_plot(self, d / "roc.png")
        return paths


def run_detection(det: Detector, clf: Classifier, images: torch.Tensor, labels: torch.Tensor, attack, *,
                  adaptive: bool = True, adaptive_eps: Optional[float] = None, adaptive_steps: int = 100,
                  adaptive_targets: Sequence[str] = ("mahalanobis", "squeeze", "both"),
                  batch_size: int = 128, seed: int = 0,
                  sources: Optional[Sequence[str]] = None,
                  progress: Optional[Callable[[DetectProgress], Optional[bool]]] = None,
                  cancel: Cancel = None) -> DetectionReport:
    """Attack ``images`` with ``attack``, score the clean and the adversarial images with both detectors,
    and report ROC, AUC and TPR at 5% FPR (positives: the attack's successes). With ``adaptive``, run
    :class:`DetectorEvasion` at the same ε (or ``adaptive_eps``) once per entry of ``adaptive_targets``
    (aimed at one detector, or at both at once) and report how many of its images fool the model *and*
    pass the detectors at their fitted thresholds."""
    t0 = time.perf_counter()
    det.check_model(clf)
    targets = list(adaptive_targets)
    for t in targets:
        if t not in ("both",) + DETECTORS:
            raise DetectorError(f"adaptive target {t!r}: choose mahalanobis, squeeze or both",
                                code="detector_param", value=t)
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    n = int(images.shape[0])
    total = n * (1 + (len(targets) if adaptive else 0))
    done = [0]
    cancelled = [False]

    def tick(stage: str, k: int) -> None:
        done[0] += k
        if (progress is not None and progress(DetectProgress(stage, done[0], total, time.perf_counter() - t0))) \
                or is_cancelled(cancel):
            cancelled[0] = True

    def attack_all(atk, stage: str) -> tuple[torch.Tensor, np.ndarray]:
        advs, succ = [], []
        for b in range(0, n, batch_size):
            if cancelled[0] or is_cancelled(cancel):
                cancelled[0] = True
                break
            r = atk.run(clf, _float01(images[b:b + batch_size]), y[b:b + batch_size], seed=seed)
            advs.append(r.adv)
            succ.append(r.success)
            tick(stage, r.adv.shape[0])
        return (torch.cat(advs) if advs else torch.zeros(0)), (np.concatenate(succ) if succ else np.zeros(0, bool))

    adv, success = attack_all(attack, "attack")
    m = adv.shape[0]
    xc = _float01(images[:m])
    cs = det.score(clf, xc, batch_size=batch_size)
    as_ = det.score(clf, adv, batch_size=batch_size)
    results = evaluate_scores(det, cs, {k: v[success] for k, v in as_.items()})
    report = DetectionReport(detectors=results, clean_scores=cs, adv_scores=as_, attack_success=success,
                             labels=y[:m].numpy(), thresholds=dict(det.thresholds),
                             sources=list(sources)[:m] if sources is not None else [str(i) for i in range(m)],
                             attack=attack.name, attack_params=attack.params(), model=str(clf.spec))
    if adaptive and not cancelled[0]:
        eps = adaptive_eps if adaptive_eps is not None else (getattr(attack, "eps", None) or 8 / 255)
        runs: dict[str, dict] = {}
        for evade in targets:
            evasion = DetectorEvasion(eps=eps, norm=getattr(attack, "norm", "linf"), steps=adaptive_steps,
                                      detector=det, evade=evade)
            adv_a, succ_a = attack_all(evasion, f"adaptive ({evade})")
            if adv_a.shape[0] != m:
                break
            sa = det.score(clf, adv_a, batch_size=batch_size)
            flag = det.flagged(sa)
            aimed = DETECTORS if evade == "both" else (evade,)
            passes = np.logical_and.reduce([~flag[k] for k in aimed])
            both = ~flag["squeeze"] & ~flag["mahalanobis"]
            report.adaptive_scores[evade] = sa
            report.adaptive_success[evade] = succ_a
            runs[evade] = {
                "attack": evasion.name, "params": _jsonable(evasion.params()), "evade": evade,
                "success_rate": float(succ_a.mean()),
                "detected": {k: float(flag[k][succ_a].mean()) if succ_a.any() else 0.0 for k in DETECTORS},
                "evasion_rate": float((succ_a & passes).mean()),
                "passes_both_rate": float((succ_a & both).mean()),
                "auc": {k: auc(cs[k], sa[k][succ_a]) for k in DETECTORS},
            }
        report.adaptive = {
            "eps": eps, "eps_255": round(eps * 255, 4), "steps": adaptive_steps, "runs": runs,
            "note": "evasion_rate: share of images that fool the model and pass the detector(s) the run aimed "
                    "at, at their fitted thresholds; an attacker who knows a detector gets past it",
        }
    report.cancelled = cancelled[0]
    report.elapsed = time.perf_counter() - t0
    return report


# -- the adaptive attack -------------------------------------------------------------------------------------

@dataclass
class DetectorEvasion(Attack):
    """An attack on the classifier *and* a fitted :class:`Detector` (Carlini & Wagner, AISec 2017).

    Maximises ``min(margin, kappa) − weight · Σ_d relu((score_d − threshold_d) / std_d + 0.5)`` where
    margin is the best wrong logit minus the true one and the sum runs over the detectors to ``evade``;
    squeezers are straight-through (BPDA). The optimiser is Adam on the perturbation (learning rate
    ``lr`` × ε, C&W's choice), projected onto the ε-ball and [0, 1] after every step: signed-gradient
    steps, as in PGD, got past the Mahalanobis detector about half as often in our trials. A sample's
    result is its last iterate that fooled the model with every score under its threshold (else the
    last iterate). Not in the attack registry: it needs a fitted detector, not just numbers."""

    name: ClassVar[str] = "evade-detector"
    supports_targeted: ClassVar[bool] = False
    eps: float = 0.1
    steps: int = 100
    lr: float = 0.1
    norm: str = "linf"
    weight: float = 1.0
    kappa: float = 5.0
    evade: str = "both"                  # "both", "squeeze" or "mahalanobis": the detectors to slip past
    detector: Optional[Detector] = None

    def params(self) -> dict:
        p = super().params()
        p.pop("detector", None)
        return p

    def validate(self, classifier: torch.nn.Module, images: torch.Tensor) -> None:
        super().validate(classifier, images)
        from .attacks.base import AttackError
        if self.detector is None:
            raise AttackError(f"{self.name} needs a fitted detector")
        if self.evade not in ("both",) + DETECTORS:
            raise AttackError(f"evade {self.evade!r}: choose both, squeeze or mahalanobis")
        if not self.lr > 0:
            raise AttackError(f"lr must be positive, got {self.lr}")

    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        det = self.detector
        assert det is not None
        clean = ctx.clean
        n = clean.shape[0]
        idx = torch.arange(n, device=clean.device)
        names = DETECTORS if self.evade == "both" else (self.evade,)
        thr = {k: det.thresholds[k] for k in names}
        std = {k: det.score_std.get(k, 1.0) or 1.0 for k in names}
        delta = torch.zeros_like(clean, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.lr * self.eps)
        best = clean.clone()
        best_ok = torch.zeros(n, dtype=torch.bool, device=clean.device)
        x = clean
        for t in range(self.steps + 1):
            with torch.enable_grad():
                x = (clean + delta).clamp(0, 1)
                logits, scores = det.score_tensors(ctx.model, x, bpda=True, which=names)
                ctx.counter.forward += 1 + (len(det.squeezers) if "squeeze" in names else 0)
                z = logits.float()
                true = z.gather(1, ctx.labels[:, None])[:, 0]
                other = z.masked_fill(torch.nn.functional.one_hot(ctx.labels, z.shape[1]).bool(), -1e9).amax(1)
                margin = other - true
                penalty = sum(torch.relu((scores[k] - thr[k]) / std[k] + 0.5) for k in names)
                loss = margin.clamp(max=self.kappa) - self.weight * penalty
                ok = ((margin > 0) & torch.stack([scores[k] <= thr[k] for k in names]).all(0)).detach()
                if t < self.steps:
                    opt.zero_grad()
                    (-loss.sum()).backward()
                    ctx.counter.backward += 1
            x = x.detach()
            best[ok] = x[ok]
            best_ok |= ok
            if (yield from ctx.report(t, 0, idx, logits.detach(), loss.detach(), x, None)):
                break
            if t == self.steps:
                break
            opt.step()
            with torch.no_grad():
                d = project(delta, self.eps, self.norm)
                delta.copy_((clean + d).clamp(0, 1) - clean)
            ctx.steps_run += 1
            ctx.tele.updates += 1
            ctx.final_step = t + 1
        best[~best_ok] = x[~best_ok]
        return best.detach()


def _float01(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def manifest_columns(det: Detector, clf: Classifier) -> Callable[[Any], list[dict[str, Any]]]:
    """For :class:`advgui.core.export.ExportWriter`'s ``row_extras``: per image of an attacked batch, each
    detector's score and flag on the clean image and on the written 8-bit adversarial PNG
    (``<detector>_clean``, ``<detector>_adv``, ``<detector>_adv_flagged``)."""
    det.check_model(clf)

    def extras(batch) -> list[dict[str, Any]]:
        r = batch.result
        sc = det.score(clf, r.clean)
        sa = det.score(clf, r.adv8)
        out = []
        for k in range(len(r)):
            row: dict[str, Any] = {}
            for name in DETECTORS:
                row[f"{name}_clean"] = round(float(sc[name][k]), 6)
                row[f"{name}_adv"] = round(float(sa[name][k]), 6)
                row[f"{name}_adv_flagged"] = bool(sa[name][k] > det.thresholds[name])
            out.append(row)
        return out

    return extras
