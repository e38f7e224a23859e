"""Input-transform defenses, whether an attack survives them, and the adaptive re-attack that measures
how much of each defense remains.

Transforms (all in pixel space, images in [0, 1]):
- ``jpeg:Q``     JPEG compression at quality Q (1–100), via Pillow (Dziugaite et al. 2016; Guo et al. 2018);
- ``bits:B``     bit-depth reduction to B bits per value (1–8) (Xu et al., NDSS 2018);
- ``median:K``   K×K median filter per channel (2–15; K = 2 is Xu et al.'s 2×2 window);
- ``noise:S[:N]`` Gaussian noise of standard deviation S (0–1], the prediction a majority vote over N noisy
  copies (default 16; randomized smoothing's vote, Cohen et al. 2019).

The honest counter (Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security",
ICML 2018): attack *through* the transform. :class:`DefendedClassifier` wraps a Classifier with a
transform so that the existing attacks run through it unchanged:
- BPDA for the non-differentiable transforms (JPEG, bit depth, median): the forward pass uses the real
  transform, the backward pass treats it as the identity (straight-through);
- EOT for the random one (noise): every forward with gradients averages the class probabilities over
  ``eot_samples`` noise draws, so the attack follows the expected gradient; without gradients (the
  harness's re-check) the output is the majority vote.

``evaluate_defenses`` applies every transform to the clean and the adversarial images and re-attacks
through each, returning a :class:`DefenseReport` (one row per transform, one record per image).
"""
from __future__ import annotations

import abc

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .evaluate import Cancel, _jsonable, is_cancelled
from .models import Classifier


class DefenseError(UserError):
    """A transform or defense parameter is out of range or unreadable."""

    code = "defense"


# -- transforms ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Transform(abc.ABC):
    """An input transform. ``apply`` is the real transform (no gradient); subclasses say whether it is
    random and how the adaptive attack gets a gradient through it."""

    kind: ClassVar[str] = "transform"
    random: ClassVar[bool] = False
    adaptive_method: ClassVar[str] = "BPDA"

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The transform itself, on (N, C, H, W) images in [0, 1]."""

    @property
    @abc.abstractmethod
    def spec(self) -> str:
        """The transform as the command line writes it (``jpeg:75``)."""

    def describe(self) -> str:
        return self.spec

    def to_dict(self) -> dict[str, Any]:
        d = {"spec": self.spec, "kind": self.kind, "random": self.random, "adaptive": self.adaptive_method}
        d.update({k: v for k, v in self.__dict__.items()})
        return d


@dataclass(frozen=True)
class JPEG(Transform):
    quality: int = 75
    kind: ClassVar[str] = "jpeg"

    def __post_init__(self) -> None:
        _check_int("jpeg", "quality", self.quality, 1, 100)

    @property
    def spec(self) -> str:
        return f"jpeg:{self.quality}"

    def apply(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        from PIL import Image
        x8 = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        c = x8.shape[1]
        if c not in (1, 3):
            raise DefenseError(f"jpeg: needs 1- or 3-channel images, got {c} channels", code="defense_param",
                               transform="jpeg", channels=c)
        out = torch.empty_like(x8)
        for i in range(x8.shape[0]):
            arr = x8[i, 0].numpy() if c == 1 else x8[i].permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(arr, mode="L" if c == 1 else "RGB").save(buf, format="JPEG", quality=int(self.quality))
            buf.seek(0)
            dec = np.asarray(Image.open(buf).convert("L" if c == 1 else "RGB"))
            out[i] = torch.from_numpy((dec[None] if c == 1 else dec.transpose(2, 0, 1)).copy())
        return out.to(x.device).float() / 255


@dataclass(frozen=True)
class BitDepth(Transform):
    bits: int = 4
    kind: ClassVar[str] = "bits"

    def __post_init__(self) -> None:
        _check_int("bits", "bit depth", self.bits, 1, 8)

    @property
    def spec(self) -> str:
        return f"bits:{self.bits}"

    def apply(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        levels = 2 ** int(self.bits) - 1
        return (x.detach().clamp(0, 1) * levels).round() / levels


@dataclass(frozen=True)
class Median(Transform):
    size: int = 3
    kind: ClassVar[str] = "median"

    def __post_init__(self) -> None:
        _check_int("median", "window size", self.size, 2, 15)

    @property
    def spec(self) -> str:
        return f"median:{self.size}"

    def apply(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        k = int(self.size)
        n, c, h, w = x.shape
        if k > min(h, w):
            raise DefenseError(f"median:{k}: the window is larger than the {h}×{w} image", code="defense_param",
                               transform="median", value=k, max=min(h, w))
        # window anchored like scipy.ndimage.median_filter: (k-1)//2 before, k//2 after the pixel
        before, after = (k - 1) // 2, k // 2
        mode = "reflect" if max(before, after) < min(h, w) else "replicate"
        p = F.pad(x.detach(), (before, after, before, after), mode=mode)
        win = p.unfold(2, k, 1).unfold(3, k, 1).reshape(n, c, h, w, k * k)
        return win.median(dim=-1).values


@dataclass(frozen=True)
class GaussianNoise(Transform):
    sigma: float = 0.1
    samples: int = 16
    kind: ClassVar[str] = "noise"
    random: ClassVar[bool] = True
    adaptive_method: ClassVar[str] = "EOT"

    def __post_init__(self) -> None:
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and 0 < self.sigma <= 1):
            raise DefenseError(f"noise:{self.sigma:g}: the noise level must be a number in (0, 1] (pixel units)",
                               code="defense_param", transform="noise", param="sigma", value=self.sigma,
                               min=0, max=1)
        _check_int("noise", "number of samples", self.samples, 1, 1000)

    @property
    def spec(self) -> str:
        return f"noise:{self.sigma:g}:{self.samples}"

    def apply(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One noisy copy of every image, clipped to [0, 1]."""
        noise = torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device)
        return (x.detach() + self.sigma * noise.to(x.device)).clamp(0, 1)


def _check_int(kind: str, what: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise DefenseError(f"{kind}:{value}: the {what} must be a whole number from {lo} to {hi}",
                           code="defense_param", transform=kind, param=what, value=value, min=lo, max=hi)


TRANSFORMS: dict[str, type[Transform]] = {"jpeg": JPEG, "bits": BitDepth, "median": Median, "noise": GaussianNoise}


def parse_transform(text: str) -> Transform:
    """``jpeg:75``, ``bits:4``, ``median:3``, ``noise:0.1`` or ``noise:0.1:32`` to a Transform.
    Raises DefenseError (one line) for an unknown name or a value out of range."""
    tok = text.strip()
    name, _, rest = tok.partition(":")
    name = name.strip().lower()
    if name not in TRANSFORMS:
        raise DefenseError(f"{tok!r}: unknown transform; choose from jpeg:Q, bits:B, median:K, noise:SIGMA[:N]",
                           code="defense_param", transform=name)
    args = [a.strip() for a in rest.split(":")] if rest.strip() else []
    cls = TRANSFORMS[name]
    try:
        if name == "noise":
            if not args or len(args) > 2:
                raise DefenseError(f"{tok!r}: write noise:SIGMA or noise:SIGMA:N (e.g. noise:0.1:16)",
                                   code="defense_param", transform=name)
            sigma = float(args[0])
            return GaussianNoise(sigma, int(args[1]) if len(args) > 1 else 16)
        if len(args) != 1:
            raise DefenseError(f"{tok!r}: write {name}:VALUE (e.g. {name}:{ {'jpeg': 75, 'bits': 4, 'median': 3}[name] })",
                               code="defense_param", transform=name)
        return cls(int(args[0]))
    except ValueError as e:
        if isinstance(e, DefenseError):
            raise
        raise DefenseError(f"{tok!r}: not a number", code="defense_param", transform=name) from None


def parse_transforms(text: str | Sequence[str]) -> list[Transform]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    out = [parse_transform(p) for p in parts if p.strip()]
    if not out:
        raise DefenseError("no transforms given (e.g. jpeg:75,bits:4,median:3,noise:0.1)", code="defense_param")
    specs = [t.spec for t in out]
    dup = sorted({s for s in specs if specs.count(s) > 1})
    if dup:
        raise DefenseError(f"transform listed twice: {', '.join(dup)}", code="defense_param")
    return out


# -- the wrapped classifier ---------------------------------------------------------------------------------

class DefendedClassifier(Classifier):
    """A Classifier that transforms its input first: what a deployed defense computes, and what the
    adaptive attack differentiates (BPDA straight-through for deterministic transforms, EOT over
    ``eot_samples`` draws for random ones). Shares the wrapped model's network (no copy)."""

    def __init__(self, base: Classifier, transform: Transform, *, eot_samples: Optional[int] = None,
                 seed: int = 0) -> None:
        super().__init__(base.net, mean=base.mean, std=base.std, input_size=base.input_size,
                         channels=base.channels, class_names=base.class_names,
                         spec=f"{base.spec}+{transform.spec}", source=base.source)
        self.to(base.device)
        self.transform = transform
        self.eot_samples = int(eot_samples or getattr(transform, "samples", 1))
        self.seed = int(seed)
        self._gen: Optional[torch.Generator] = None

    def reseed(self, seed: Optional[int] = None) -> None:
        self._gen = None
        if seed is not None:
            self.seed = int(seed)

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
        return self._gen

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.transform
        if not t.random:
            xt = t.apply(x)
            if torch.is_grad_enabled() and x.requires_grad:
                xt = x + (xt - x).detach()      # BPDA: forward = transform, backward = identity
            return self._logits(xt)
        n = x.shape[0]
        gen = self._generator(x.device)
        if torch.is_grad_enabled() and x.requires_grad:
            # EOT: mean class probabilities over eot_samples draws; noise is additive, so the gradient
            # flows through x + noise exactly (clipping included)
            k = self.eot_samples
            noise = torch.randn((k * n, *x.shape[1:]), generator=gen, device=x.device)
            xr = (x.repeat(k, 1, 1, 1) + t.sigma * noise).clamp(0, 1)
            probs = self._logits(xr).float().softmax(1).view(k, n, -1).mean(0)
            return probs.clamp_min(1e-12).log()
        votes, mean_p = self._vote(x, t.samples, gen)
        # the majority vote, ties broken by the mean probability; log so that argmax and softmax make sense
        frac = votes / t.samples
        return (0.999 * frac + 0.001 * mean_p).clamp_min(1e-12).log()

    def _vote(self, x: torch.Tensor, samples: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        votes = torch.zeros(n, self.num_classes, device=x.device)
        mean_p = torch.zeros(n, self.num_classes, device=x.device)
        chunk = max(1, 512 // max(n, 1))
        done = 0
        while done < samples:
            k = min(chunk, samples - done)
            noise = torch.randn((k * n, *x.shape[1:]), generator=gen, device=x.device)
            xr = (x.repeat(k, 1, 1, 1) + self.transform.sigma * noise).clamp(0, 1)
            p = self._logits(xr).float().softmax(1).view(k, n, -1)
            votes += F.one_hot(p.argmax(2), self.num_classes).sum(0).float()
            mean_p += p.sum(0)
            done += k
        return votes, mean_p / samples


@torch.no_grad()
def predict(classifier: Classifier, x: torch.Tensor, transform: Optional[Transform] = None, *,
            batch_size: int = 256, seed: int = 0) -> np.ndarray:
    """Predicted classes of ``x`` (float in [0, 1] or uint8) after ``transform`` (None: the plain model);
    the noise transform predicts by majority vote."""
    from .attacks.base import model_as_found
    model: torch.nn.Module = classifier if transform is None else DefendedClassifier(classifier, transform, seed=seed)
    out = []
    with model_as_found(model):
        for b in range(0, x.shape[0], batch_size):
            xb = _float01(x[b:b + batch_size]).to(classifier.device)
            out.append(model(xb).argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def _float01(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


# -- evaluation ---------------------------------------------------------------------------------------------

@dataclass
class DefenseProgress:
    """Reported after every attacked batch. ``stage`` is "attack" (the plain attack) or a transform spec
    (its adaptive re-attack); ``done``/``total`` count attacked images over all stages."""

    stage: str
    done: int
    total: int
    elapsed: float


@dataclass
class DefenseRow:
    """One transform: accuracies in 0–1 over the evaluated images."""

    transform: str                 # spec, e.g. "jpeg:75"; "none" for the undefended model
    adaptive_method: str           # "BPDA", "EOT" or "" (none)
    clean_accuracy: float          # the transform applied to the clean images
    adv_accuracy: float            # the transform applied to the plain attack's adversarial images
    adaptive_accuracy: Optional[float]   # accuracy under the adaptive re-attack through the transform
    worst_accuracy: Optional[float]      # per image: survives both the plain and the adaptive attack
    attack_survives: float         # share of the plain attack's successes still fooling after the transform
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DefenseReport:
    """Everything ``advgui defend`` writes. Per-image arrays are (N,) and, per transform, (T, N)."""

    attack: str
    attack_params: dict
    transforms: list[str]
    rows: list[DefenseRow]
    labels: np.ndarray
    clean_pred: np.ndarray                 # plain model
    adv_pred: np.ndarray                   # plain model on the plain attack's images
    clean_pred_t: np.ndarray               # (T, N) after each transform
    adv_pred_t: np.ndarray                 # (T, N) plain attack's images after each transform
    adaptive_pred_t: Optional[np.ndarray]  # (T, N) adaptive attack's images after each transform
    sources: list[str] = field(default_factory=list)
    model: str = ""
    images: str = ""
    eot_samples: Optional[int] = None
    elapsed: float = 0.0
    cancelled: bool = False
    settings: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def survives(self) -> np.ndarray:
        """(T, N) bool: the plain attack fooled the model and still fools it after the transform."""
        fooled = self.adv_pred != self.labels
        return fooled[None] & (self.adv_pred_t != self.labels[None])

    def image_rows(self) -> list[dict[str, Any]]:
        out = []
        surv = self.survives()
        for i in range(self.n):
            r: dict[str, Any] = {"index": i, "source": self.sources[i] if i < len(self.sources) else str(i),
                                 "label": int(self.labels[i]), "clean_pred": int(self.clean_pred[i]),
                                 "adv_pred": int(self.adv_pred[i]),
                                 "attack_success": bool(self.adv_pred[i] != self.labels[i])}
            for t, spec in enumerate(self.transforms):
                r[f"{spec}:clean_correct"] = bool(self.clean_pred_t[t, i] == self.labels[i])
                r[f"{spec}:attack_survives"] = bool(surv[t, i])
                if self.adaptive_pred_t is not None:
                    r[f"{spec}:adaptive_fools"] = bool(self.adaptive_pred_t[t, i] != self.labels[i])
            out.append(r)
        return out

    def to_dict(self) -> dict[str, Any]:
        eps = self.attack_params.get("eps")
        return {
            "format": "advgui-defend-1", "model": self.model, "images": self.images, "n": self.n,
            "attack": self.attack, "attack_params": _jsonable(self.attack_params),
            "eps": eps, "eps_255": None if eps is None else round(eps * 255, 4),
            "eot_samples": self.eot_samples,
            "rows": [r.to_dict() for r in self.rows], "per_image": self.image_rows(),
            "elapsed": self.elapsed, "cancelled": self.cancelled, "settings": _jsonable(self.settings),
        }

    def table(self) -> str:
        head = ["transform", "clean", "adversarial", "adaptive", "worst", "attack survives", "re-attack"]
        body = []
        for r in self.rows:
            pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"  # noqa: E731
            body.append([r.transform, pct(r.clean_accuracy), pct(r.adv_accuracy), pct(r.adaptive_accuracy),
                         pct(r.worst_accuracy), pct(r.attack_survives), r.adaptive_method or "—"])
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        fmt = lambda row: "  ".join(s.ljust(widths[0]) if i == 0 else s.rjust(widths[i])  # noqa: E731
                                    for i, s in enumerate(row))
        return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body])

    def to_csv(self) -> str:
        rows = self.image_rows()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["index"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    def save(self, out_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
        """Write defend.json, defend.csv (one row per image) and defend.png (accuracy bars) atomically."""
        from .fileio import atomic_write_text
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"json": atomic_write_text(d / "defend.json",
                                           json.dumps(_jsonable(self.to_dict()), indent=2, allow_nan=False) + "\n"),
                 "csv": atomic_write_text(d / "defend.csv", self.to_csv())}
        if plot:
            from .plots import defense_bars
            paths["png"] = defense_bars(self, d / "defend.png")
        return paths


def evaluate_defenses(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                      transforms: str | Sequence[Transform | str], attack, *, adaptive: bool = True,
                      eot_samples: Optional[int] = None, batch_size: int = 64, seed: int = 0,
                      sources: Optional[Sequence[str]] = None,
                      progress: Optional[Callable[[DefenseProgress], Optional[bool]]] = None,
                      cancel: Cancel = None) -> DefenseReport:
    """Apply each transform to the clean images and to ``attack``'s adversarial images (the attack sees the
    plain model), then, with ``adaptive``, run the same attack again through each transform
    (:class:`DefendedClassifier`: BPDA / EOT with ``eot_samples`` draws, default the transform's own
    vote count). ``images``: (N, C, H, W) uint8 or float in [0, 1]. ``progress`` is called after every
    attacked batch and may return True to cancel, as may ``cancel``; a cancelled report holds the images
    finished so far for every stage that finished."""
    t0 = time.perf_counter()
    ts = parse_transforms(transforms) if isinstance(transforms, str) else \
        [parse_transform(t) if isinstance(t, str) else t for t in transforms]
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    n = int(images.shape[0])
    if n == 0:
        raise DefenseError("no images to defend", code="defense")
    if y.shape[0] != n:
        raise DefenseError(f"{y.shape[0]} labels for {n} images", code="defense")
    for t in ts:   # parameter errors that depend on the image (median window, JPEG channels) come first
        t.apply(_float01(images[:1]).to(classifier.device))
    stages = 1 + (len(ts) if adaptive else 0)
    total = n * stages
    done = 0
    cancelled = False

    def tick(stage: str, k: int) -> bool:
        nonlocal done, cancelled
        done += k
        if progress is not None and progress(DefenseProgress(stage, done, total, time.perf_counter() - t0)):
            cancelled = True
        if is_cancelled(cancel):
            cancelled = True
        return cancelled

    def run_attack(model: torch.nn.Module, stage: str) -> Optional[torch.Tensor]:
        advs = []
        for b in range(0, n, batch_size):
            if cancelled or is_cancelled(cancel):
                return None
            res = attack.run(model, _float01(images[b:b + batch_size]), y[b:b + batch_size], seed=seed)
            advs.append(res.adv)
            if tick(stage, res.adv.shape[0]):
                return None
        return torch.cat(advs)

    adv = run_attack(classifier, "attack")
    if adv is None:
        # cancelled during the plain attack: nothing is complete
        empty = np.zeros(0, np.int64)
        return DefenseReport(attack.name, attack.params(), [t.spec for t in ts], [], empty, empty, empty,
                             np.zeros((len(ts), 0), np.int64), np.zeros((len(ts), 0), np.int64), None,
                             model=str(getattr(classifier, "spec", "")), cancelled=True,
                             elapsed=time.perf_counter() - t0)
    y_np = y.numpy()
    x_all = _float01(images)
    clean_pred = predict(classifier, x_all)
    adv_pred = predict(classifier, adv)
    fooled = adv_pred != y_np
    rows = [DefenseRow("none", "", float((clean_pred == y_np).mean()), float((adv_pred == y_np).mean()),
                       None, None, 1.0 if fooled.any() else 0.0)]
    T = len(ts)
    cpt = np.zeros((T, n), np.int64)
    apt = np.zeros((T, n), np.int64)
    adpt = np.zeros((T, n), np.int64) if adaptive else None
    for k, t in enumerate(ts):
        t1 = time.perf_counter()
        cpt[k] = predict(classifier, x_all, t, seed=seed)
        apt[k] = predict(classifier, adv, t, seed=seed + 1)
        adaptive_acc = worst = None
        if adaptive and not cancelled:
            model = DefendedClassifier(classifier, t, eot_samples=eot_samples, seed=seed + 2)
            adv_a = run_attack(model, t.spec)
            if adv_a is not None:
                adpt[k] = predict(classifier, adv_a, t, seed=seed + 3)
                ok_a = adpt[k] == y_np
                adaptive_acc = float(ok_a.mean())
                worst = float((ok_a & (apt[k] == y_np)).mean())
        surv = fooled & (apt[k] != y_np)
        rows.append(DefenseRow(t.spec, t.adaptive_method, float((cpt[k] == y_np).mean()),
                               float((apt[k] == y_np).mean()), adaptive_acc, worst,
                               float(surv.sum() / max(1, fooled.sum())), time.perf_counter() - t1))
    if adaptive and cancelled:
        adpt = None
    return DefenseReport(
        attack=attack.name, attack_params=attack.params(), transforms=[t.spec for t in ts], rows=rows,
        labels=y_np, clean_pred=clean_pred, adv_pred=adv_pred, clean_pred_t=cpt, adv_pred_t=apt,
        adaptive_pred_t=adpt, sources=list(sources) if sources is not None else [str(i) for i in range(n)],
        model=str(getattr(classifier, "spec", "")), eot_samples=eot_samples, elapsed=time.perf_counter() - t0,
        cancelled=cancelled, settings={"batch_size": batch_size, "seed": seed, "adaptive": adaptive,
                                       "adversarial_images": "float (not rounded to 8 bits)"})
