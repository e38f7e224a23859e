"""Why did the model change its mind? Attribution maps before and after an attack, how faithful they are,
and how much they moved.

Methods come from Captum (``pip install 'advgui[explain]'``), imported only when a map is computed:
- ``gradcam``: Grad-CAM (Selvaraju et al., ICCV 2017) on a convolutional feature map, upsampled
  bilinearly to the input size; the layer is chosen by :func:`advgui.core.probe.gradcam_layer` (the last
  convolutional feature map) unless one is named. A model without a usable convolution gets Grad-CAM
  disabled, with the reason, and falls back to saliency.
- ``saliency``: the absolute input gradient (Simonyan et al., 2014), the largest over colour channels.
- ``ig``: Integrated Gradients (Sundararajan et al., ICML 2017) from a black image, summed over channels
  (signed: negative values are evidence against the class).

Every map is H×W at the model's input size; larger means "more evidence for the class".

Numbers shown with the maps:
- **faithfulness** (a deletion test, after Samek et al. 2017 and Petsiuk et al.'s RISE, 2018): the drop of
  the class probability when the top ``fraction`` of pixels by the map is set to black, against the mean
  drop when the same number of random pixels is (``n_random`` draws). ``gain = drop_map − drop_random``;
  a map that beats random deletion has gain > 0.
- **overlap**: IoU of the top ``fraction`` pixels of two maps (before vs after the attack).

For the window's attack movie, :meth:`Explainer.frame` explains one frame (an image and a few classes) in
one forward and one backward pass over a batch of one copy per class (Grad-CAM and saliency).
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .attacks.base import model_as_found
from .errors import UserError
from .evaluate import Cancel, _jsonable, is_cancelled
from .models import Classifier
from .probe import gradcam_layer, get_module, trace_layers

METHODS = ("gradcam", "ig", "saliency")


class ExplainError(UserError):
    """An explanation cannot be computed as asked (unknown method or layer, missing extra)."""

    code = "explain"


def _captum():
    try:
        import captum.attr as ca
    except ImportError:
        raise ExplainError("explanations need the 'explain' extra: pip install 'advgui[explain]'",
                           code="missing_extra", extra="explain") from None
    return ca


# -- maps -------------------------------------------------------------------------------------------------------

@dataclass
class FrameMaps:
    """Maps of one image for a few classes: what the window overlays on one frame of the attack movie."""

    maps: np.ndarray          # (K, H, W) float32, one per class, at the model's input size
    classes: list[int]
    method: str               # the method actually used ("saliency" when Grad-CAM fell back)
    layer: Optional[str]      # Grad-CAM's layer
    seconds: float
    n_forward: int
    n_backward: int

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "method": self.method, "layer": self.layer, "seconds": self.seconds,
                "n_forward": self.n_forward, "n_backward": self.n_backward,
                "shape": list(self.maps.shape)}


class Explainer:
    """Attribution maps for one classifier and method; cheap to call repeatedly (the layer is found once).

    ``method``: gradcam, ig or saliency. ``layer``: Grad-CAM's layer by dotted name (see
    :func:`gradcam_layers`); None picks the last convolutional feature map. When Grad-CAM is impossible
    (no convolution, TorchScript), ``method`` becomes "saliency" and ``fallback_reason`` says why;
    ``gradcam_available`` / ``gradcam_reason`` tell a window whether to offer Grad-CAM at all.
    """

    def __init__(self, classifier: Classifier, method: str = "gradcam", *, layer: Optional[str] = None,
                 ig_steps: int = 32, ig_batch: int = 256) -> None:
        m = (method or "gradcam").strip().lower()
        if m in ("integrated-gradients", "integrated_gradients"):
            m = "ig"
        if m not in METHODS:
            raise ExplainError(f"unknown explanation method {method!r}; choose gradcam, ig or saliency",
                               code="explain_method", method=method)
        if ig_steps < 2:
            raise ExplainError(f"ig steps must be at least 2, got {ig_steps}", code="explain_param")
        self.classifier = classifier
        self.requested = m
        self.ig_steps = int(ig_steps)
        self.ig_batch = int(ig_batch)
        trace = trace_layers(classifier, classifier.channels, classifier.input_size)
        auto, why = gradcam_layer(trace)
        self.gradcam_available = auto is not None
        self.gradcam_reason = why
        self.fallback_reason: Optional[str] = None
        self.layer: Optional[str] = None
        if layer is not None:
            names = {t.name: t for t in trace}
            if layer not in names:
                convs = [t.name for t in trace if t.spatial is not None][-6:]
                raise ExplainError(f"layer {layer!r} is not in the model (feature-map layers near the end: "
                                   f"{', '.join(convs) or 'none'})", code="explain_layer", layer=layer,
                                   candidates=convs)
            if names[layer].spatial is None:
                raise ExplainError(f"layer {layer!r} outputs {names[layer].shape}, not a C×H×W feature map",
                                   code="explain_layer", layer=layer)
            self.gradcam_available, self.gradcam_reason = True, f"layer {layer} (chosen)"
            auto = layer
        self.method = m
        if m == "gradcam":
            if auto is None:
                self.method = "saliency"
                self.fallback_reason = f"Grad-CAM disabled: {why}; using saliency instead"
            else:
                self.layer = auto

    @property
    def cost(self) -> dict[str, int]:
        """Passes per call (each over a batch of all requested image/class pairs)."""
        if self.method == "ig":
            return {"forward": self.ig_steps, "backward": self.ig_steps}
        return {"forward": 1, "backward": 1}

    def status(self) -> dict[str, Any]:
        return {"requested": self.requested, "method": self.method, "layer": self.layer,
                "gradcam_available": self.gradcam_available, "gradcam_reason": self.gradcam_reason,
                "fallback_reason": self.fallback_reason, "cost_per_call": self.cost,
                "ig_steps": self.ig_steps if self.method == "ig" else None}

    def maps(self, images: torch.Tensor, classes: torch.Tensor | Sequence[int]) -> np.ndarray:
        """(N, H, W) float32 maps of ``images`` (N, C, H, W) in [0, 1] for ``classes`` (N,)."""
        ca = _captum()
        clf = self.classifier
        x = images.detach().to(clf.device, torch.float32)
        if x.ndim == 3:
            x = x[None]
        target = torch.as_tensor(classes, dtype=torch.long, device=clf.device).reshape(-1)
        if target.numel() != x.shape[0]:
            raise ExplainError(f"{target.numel()} classes for {x.shape[0]} images", code="explain_param")
        if int(target.min()) < 0 or int(target.max()) >= clf.num_classes:
            raise ExplainError(f"class out of range 0..{clf.num_classes - 1}", code="explain_param")
        h, w = clf.input_size
        x = x.clone().requires_grad_(True)    # captum wants it (and warns otherwise)
        with model_as_found(clf):
            if self.method == "gradcam":
                gc = ca.LayerGradCam(clf, get_module(clf, self.layer))
                a = gc.attribute(x, target=target, relu_attributions=True)
                a = ca.LayerAttribution.interpolate(a.detach(), (h, w), interpolate_mode="bilinear")
                out = a[:, 0]
            elif self.method == "saliency":
                out = ca.Saliency(clf).attribute(x, target=target, abs=True).detach().amax(1)
            else:
                ig = ca.IntegratedGradients(clf)
                # chunks of at most ig_batch images, fewer for large inputs (about 4 M input values per
                # chunk), but never fewer than the images themselves (captum's minimum)
                chunk = max(x.shape[0], min(self.ig_batch, (1 << 22) // max(1, x[0].numel())))
                out = ig.attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=self.ig_steps,
                                   internal_batch_size=chunk).detach().sum(1)
        return out.float().cpu().numpy()

    def frame(self, image: torch.Tensor, classes: Sequence[int]) -> FrameMaps:
        """Maps of ONE image (C, H, W or 1, C, H, W) for each of ``classes`` (e.g. true and adversarial):
        the image is repeated once per class and explained in a single call (Grad-CAM/saliency: one
        forward and one backward pass)."""
        t0 = time.perf_counter()
        img = image.detach()
        if img.ndim == 4:
            img = img[0]
        k = len(classes)
        m = self.maps(img[None].expand(k, *img.shape), list(classes))
        c = self.cost
        return FrameMaps(m, [int(v) for v in classes], self.method, self.layer, time.perf_counter() - t0,
                         c["forward"], c["backward"])


def gradcam_layers(classifier: Classifier) -> list[str]:
    """Names of the layers Grad-CAM can use (those with a C×H×W output), last first: what a layer menu offers."""
    trace = trace_layers(classifier, classifier.channels, classifier.input_size)
    return [t.name for t in reversed(trace) if t.spatial is not None and t.spatial[0] * t.spatial[1] > 1]


def to_unit(m: np.ndarray) -> np.ndarray:
    """A map scaled for display: its positive part divided by its maximum (all zeros stays zeros)."""
    p = np.maximum(np.asarray(m, np.float32), 0)
    top = float(p.max()) if p.size else 0.0
    return p / top if top > 0 else p


# -- faithfulness and overlap --------------------------------------------------------------------------------------

def _top_mask(maps: np.ndarray, fraction: float) -> np.ndarray:
    """(N, H, W) bool: the top ``fraction`` of pixels of each map (at least one; ties by position)."""
    n, h, w = maps.shape
    k = max(1, int(round(fraction * h * w)))
    flat = maps.reshape(n, -1)
    idx = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    mask = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask.reshape(n, h, w)


def topk_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """IoU of the top ``fraction`` pixels of maps ``a`` and ``b`` ((N, H, W) or (H, W)); (N,) or a float."""
    single = a.ndim == 2
    a2, b2 = (a[None], b[None]) if single else (a, b)
    ma, mb = _top_mask(a2, fraction), _top_mask(b2, fraction)
    inter = (ma & mb).reshape(len(ma), -1).sum(1)
    union = (ma | mb).reshape(len(ma), -1).sum(1)
    iou = inter / np.maximum(union, 1)
    return float(iou[0]) if single else iou


@dataclass
class Faithfulness:
    """Deletion test per image: probabilities of the class before and after deleting pixels."""

    score: np.ndarray         # (N,) probability of the class on the untouched image
    drop_map: np.ndarray      # (N,) score − score after deleting the map's top pixels
    drop_random: np.ndarray   # (N,) score − mean score after deleting as many random pixels
    fraction: float
    n_random: int

    @property
    def gain(self) -> np.ndarray:
        return self.drop_map - self.drop_random

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "n_random": self.n_random,
                "mean_drop_map": _mean(self.drop_map), "mean_drop_random": _mean(self.drop_random),
                "mean_gain": _mean(self.gain), "beats_random": _mean(self.gain > 0)}


def _mean(v: np.ndarray) -> Optional[float]:
    return float(np.mean(v)) if len(v) else None


@torch.no_grad()
def faithfulness(classifier: Classifier, images: torch.Tensor, classes: torch.Tensor | Sequence[int],
                 maps: np.ndarray, *, fraction: float = 0.1, n_random: int = 8, seed: int = 0,
                 batch_size: int = 512) -> Faithfulness:
    """Deletion test of ``maps`` (N, H, W) for ``classes`` on ``images`` (N, C, H, W in [0, 1]): the
    class probability drop when the map's top ``fraction`` of pixels (all channels) are set to black,
    against ``n_random`` random masks of the same size. Costs one forward pass over N·(2 + n_random)
    images."""
    if not 0 < fraction < 1:
        raise ExplainError(f"fraction {fraction}: must be between 0 and 1 (e.g. 0.1 for the top 10%)",
                           code="explain_param", value=fraction)
    if n_random < 1:
        raise ExplainError(f"n_random must be at least 1, got {n_random}", code="explain_param")
    x = images.detach().float().cpu()
    n, c, h, w = x.shape
    cls = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    top = torch.from_numpy(_top_mask(np.asarray(maps, np.float32), fraction))
    k = int(top[0].sum())
    rng = np.random.default_rng(seed)
    rand = np.zeros((n, n_random, h * w), bool)
    for i in range(n):
        for r in range(n_random):
            rand[i, r, rng.choice(h * w, size=k, replace=False)] = True
    rand_t = torch.from_numpy(rand.reshape(n, n_random, h, w))
    keep_top = (~top)[:, None].float()
    batch = [x, x * keep_top] + [x * (~rand_t[:, r])[:, None].float() for r in range(n_random)]
    allx = torch.stack(batch, 1).reshape(n * (2 + n_random), c, h, w)
    probs = []
    with model_as_found(classifier):
        for b in range(0, allx.shape[0], batch_size):
            probs.append(classifier(allx[b:b + batch_size].to(classifier.device)).float().softmax(1).cpu())
    p = torch.cat(probs).reshape(n, 2 + n_random, -1)
    pc = p.gather(2, cls.view(n, 1, 1).expand(n, 2 + n_random, 1))[..., 0].numpy()
    return Faithfulness(pc[:, 0], pc[:, 0] - pc[:, 1], pc[:, 0] - pc[:, 2:].mean(1), fraction, n_random)


# -- a whole set ------------------------------------------------------------------------------------------------

@dataclass
class ExplainProgress:
    done: int
    total: int
    elapsed: float


@dataclass
class ExplainReport:
    """Maps, faithfulness and overlap for a set of images (and their adversarial versions when attacked).

    Maps are (N, H, W): ``clean`` (true class on the original), ``adv`` (adversarial class on the
    adversarial image), ``clean_adv_class`` and ``adv_true_class`` (the crossed pairs)."""

    method: str
    layer: Optional[str]
    status: dict
    labels: np.ndarray
    clean_pred: np.ndarray
    maps: dict[str, np.ndarray]
    faith_clean: Faithfulness
    clean_images: torch.Tensor
    adv_images: Optional[torch.Tensor] = None
    adv_pred: Optional[np.ndarray] = None
    faith_adv: Optional[Faithfulness] = None
    overlap: Optional[np.ndarray] = None          # IoU(clean, adv): the evidence before vs after
    overlap_true: Optional[np.ndarray] = None     # IoU(clean, adv_true_class): the true class's evidence moved
    attack: Optional[str] = None
    attack_params: dict = field(default_factory=dict)
    fraction: float = 0.1
    sources: list[str] = field(default_factory=list)
    label_source: str = "labels"
    model: str = ""
    images: str = ""
    elapsed: float = 0.0
    cancelled: bool = False

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def success(self) -> Optional[np.ndarray]:
        return None if self.adv_pred is None else self.adv_pred != self.labels

    def image_rows(self) -> list[dict[str, Any]]:
        rows = []
        for i in range(self.n):
            r: dict[str, Any] = {"index": i, "source": self.sources[i] if i < len(self.sources) else str(i),
                                 "label": int(self.labels[i]), "clean_pred": int(self.clean_pred[i])}
            f = self.faith_clean
            r["clean"] = {"class": int(self.labels[i]), "score": float(f.score[i]), "drop_map": float(f.drop_map[i]),
                          "drop_random": float(f.drop_random[i]), "gain": float(f.gain[i])}
            if self.adv_pred is not None and self.faith_adv is not None:
                fa = self.faith_adv
                r["adv_pred"] = int(self.adv_pred[i])
                r["success"] = bool(self.adv_pred[i] != self.labels[i])
                r["adv"] = {"class": int(self.adv_pred[i]), "score": float(fa.score[i]),
                            "drop_map": float(fa.drop_map[i]), "drop_random": float(fa.drop_random[i]),
                            "gain": float(fa.gain[i])}
                r["overlap"] = float(self.overlap[i])
                r["overlap_true_class"] = float(self.overlap_true[i])
            rows.append(r)
        return rows

    def overall(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "clean": self.faith_clean.to_dict()}
        if self.faith_adv is not None and self.overlap is not None:
            succ = self.success
            out["adv"] = self.faith_adv.to_dict()
            out["success_rate"] = float(succ.mean()) if self.n else None
            out["mean_overlap"] = _mean(self.overlap)
            out["mean_overlap_true_class"] = _mean(self.overlap_true)
            out["mean_overlap_successful"] = _mean(self.overlap[succ]) if succ.any() else None
        return out

    def to_dict(self) -> dict[str, Any]:
        eps = self.attack_params.get("eps") if self.attack_params else None
        return {
            "format": "advgui-explain-1", "model": self.model, "images": self.images, "n": self.n,
            "label_source": self.label_source, "method": self.method, "layer": self.layer,
            "status": self.status, "fraction": self.fraction, "n_random": self.faith_clean.n_random,
            "deletion_baseline": "black (0)", "attack": self.attack,
            "attack_params": _jsonable(self.attack_params), "eps": eps,
            "eps_255": None if eps is None else round(eps * 255, 4),
            "overall": self.overall(), "per_image": self.image_rows(), "elapsed": self.elapsed,
            "cancelled": self.cancelled,
        }

    def to_csv(self) -> str:
        flat = []
        for r in self.image_rows():
            row = {k: v for k, v in r.items() if not isinstance(v, dict)}
            for key in ("clean", "adv"):
                for k, v in (r.get(key) or {}).items():
                    row[f"{key}_{k}"] = v
            flat.append(row)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(flat[0].keys()) if flat else ["index"], lineterminator="\n")
        w.writeheader()
        w.writerows(flat)
        return buf.getvalue()

    def save(self, out_dir: str | os.PathLike, *, overlays: bool = True, plot: bool = True) -> dict[str, Any]:
        """Write ``maps/<source>.npz`` per image, ``overlays/<source>.png`` (with ``overlays``),
        explain.json, explain.csv and explain.png (with ``plot``), all atomically."""
        from .fileio import atomic_write_text, atomic_write_with
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        written: dict[str, Any] = {"maps": 0, "overlays": 0}
        for i in range(self.n):
            rel = _out_rel(self.sources[i] if i < len(self.sources) else f"{i:05d}")
            arrays = {k: v[i].astype(np.float32) for k, v in self.maps.items()}
            arrays["label"] = np.int64(self.labels[i])
            if self.adv_pred is not None:
                arrays["adv_class"] = np.int64(self.adv_pred[i])
            atomic_write_with(d / "maps" / (rel + ".npz"), lambda tmp, a=arrays: _savez(tmp, a))
            written["maps"] += 1
            if overlays:
                from .plots import explain_overlay
                explain_overlay(self, i, d / "overlays" / (rel + ".png"))
                written["overlays"] += 1
        written["json"] = atomic_write_text(d / "explain.json", json.dumps(_jsonable(self.to_dict()), indent=2,
                                                                           allow_nan=False) + "\n")
        written["csv"] = atomic_write_text(d / "explain.csv", self.to_csv())
        if plot:
            from .plots import faithfulness_bars
            written["png"] = faithfulness_bars(self, d / "explain.png")
        return written


def _savez(tmp: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _out_rel(source: str) -> str:
    """The relative output name for a source: its relative path without the image extension; never
    absolute and never climbing out of the output folder."""
    p = Path(source.replace("\\", "/"))
    parts = [s for s in p.with_suffix("").parts if s not in ("", ".", "..", "/")]
    return "/".join(parts) or "image"


def explain_set(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, *, method: str = "gradcam",
                attack=None, layer: Optional[str] = None, fraction: float = 0.1, n_random: int = 8,
                ig_steps: int = 32, batch_size: int = 32, seed: int = 0, sources: Optional[Sequence[str]] = None,
                progress: Optional[Callable[[ExplainProgress], Optional[bool]]] = None,
                cancel: Cancel = None) -> ExplainReport:
    """Explain every image (uint8 or float (N, C, H, W)) for its label; with ``attack`` (a configured
    Attack), also its adversarial version, for the true and the adversarial class, with faithfulness and
    overlap. ``progress`` is called after every batch and may return True to cancel, as may ``cancel``;
    a cancelled report holds the finished batches."""
    t0 = time.perf_counter()
    ex = Explainer(classifier, method, layer=layer, ig_steps=ig_steps)
    if not 0 < fraction < 1:
        raise ExplainError(f"fraction {fraction}: must be between 0 and 1 (e.g. 0.1 for the top 10%)",
                           code="explain_param", value=fraction)
    y_all = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    n = int(images.shape[0])
    keys = ["clean"] + (["adv", "clean_adv_class", "adv_true_class"] if attack is not None else [])
    maps: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    cpred, apred, cl, advs, ys = [], [], [], [], []
    fc, fa = [], []
    cancelled = False
    for b in range(0, n, batch_size):
        if is_cancelled(cancel):
            cancelled = True
            break
        x = _float01(images[b:b + batch_size]).to(classifier.device)
        y = y_all[b:b + batch_size]
        with torch.no_grad(), model_as_found(classifier):
            cp = classifier(x).argmax(1).cpu()
        if attack is not None:
            res = attack.run(classifier, x, y, seed=seed)
            xa = res.adv.to(classifier.device)
            ap = torch.as_tensor(res.adv_pred)
            m = ex.maps(torch.cat([x, xa, x, xa]), torch.cat([y, ap, ap, y]))
            k = x.shape[0]
            for j, key in enumerate(["clean", "adv", "clean_adv_class", "adv_true_class"]):
                maps[key].append(m[j * k:(j + 1) * k])
            fa.append(faithfulness(classifier, xa, ap, m[k:2 * k], fraction=fraction, n_random=n_random, seed=seed + b))
            apred.append(ap.numpy())
            advs.append(xa.cpu())
        else:
            m = ex.maps(x, y)
            maps["clean"].append(m)
        fc.append(faithfulness(classifier, x, y, maps["clean"][-1], fraction=fraction, n_random=n_random, seed=seed + b))
        cpred.append(cp.numpy())
        cl.append(x.cpu())
        ys.append(y.numpy())
        if progress is not None and progress(ExplainProgress(min(n, b + batch_size), n, time.perf_counter() - t0)):
            cancelled = True
            break

    def cat_f(parts: list[Faithfulness]) -> Faithfulness:
        if not parts:
            z = np.zeros(0, np.float32)
            return Faithfulness(z, z, z, fraction, n_random)
        return Faithfulness(*(np.concatenate([getattr(p, a) for p in parts]) for a in ("score", "drop_map", "drop_random")),
                            fraction, n_random)

    h, w = classifier.input_size
    mp = {k: np.concatenate(v) if v else np.zeros((0, h, w), np.float32) for k, v in maps.items()}
    lab = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    rep = ExplainReport(method=ex.method, layer=ex.layer, status=ex.status(), labels=lab,
                        clean_pred=np.concatenate(cpred) if cpred else np.zeros(0, np.int64), maps=mp,
                        faith_clean=cat_f(fc), clean_images=torch.cat(cl) if cl else torch.zeros(0),
                        fraction=fraction, model=str(classifier.spec),
                        sources=list(sources)[:len(lab)] if sources is not None else [f"{i:05d}" for i in range(len(lab))],
                        cancelled=cancelled)
    if attack is not None:
        rep.adv_images = torch.cat(advs) if advs else torch.zeros(0)
        rep.adv_pred = np.concatenate(apred) if apred else np.zeros(0, np.int64)
        rep.faith_adv = cat_f(fa)
        rep.overlap = topk_iou(mp["clean"], mp["adv"], fraction) if len(lab) else np.zeros(0)
        rep.overlap_true = topk_iou(mp["clean"], mp["adv_true_class"], fraction) if len(lab) else np.zeros(0)
        rep.attack = attack.name
        rep.attack_params = attack.params()
    rep.elapsed = time.perf_counter() - t0
    return rep


def _float01(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()
