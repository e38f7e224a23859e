"""AdvGAN: a generator that attacks in one forward pass, and the GAN game that hardens a classifier with it.

Xiao, Li, Zhu, He, Liu, Song, "Generating Adversarial Examples with Adversarial Networks", IJCAI 2018.
A generator G maps an image x to a perturbation G(x); a discriminator D tells clean images from x + G(x);
G minimises  L_adv + α·L_GAN + β·L_hinge  against a fixed target classifier f:

- L_adv: the C&W margin loss on f's logits Z (Carlini & Wagner 2017, f6): untargeted
  max(Z_y − max_{j≠y} Z_j, −κ), targeted max(max_{j≠t} Z_j − Z_t, −κ) (here shifted by κ so it is ≥ 0);
- L_GAN: the least-squares GAN loss (Mao et al. 2017, as the paper's implementation uses): D learns
  D(x) → 1, D(x + G(x)) → 0; G learns D(x + G(x)) → 1;
- L_hinge: max(0, ‖G(x)‖₂ − c), which keeps perturbations below c on average.

The perturbation is bounded by construction, so every generated image is inside the threat model:
L∞: ε·tanh(raw output); L2: the raw output projected onto the ε-ball. Then x + δ is clipped to [0, 1].
Training rounds x + δ to 8 bits in the forward pass (a straight-through estimator), so what G learns is
what survives being saved as a PNG; κ > 0 keeps a safety margin on top.

Public API (no Qt; the GUI and ``advgui gan train`` both call it):

- ``train_generator(classifier, images, labels, GanConfig(...), val=(x, y), on_batch=..., on_epoch=...,
  cancel=..., checkpoint=PATH, resume=False) -> GanTrainResult``; ``train_generator_on(classifier,
  TrainingSet, ...)`` holds out a validation split itself. ``on_batch`` gets a :class:`GanBatchInfo` (the G,
  D and attack losses), ``on_epoch`` a :class:`GanEpochRecord` (held-out success, float and 8-bit, and a
  :class:`GanExamples` grid of generated images); either may return True to cancel, as may ``cancel``
  (a callable or threading.Event), checked between batches. A checkpoint is written after every epoch and
  when cancelled; ``resume=True`` continues from it exactly.
- ``save_generator(result.generator, PATH, ...)`` writes G as safetensors plus a JSON sidecar;
  ``load_generator(PATH)`` reopens it; ``evaluate_generator`` measures it on images.
- :class:`GanAdversary`: the game for ``advgui train --method advgan`` (the classifier learns from G's
  images while G keeps learning against the classifier).

Nothing here unpickles: weights, optimiser states and checkpoints are safetensors, settings are JSON.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks.base import model_as_found, round_within_eps
from .attacks.minimal import adversarial_margin
from .attacks.norms import project
from .errors import UserError
from .evaluate import Cancel, is_cancelled
from .fileio import FileProblem, atomic_write_text, atomic_write_with, check_regular_file
from .training import _finite, _shift   # NaN/inf -> null for strict JSON; random 2-px shifts

GENERATOR_FORMAT = "advgui-generator-1"
CHECKPOINT_FORMAT = "advgui-gan-checkpoint-1"
MIN_SIZE = 8        # two stride-2 stages need at least 8×8 inputs


class GeneratorError(UserError):
    """A generator file or a GAN training checkpoint cannot be used as asked; ``code`` says why."""

    code = "generator"


# -- networks ------------------------------------------------------------------------------------------------

def _inorm(c: int) -> nn.Module:
    # instance normalisation (per sample and channel, so an image gets the same perturbation alone or inside
    # any batch), as GroupNorm with one channel per group: the same function, about 8% faster on the CPU
    return nn.GroupNorm(c, c)


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), _inorm(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, 1, 1), _inorm(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PerturbationNet(nn.Module):
    """The generator's network: two stride-2 convolutions down, ``blocks`` residual blocks, two transposed
    convolutions up (the paper's encoder–bottleneck–decoder, slimmed so one pass costs less than one pass
    of the demo classifier). Input in [0, 1]; output unbounded, the input's shape."""

    def __init__(self, channels: int, width: int = 16, blocks: int = 1) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), _inorm(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), _inorm(2 * w), nn.ReLU(),
            *[_Residual(2 * w) for _ in range(blocks)],
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), _inorm(w), nn.ReLU(),
            nn.ConvTranspose2d(w, channels, 4, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x * 2 - 1)
        if out.shape[-2:] != x.shape[-2:]:          # sizes not divisible by 4
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class Discriminator(nn.Module):
    """D(x): a score per image, high for clean images (least-squares GAN targets 1 and 0)."""

    def __init__(self, channels: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), _inorm(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1).mean((1, 2, 3))


@dataclass
class GeneratorSpec:
    """What a generator is for: the images it takes and the threat model its output respects."""

    channels: int
    input_size: tuple[int, int]          # (H, W)
    eps: float                           # pixel units (images in [0, 1])
    norm: str = "linf"                   # linf | l2
    target: Optional[int] = None         # the class it pushes towards; None: untargeted
    width: int = 16
    blocks: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["eps_255"] = self.eps * 255
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorSpec":
        try:
            size = tuple(int(v) for v in d["input_size"])
            spec = cls(channels=int(d["channels"]), input_size=(size[0], size[1]), eps=float(d["eps"]),
                       norm=str(d.get("norm", "linf")),
                       target=None if d.get("target") is None else int(d["target"]),
                       width=int(d.get("width", 16)), blocks=int(d.get("blocks", 1)))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"incomplete generator description ({e})") from None
        if spec.norm not in ("linf", "l2") or not math.isfinite(spec.eps) or spec.eps <= 0:
            raise ValueError(f"invalid generator description (norm {spec.norm!r}, eps {spec.eps})")
        return spec

    def shape_text(self) -> str:
        return f"{self.channels}×{self.input_size[0]}×{self.input_size[1]}"


class AdvGenerator(nn.Module):
    """G with its bound: ``G(x)`` returns adversarial images ``clip(x + δ(x), 0, 1)`` with ‖δ‖ ≤ ε."""

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = PerturbationNet(spec.channels, spec.width, spec.blocks)
        self.info: dict[str, Any] = {}    # what the file says besides the spec (trained_against, ...)

    def perturbation(self, x: torch.Tensor, eps: Optional[float] = None) -> torch.Tensor:
        """δ(x) with ‖δ‖ ≤ ``eps`` (default: the generator's ε): L∞ by tanh scaling, L2 by projection."""
        e = self.spec.eps if eps is None else float(eps)
        raw = self.net(x)
        if self.spec.norm == "linf":
            return e * torch.tanh(raw)
        return project(raw, e, "l2")

    def forward(self, x: torch.Tensor, eps: Optional[float] = None) -> torch.Tensor:
        return (x + self.perturbation(x, eps)).clamp(0, 1)


def build_generator(spec: GeneratorSpec, seed: int = 0) -> AdvGenerator:
    """A freshly initialised generator (deterministic for a seed; the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AdvGenerator(spec)


# -- losses ----------------------------------------------------------------------------------------------

def margin_loss(logits: torch.Tensor, labels: torch.Tensor, target: Optional[torch.Tensor], kappa: float
                ) -> torch.Tensor:
    """C&W's f6 per sample, shifted to be ≥ 0: zero once the image is adversarial by a logit margin κ."""
    ref = target if target is not None else labels
    return (kappa - adversarial_margin(logits, ref, target is not None)).clamp_min(0)


def hinge_loss(delta: torch.Tensor, bound: float) -> torch.Tensor:
    """max(0, ‖δ‖₂ − c) per sample."""
    return (delta.flatten(1).norm(dim=1) - bound).clamp_min(0)


def _round8_ste(x: torch.Tensor) -> torch.Tensor:
    """Rounded to 8 bits in the forward pass, identity in the backward pass (straight-through)."""
    return x + ((x * 255).round() / 255 - x).detach()


# -- configuration, events, results ----------------------------------------------------------------------

@dataclass
class GanConfig:
    eps: float = 0.2                  # perturbation bound, pixel units
    norm: str = "linf"                # linf (tanh scaling) | l2 (projection)
    target: Optional[int] = None      # targeted towards this class; None: untargeted
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3                  # Adam (β1 = 0.5) for G and D, cosine decay per batch
    kappa: float = 2.0                # C&W confidence margin on the logits
    alpha: float = 0.1                # weight of the GAN loss
    beta: float = 0.1                 # weight of the hinge loss
    hinge: float = 0.8                # hinge bound c as a share of the largest L2 norm the bound allows
    width: int = 16                   # generator width (channels of the first stage)
    blocks: int = 1                   # residual blocks in the generator
    round8: bool = True               # learn on 8-bit-rounded images (straight-through)
    augment: str = "none"             # none | shift (random shifts of up to 2 px)
    val_max: int = 500                # held-out images checked per epoch (a fixed subset)
    examples: int = 16                # images in each epoch's example grid
    seed: int = 0

    def validate(self) -> None:
        def bad(msg: str, **details: Any) -> GeneratorError:
            return GeneratorError(msg, code="gan-config", **details)
        if self.norm not in ("linf", "l2"):
            raise bad(f"unknown norm {self.norm!r}; choose linf or l2", option="norm")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise bad(f"eps must be a positive number, got {self.eps}", option="eps")
        if self.norm == "linf" and self.eps > 1:
            raise bad(f"eps {self.eps:g} is larger than the whole image range", option="eps")
        for name in ("epochs", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise bad(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}", option=name)
        for name in ("blocks", "val_max", "examples"):
            if getattr(self, name) < 0:
                raise bad(f"{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}", option=name)
        for name in ("lr",):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise bad(f"{name} must be a positive number, got {v}", option=name)
        for name in ("kappa", "alpha", "beta", "hinge"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise bad(f"{name} must be a number ≥ 0, got {v}", option=name)
        if self.augment not in ("none", "shift"):
            raise bad(f"unknown augmentation {self.augment!r}; choose none or shift", option="augment")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hinge_bound(self, numel: int) -> float:
        """c in L2 pixel units: ``hinge`` × the largest L2 norm of a perturbation within the bound."""
        largest = self.eps * math.sqrt(numel) if self.norm == "linf" else self.eps
        return self.hinge * largest


@dataclass
class GanBatchInfo:
    """Sent after every training batch: the losses of this batch (means over its images)."""

    epoch: int            # 1-based
    epochs: int
    batch: int            # 1-based within the epoch
    batches: int
    loss_g: float         # G's total: adv + α·gan + β·hinge
    loss_adv: float       # the attack loss on the target model (0 once every image is fooled by κ)
    loss_gan: float       # G's least-squares GAN loss (how far D(x + G(x)) is from "clean")
    loss_hinge: float
    loss_d: float         # D's loss
    success: float        # share of the batch's generated images that fool the model (as trained on)
    lr: float
    elapsed: float        # seconds of training so far (earlier sessions of a resumed run included)

    @property
    def progress(self) -> float:
        return ((self.epoch - 1) * self.batches + self.batch) / max(1, self.epochs * self.batches)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GanExamples:
    """A grid of generated adversarial images of one epoch, on fixed held-out images (uint8, 8-bit rounded
    within ε exactly as an export would write them)."""

    epoch: int
    clean: np.ndarray        # (k, C, H, W) uint8
    adv: np.ndarray          # (k, C, H, W) uint8
    labels: np.ndarray       # (k,) true labels
    clean_pred: np.ndarray   # (k,)
    adv_pred: np.ndarray     # (k,) prediction on the 8-bit adversarial image
    success: np.ndarray      # (k,) bool

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "labels": self.labels.tolist(), "clean_pred": self.clean_pred.tolist(),
                "adv_pred": self.adv_pred.tolist(), "success": self.success.tolist(),
                "shape": list(self.adv.shape)}


@dataclass
class GanEpochRecord:
    """One row of the log, sent after every epoch."""

    epoch: int
    loss_g: float
    loss_adv: float
    loss_gan: float
    loss_hinge: float
    loss_d: float
    train_success: float        # share of the epoch's training images fooled as they were generated
    val_success: float          # held-out images fooled (float result); NaN without held-out images
    val_success8: float         # held-out images fooled after 8-bit rounding within ε
    val_clean_acc: float
    val_l2: float               # median L2 of the 8-bit perturbation on the held-out images
    lr: float
    seconds: float
    val_seconds: float
    examples: Optional[GanExamples] = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "examples"}


@dataclass
class GanTrainResult:
    generator: AdvGenerator            # eval mode, on the classifier's device
    config: GanConfig
    history: list[GanEpochRecord]
    discriminator: Optional[Discriminator] = None
    cancelled: bool = False
    complete: bool = False             # every configured epoch is done
    elapsed: float = 0.0               # wall seconds, all sessions of a resumed run
    cpu_seconds: float = 0.0           # process CPU seconds, all sessions
    n_train: int = 0
    n_val: int = 0
    model: str = ""                    # the classifier's spec
    model_fingerprint: str = ""
    data_source: str = ""
    val_source: str = ""
    resumed_from: Optional[dict[str, int]] = None   # {"epoch", "batch"} where this session started
    position: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "batch": 0})  # last finished batch
    checkpoint: Optional[Path] = None
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def final(self) -> Optional[GanEpochRecord]:
        return self.history[-1] if self.history else None

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "epochs": [r.to_dict() for r in self.history],
                "final": None if self.final is None else self.final.to_dict(), "cancelled": self.cancelled,
                "complete": self.complete, "elapsed": self.elapsed, "cpu_seconds": self.cpu_seconds,
                "n_train": self.n_train, "n_val": self.n_val, "model": self.model,
                "model_fingerprint": self.model_fingerprint, "data": self.data_source,
                "validation": self.val_source, "resumed_from": self.resumed_from, "position": self.position,
                "notes": list(self.notes), "skipped": list(self.skipped)}


# -- fingerprints ----------------------------------------------------------------------------------------

def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights and buffers: tells whether a generator met exactly this model."""
    h = hashlib.blake2b(digest_size=8)
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(str(tuple(x.shape)).encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


# -- evaluation ------------------------------------------------------------------------------------------

def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


@dataclass
class GeneratorEval:
    n: int
    clean_acc: float
    success: float          # float adversarial images fool the model (untargeted) / hit the target
    success8: float         # the same after rounding to 8 bits within ε
    median_l2: float        # of the 8-bit perturbation
    median_linf: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def generate(generator: AdvGenerator, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """G's adversarial images for ``x`` (uint8 or float in [0, 1]), float on the generator's device."""
    dev = next(generator.parameters()).device
    was = generator.training
    generator.eval()
    try:
        return torch.cat([generator(_as_float(x[b:b + batch_size]).to(dev)) for b in range(0, len(x), batch_size)])
    finally:
        generator.train(was)


@torch.no_grad()
def evaluate_generator(generator: AdvGenerator, classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       *, target: Optional[int] = None, batch_size: int = 256, cancel: Cancel = None,
                       keep: int = 0) -> tuple[GeneratorEval, Optional[dict[str, torch.Tensor]]]:
    """Success of G's images against ``classifier`` (any model with the same input: transfer), on the float
    result and after 8-bit rounding within ε. ``keep`` > 0 also returns the first ``keep`` images
    (clean, adv8 uint8 and predictions) for an example grid. The classifier is left as found."""
    t0 = time.perf_counter()
    spec = generator.spec
    dev = next(generator.parameters()).device
    cdev = next((p.device for p in classifier.parameters()), dev)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    n = int(labels.shape[0])
    ok_c = ok_f = ok_8 = 0
    l2s, linfs = [], []
    kept: dict[str, list[torch.Tensor]] = {"clean": [], "adv": [], "clean_pred": [], "adv_pred": []}
    was = generator.training
    generator.eval()
    try:
        with model_as_found(classifier):
            for b in range(0, n, batch_size):
                if is_cancelled(cancel):
                    break
                x = _as_float(images[b:b + batch_size]).to(dev)
                y = labels[b:b + batch_size].to(cdev)
                adv = generator(x)
                adv8 = round_within_eps(x, adv, spec.eps, spec.norm)
                logits = classifier(torch.cat([x, adv, adv8.float() / 255]).to(cdev))
                pc, pa, p8 = logits.argmax(1).split(len(y))
                ref = y if target is None else torch.full_like(y, int(target))
                hit = (lambda p: p == ref) if target is not None else (lambda p: p != y)
                ok_c += int((pc == y).sum())
                ok_f += int(hit(pa).sum())
                ok_8 += int(hit(p8).sum())
                d8 = (adv8.float() - (x * 255).round()).flatten(1) / 255
                l2s.append(d8.norm(dim=1).cpu())
                linfs.append(d8.abs().amax(1).cpu())
                have = sum(len(t) for t in kept["clean"])
                if have < keep:
                    m = keep - have
                    kept["clean"].append((x[:m] * 255).round().to(torch.uint8).cpu())
                    kept["adv"].append(adv8[:m].cpu())
                    kept["clean_pred"].append(pc[:m].cpu())
                    kept["adv_pred"].append(p8[:m].cpu())
    finally:
        generator.train(was)
    done = sum(len(t) for t in l2s)
    nan = float("nan")
    ev = GeneratorEval(n=done, clean_acc=ok_c / done if done else nan, success=ok_f / done if done else nan,
                       success8=ok_8 / done if done else nan,
                       median_l2=float(torch.cat(l2s).median()) if done else nan,
                       median_linf=float(torch.cat(linfs).median()) if done else nan,
                       seconds=time.perf_counter() - t0)
    grid = {k: torch.cat(v) for k, v in kept.items()} if keep and kept["clean"] else None
    return ev, grid


# -- the game ------------------------------------------------------------------------------------------

class _Game:
    """G, D, their optimisers and one training step of AdvGAN against a (frozen) classifier."""

    def __init__(self, spec: GeneratorSpec, cfg: GanConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.g = build_generator(spec, cfg.seed).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            self.d = Discriminator(spec.channels).to(device)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.hinge_c = cfg.hinge_bound(spec.channels * spec.input_size[0] * spec.input_size[1])

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr

    def step(self, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
             eps: Optional[float] = None) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """One D update and one G update on the batch ``x`` (float, on the device). Returns the losses, the
        per-sample success of the images G was trained on, and those images (detached)."""
        cfg = self.cfg
        self.g.train()
        self.d.train()
        delta = self.g.perturbation(x, eps)
        adv = (x + delta).clamp(0, 1)
        # D: clean → 1, generated → 0 (least squares)
        loss_d = (self.d(x) - 1).pow(2).mean() + self.d(adv.detach()).pow(2).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        # G: fool the classifier, look clean to D, stay small
        seen = _round8_ste(adv) if cfg.round8 else adv
        with model_as_found(classifier):
            logits = classifier(seen)
        loss_adv = margin_loss(logits, y, target, cfg.kappa).mean()
        for p in self.d.parameters():
            p.requires_grad_(False)
        try:
            loss_gan = (self.d(adv) - 1).pow(2).mean()
        finally:
            for p in self.d.parameters():
                p.requires_grad_(True)
        loss_hinge = hinge_loss(delta, self.hinge_c).mean()
        loss_g = loss_adv + cfg.alpha * loss_gan + cfg.beta * loss_hinge
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        with torch.no_grad():
            pred = logits.argmax(1)
            succ = pred == target if target is not None else pred != y
        losses = {"loss_g": float(loss_g.detach()), "loss_adv": float(loss_adv.detach()),
                  "loss_gan": float(loss_gan.detach()), "loss_hinge": float(loss_hinge.detach()),
                  "loss_d": float(loss_d.detach())}
        return losses, succ, adv.detach()

    # -- state for checkpoints: plain tensors and JSON, no pickle --------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"g.{k}": v for k, v in self.g.state_dict().items()}
        out.update({f"d.{k}": v for k, v in self.d.state_dict().items()})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            for pid, st in opt.state_dict()["state"].items():
                for k, v in st.items():
                    out[f"{name}.{pid}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def optimizer_groups(self) -> dict[str, Any]:
        return {name: opt.state_dict()["param_groups"] for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d))}

    def load(self, tensors: dict[str, torch.Tensor], groups: dict[str, Any]) -> None:
        dev = next(self.g.parameters()).device
        self.g.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g.")})
        self.d.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d.")})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            state: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in tensors.items():
                if k.startswith(name + "."):
                    _, pid, key = k.split(".", 2)
                    state.setdefault(int(pid), {})[key] = v if key == "step" else v.to(dev)
            opt.load_state_dict({"state": state, "param_groups": groups[name]})


# -- checkpoints ---------------------------------------------------------------------------------------

def checkpoint_path(out: str | os.PathLike) -> Path:
    """``G.safetensors`` -> ``G.ckpt.safetensors`` (beside the generator it will become)."""
    p = Path(out)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".ckpt.safetensors")


def sidecar_path(out: str | os.PathLike) -> Path:
    """``G.safetensors`` -> ``G.json``."""
    p = Path(out)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".json")


def _unfinite(v: Any) -> Any:
    return float("nan") if v is None else v


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    from safetensors.torch import save_file
    return atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _read_safetensors(path: str | os.PathLike, what: str, code: str, tensors: bool = True
                      ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    try:
        p = check_regular_file(path, what)
    except FileProblem as e:
        raise GeneratorError(str(e), code=code, path=str(path)) from None
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError) as e:
        raise GeneratorError(f"{p}: not a readable safetensors file ({e})", code=code, path=str(p)) from None
    return out, meta


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of a GAN training checkpoint. Raises GeneratorError ``gan-checkpoint``."""
    tensors, meta = _read_safetensors(path, "checkpoint", "gan-checkpoint")
    try:
        state = json.loads(meta["advgui_gan_checkpoint"])
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(state.get("format"))
    except (KeyError, json.JSONDecodeError, ValueError, AttributeError):
        raise GeneratorError(f"{path}: not an advgui GAN training checkpoint", code="gan-checkpoint",
                             path=str(path)) from None
    return tensors, state


def checkpoint_status(path: str | os.PathLike) -> Optional[dict[str, Any]]:
    """What a checkpoint holds (epoch and batch reached, whether complete, its settings), or None when
    there is none at ``path``. For a GUI that offers "continue" or "start again"."""
    p = Path(path)
    if not p.exists():
        return None
    _, meta = _read_safetensors(p, "checkpoint", "gan-checkpoint", tensors=False)
    try:
        state = json.loads(meta["advgui_gan_checkpoint"])
    except (KeyError, json.JSONDecodeError):
        raise GeneratorError(f"{p}: not an advgui GAN training checkpoint", code="gan-checkpoint",
                             path=str(p)) from None
    return {"epoch": state["epoch"], "batch": state["batch"], "batches": state["batches"],
            "epochs": state["config"]["epochs"], "complete": state["complete"], "config": state["config"],
            "model": state["model"], "n_train": state.get("n_train"), "data": state.get("data", "")}


# -- saving and loading generators ---------------------------------------------------------------------

def _versions() -> dict[str, str]:
    from .. import __version__
    return {"advgui": __version__, "torch": torch.__version__}


def trained_against(classifier: nn.Module) -> dict[str, Any]:
    names = [str(c) for c in getattr(classifier, "class_names", [])]
    return {"spec": str(getattr(classifier, "spec", type(classifier).__name__)),
            "source": str(getattr(classifier, "source", "")), "classes": len(names), "class_names": names,
            "fingerprint": model_fingerprint(classifier)}


def save_generator(generator: AdvGenerator, path: str | os.PathLike, *, classifier: Optional[nn.Module] = None,
                   result: Optional[GanTrainResult] = None) -> dict[str, Path]:
    """Write G as safetensors (its description in the file's metadata, so the file alone reopens) and the
    JSON sidecar (the description, the model it was trained against, the training log), both atomically.
    Returns {"weights": ..., "sidecar": ...}. See docs/gan.md for both schemas."""
    path = Path(path)
    spec = generator.spec
    against = trained_against(classifier) if classifier is not None else generator.info.get("trained_against")
    state = {k: v.detach().cpu().contiguous() for k, v in generator.net.state_dict().items()}
    meta = {"format": GENERATOR_FORMAT, "generator": json.dumps(spec.to_dict())}
    if against is not None:
        meta["trained_against"] = json.dumps(against)
    target_name = None
    if spec.target is not None and against and spec.target < len(against.get("class_names", [])):
        target_name = against["class_names"][spec.target]
    side = {"format": GENERATOR_FORMAT, "weights": path.name, "generator": spec.to_dict(),
            "target_name": target_name, "trained_against": against,
            "training": None if result is None else result.to_dict(), "versions": _versions()}
    text = json.dumps(_finite(side), indent=2, allow_nan=False, default=str) + "\n"
    weights = _write_safetensors(path, state, meta)
    sidecar = atomic_write_text(sidecar_path(path), text)
    return {"weights": weights, "sidecar": sidecar}


def read_generator_spec(path: str | os.PathLike) -> tuple[GeneratorSpec, dict[str, Any]]:
    """The description of a generator file without loading its weights: (spec, other metadata)."""
    _, meta = _read_safetensors(path, "generator file", "generator-file", tensors=False)
    return _spec_from_meta(path, meta)


def describe_generator(path: str | os.PathLike) -> str:
    """One line about a generator file for people (a front end shows it under the file field), e.g.
    ``1×28×28 images · L∞ ε 0.2 (= 51/255) · untargeted · trained against demo``. Raises GeneratorError."""
    spec, info = read_generator_spec(path)
    bound = ("L∞" if spec.norm == "linf" else "L2") + f" ε {spec.eps:.4g}"
    if spec.norm == "linf":
        bound += f" (= {spec.eps * 255:.3g}/255)"
    against = info.get("trained_against") or {}
    aim = "untargeted"
    if spec.target is not None:
        names = against.get("class_names") or []
        aim = f"towards class {spec.target}" + (f" ({names[spec.target]})" if spec.target < len(names)
                                                  and str(names[spec.target]) != str(spec.target) else "")
    parts = [f"{spec.shape_text()} images", bound, aim]
    if against.get("spec"):
        parts.append(f"trained against {Path(str(against['spec'])).name}")
    return " · ".join(parts)


def _spec_from_meta(path: str | os.PathLike, meta: dict[str, str]) -> tuple[GeneratorSpec, dict[str, Any]]:
    if meta.get("format") != GENERATOR_FORMAT or "generator" not in meta:
        raise GeneratorError(f"{path}: not an advgui generator (no '{GENERATOR_FORMAT}' metadata); train one with "
                             "'advgui gan train'", code="generator-file", path=str(path))
    try:
        spec = GeneratorSpec.from_dict(json.loads(meta["generator"]))
        info = {"trained_against": json.loads(meta["trained_against"])} if "trained_against" in meta else {}
    except (json.JSONDecodeError, ValueError) as e:
        raise GeneratorError(f"{path}: the generator's description is damaged ({e})", code="generator-file",
                             path=str(path)) from None
    return spec, info


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> AdvGenerator:
    """Reopen a generator saved by :func:`save_generator` (eval mode, frozen, on ``device``)."""
    tensors, meta = _read_safetensors(path, "generator file", "generator-file")
    spec, info = _spec_from_meta(path, meta)
    g = AdvGenerator(spec)
    try:
        g.net.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise GeneratorError(f"{path}: the weights do not fit the generator it describes "
                             f"({first[1].strip() if len(first) > 1 else first[0]})", code="generator-file",
                             path=str(path)) from None
    g.info = info
    for p in g.parameters():
        p.requires_grad_(False)
    return g.to(device).eval()


_CACHE: dict[tuple, AdvGenerator] = {}
_CACHE_LOCK = threading.Lock()


def cached_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> AdvGenerator:
    """:func:`load_generator`, remembered per (file, its size and mtime, device): an attack over many
    batches, or the live explorer, reads the file once. Do not train the returned module."""
    p = Path(path).expanduser()
    try:
        st = os.stat(p)
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size, str(torch.device(device)))
    except OSError:
        key = None
    with _CACHE_LOCK:
        if key is not None and key in _CACHE:
            return _CACHE[key]
    g = load_generator(p, device)
    if key is not None:
        with _CACHE_LOCK:
            if len(_CACHE) >= 4:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = g
    return g


def check_generator_fits(spec: GeneratorSpec, path: str | os.PathLike, *, images_shape: Optional[Sequence[int]] = None,
                         eps: Optional[float] = None, norm: Optional[str] = None, target: Optional[int] = None,
                         targeted: bool = False) -> None:
    """Refuse a generator made for other images or another threat model; the message names both values."""
    def refuse(what: str, have: Any, want: Any, text: str) -> GeneratorError:
        return GeneratorError(f"{path}: {text}", code="generator-mismatch", what=what, generator=have, given=want,
                              path=str(path))
    if images_shape is not None:
        c, h, w = (int(v) for v in images_shape[-3:])
        if c != spec.channels:
            raise refuse("channels", spec.channels, c, f"the generator was trained for {spec.channels}-channel "
                         f"images; these have {c} channel{'s' if c != 1 else ''}")
        if (h, w) != tuple(spec.input_size):
            raise refuse("input_size", list(spec.input_size), [h, w], f"the generator was trained for "
                         f"{spec.input_size[0]}×{spec.input_size[1]} images; these are {h}×{w}")
    if norm is not None and norm != spec.norm:
        raise refuse("norm", spec.norm, norm, f"the generator was trained for the {spec.norm} norm, not {norm}")
    if eps is not None and abs(float(eps) - spec.eps) > 1e-6 * max(1.0, spec.eps):
        raise refuse("eps", spec.eps, float(eps), f"the generator was trained for ε {spec.eps:.4g} "
                     f"(= {spec.eps * 255:.3g}/255); ε {float(eps):.4g} (= {float(eps) * 255:.3g}/255) was asked "
                     "(leave ε out to use the generator's, or train one for this ε)")
    if targeted:
        if spec.target is None:
            raise refuse("target", None, target, f"the generator is untargeted; it cannot aim at class {target}")
        if target is not None and int(target) != spec.target:
            raise refuse("target", spec.target, int(target), f"the generator was trained towards class "
                         f"{spec.target}; class {target} was asked")


# -- training -----------------------------------------------------------------------------------------

def _epoch_seed(seed: int, epoch: int, batch: int = -1) -> int:
    # per (epoch, batch) seeds: a run resumed mid-epoch replays exactly the same order and augmentation
    return (seed * 1_000_003 + epoch * 10_007 + batch + 1) & 0x7FFF_FFFF_FFFF_FFFF


def _lr_at(cfg: GanConfig, it: int, total: int) -> float:
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(it, total) / max(1, total)))


_COMPAT_IGNORED = ("epochs", "val_max", "examples")


def _check_resume(path: Path, state: dict[str, Any], cfg: GanConfig, spec: GeneratorSpec, model_fp: str,
                  data_fp: str, n_train: int) -> None:
    def refuse(key: str, have: Any, want: Any) -> GeneratorError:
        return GeneratorError(f"{path}: the checkpoint was trained with {key} {have}; this run asks for {want}. "
                              "Use the same settings to resume, or start again (--overwrite)",
                              code="gan-checkpoint-mismatch", key=key, checkpoint=have, given=want, path=str(path))
    old = state["config"]
    new = cfg.to_dict()
    for k, v in new.items():
        if k not in _COMPAT_IGNORED and old.get(k) != v:
            raise refuse(k.replace("_", "-"), old.get(k), v)
    if state["spec"] != spec.to_dict():
        raise refuse("images", GeneratorSpec.from_dict(state["spec"]).shape_text(), spec.shape_text())
    if state["model_fingerprint"] != model_fp:
        raise refuse("model", f"{state['model']} (weights {state['model_fingerprint']})", f"weights {model_fp}")
    if state["data_fingerprint"] != data_fp:
        raise refuse("training images", f"{state['n_train']} images ({state['data_fingerprint']})",
                     f"{n_train} images ({data_fp})")


def train_generator(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    config: Optional[GanConfig] = None, *, val: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                    on_batch: Optional[Callable[[GanBatchInfo], Optional[bool]]] = None,
                    on_epoch: Optional[Callable[[GanEpochRecord], Optional[bool]]] = None,
                    cancel: Cancel = None, checkpoint: Optional[str | os.PathLike] = None, resume: bool = False,
                    data_source: str = "", val_source: str = "") -> GanTrainResult:
    """Train an AdvGAN generator against ``classifier`` on ``images`` ((N, C, H, W) uint8 or float in [0, 1])
    with true ``labels`` (untargeted attacks push away from them).

    ``val`` = (images, labels): after every epoch G's success on them (float and 8-bit) and an example grid.
    ``checkpoint``: a path written after every epoch and when cancelled (G, D, both optimisers, the log,
    the position); with ``resume=True`` training continues from it exactly as if it had not stopped
    (``config.epochs`` may be raised to train longer). The classifier is never changed.
    Raises GeneratorError for bad settings, images too small, or a checkpoint that does not match.
    """
    cfg = config or GanConfig()
    cfg.validate()
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    y_all = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    x_all = images
    n = int(y_all.shape[0])
    if n == 0:
        raise GeneratorError("no training images", code="gan-data")
    if x_all.ndim != 4 or x_all.shape[0] != n:
        raise GeneratorError(f"{n} labels for images of shape {tuple(x_all.shape)}", code="gan-data")
    c, h, w = (int(v) for v in x_all.shape[1:])
    if min(h, w) < MIN_SIZE:
        raise GeneratorError(f"images of {h}×{w} are too small for the generator (at least {MIN_SIZE}×{MIN_SIZE})",
                             code="gan-data", size=[h, w])
    num_classes = int(getattr(classifier, "num_classes", 0)) or None
    if num_classes is not None:
        if int(y_all.min()) < 0 or int(y_all.max()) >= num_classes:
            raise GeneratorError(f"labels out of range 0..{num_classes - 1}", code="gan-data")
        if cfg.target is not None and not 0 <= cfg.target < num_classes:
            raise GeneratorError(f"target {cfg.target} out of range 0..{num_classes - 1}", code="gan-config",
                                 option="target")
    dev = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    spec = GeneratorSpec(channels=c, input_size=(h, w), eps=cfg.eps, norm=cfg.norm, target=cfg.target,
                         width=cfg.width, blocks=cfg.blocks)
    game = _Game(spec, cfg, dev)
    model_fp = model_fingerprint(classifier)
    data_fp = _data_fingerprint(x_all, y_all)
    batches = math.ceil(n / cfg.batch_size)
    total_iters = batches * cfg.epochs
    vx = vy = None
    if val is not None and len(val[1]):
        vx, vy = val[0][:cfg.val_max], torch.as_tensor(val[1], dtype=torch.long).reshape(-1)[:cfg.val_max]
    result = GanTrainResult(game.g, cfg, [], discriminator=game.d, n_train=n, n_val=0 if vy is None else len(vy),
                            model=str(getattr(classifier, "spec", "")), model_fingerprint=model_fp,
                            data_source=data_source, val_source=val_source)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    result.checkpoint = ckpt
    start_epoch, start_batch = 1, 0
    before_wall = before_cpu = 0.0
    partial = {"sums": {}, "ok": 0, "seen": 0, "seconds": 0.0}
    if resume:
        if ckpt is None or not ckpt.exists():
            raise GeneratorError(f"{ckpt}: no checkpoint to resume from", code="gan-no-checkpoint",
                                 path=str(ckpt))
        tensors, state = read_checkpoint(ckpt)
        _check_resume(ckpt, state, cfg, spec, model_fp, data_fp, n)
        game.load(tensors, state["optimizers"])
        result.history = [GanEpochRecord(**{k: _unfinite(v) for k, v in r.items()}) for r in state["history"]]
        before_wall, before_cpu = state["elapsed"], state["cpu_seconds"]
        done_epoch, done_batch = int(state["epoch"]), int(state["batch"])
        if done_batch >= batches:          # that epoch was finished
            start_epoch, start_batch = done_epoch + 1, 0
        else:
            start_epoch, start_batch = done_epoch, done_batch
            partial = state["partial"]
        result.resumed_from = {"epoch": done_epoch, "batch": done_batch}
        result.position = {"epoch": done_epoch, "batch": done_batch}
        result.notes.append(f"resumed from {ckpt} after epoch {done_epoch}, batch {done_batch} of {batches}")

    def elapsed() -> float:
        return before_wall + time.perf_counter() - t_wall

    def save_ckpt(epoch: int, batch: int, part: dict[str, Any], complete: bool) -> None:
        if ckpt is None:
            return
        state = {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "spec": spec.to_dict(),
                 "model": result.model, "model_fingerprint": model_fp, "data_fingerprint": data_fp,
                 "n_train": n, "data": data_source, "validation": val_source, "epoch": epoch, "batch": batch,
                 "batches": batches, "complete": complete, "partial": part,
                 "history": [r.to_dict() for r in result.history], "optimizers": game.optimizer_groups(),
                 "elapsed": elapsed(), "cpu_seconds": before_cpu + time.process_time() - t_cpu,
                 "versions": _versions()}
        meta = {"advgui_gan_checkpoint": json.dumps(_finite(state), allow_nan=False)}
        _write_safetensors(ckpt, game.tensors(), meta)

    keys = ("loss_g", "loss_adv", "loss_gan", "loss_hinge", "loss_d")
    empty = {"sums": {}, "ok": 0, "seen": 0, "seconds": 0.0}
    nan = float("nan")
    for epoch in range(start_epoch, cfg.epochs + 1):
        te = time.perf_counter()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch)))
        first = start_batch if epoch == start_epoch else 0
        part = partial if first > 0 else empty
        sums: dict[str, float] = dict(part["sums"])
        ok, seen, secs_before = int(part["ok"]), int(part["seen"]), float(part["seconds"])
        lr_t = _lr_at(cfg, (epoch - 1) * batches + first, total_iters)
        for bi in range(first, batches):
            if is_cancelled(cancel):
                result.cancelled = True
                break
            idx = perm[bi * cfg.batch_size:(bi + 1) * cfg.batch_size]
            xb = _as_float(x_all[idx])
            if cfg.augment == "shift":
                xb = _shift(xb, torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, bi)))
            xb, yb = xb.to(dev), y_all[idx].to(dev)
            target_t = None if cfg.target is None else torch.full_like(yb, cfg.target)
            lr_t = _lr_at(cfg, (epoch - 1) * batches + bi, total_iters)
            game.set_lr(lr_t)
            losses, succ, _ = game.step(classifier, xb, yb, target_t)
            if not all(math.isfinite(v) for v in losses.values()):
                raise GeneratorError(f"GAN training diverged: a loss became {losses} at epoch {epoch}, batch "
                                     f"{bi + 1}; try a smaller learning rate", code="gan-diverged",
                                     epoch=epoch, batch=bi + 1, lr=lr_t)
            for k in keys:
                sums[k] = sums.get(k, 0.0) + losses[k] * len(yb)
            ok += int(succ.sum())
            seen += len(yb)
            result.position = {"epoch": epoch, "batch": bi + 1}
            if on_batch is not None and on_batch(GanBatchInfo(epoch, cfg.epochs, bi + 1, batches, **losses,
                                                              success=float(succ.float().mean()), lr=lr_t,
                                                              elapsed=elapsed())):
                result.cancelled = True
                break
        train_secs = secs_before + time.perf_counter() - te
        done = result.position["batch"] if result.position["epoch"] == epoch else first
        if result.cancelled and done < batches:
            if seen:    # the state after the last finished batch, to resume mid-epoch
                save_ckpt(epoch, done, {"sums": sums, "ok": ok, "seen": seen, "seconds": train_secs}, False)
            break
        tv = time.perf_counter()
        ev = examples = None
        if vx is not None and vy is not None:
            ev, grid = evaluate_generator(game.g, classifier, vx, vy, target=cfg.target, keep=cfg.examples)
            if grid is not None:
                k = len(grid["adv_pred"])
                labs = vy[:k]
                hit = grid["adv_pred"] == cfg.target if cfg.target is not None else grid["adv_pred"] != labs
                examples = GanExamples(epoch, grid["clean"].numpy(), grid["adv"].numpy(), labs.numpy(),
                                       grid["clean_pred"].numpy(), grid["adv_pred"].numpy(), hit.numpy())
        rec = GanEpochRecord(epoch=epoch, **{k: sums.get(k, nan) / max(1, seen) for k in keys},
                             train_success=ok / max(1, seen),
                             val_success=ev.success if ev else nan, val_success8=ev.success8 if ev else nan,
                             val_clean_acc=ev.clean_acc if ev else nan, val_l2=ev.median_l2 if ev else nan,
                             lr=lr_t, seconds=train_secs, val_seconds=time.perf_counter() - tv, examples=examples)
        result.history.append(rec)
        result.position = {"epoch": epoch, "batch": batches}
        save_ckpt(epoch, batches, empty, epoch == cfg.epochs)
        if (on_epoch is not None and on_epoch(rec)) or result.cancelled or is_cancelled(cancel):
            result.cancelled = epoch < cfg.epochs
            break
    result.complete = (not result.cancelled and result.position["epoch"] >= cfg.epochs
                       and result.position["batch"] >= batches)
    if resume and start_epoch > cfg.epochs:
        result.notes.append(f"the checkpoint already holds {start_epoch - 1} epochs; nothing left to train")
    for p in game.g.parameters():
        p.requires_grad_(False)
    game.g.eval()
    game.d.eval()
    result.elapsed = elapsed()
    result.cpu_seconds = before_cpu + time.process_time() - t_cpu
    return result


def train_generator_on(classifier: nn.Module, data: Any, config: Optional[GanConfig] = None, *,
                       val: Any = None, val_fraction: float = 0.1, **kwargs: Any) -> GanTrainResult:
    """:func:`train_generator` on a :class:`~advgui.core.training.TrainingSet` (see :func:`load_gan_data`);
    without ``val``, a stratified ``val_fraction`` of ``data`` is held out (and G never trains on it)."""
    from .training import split_holdout
    cfg = config or GanConfig()
    if val is None:
        (tx, ty), (vx, vy) = split_holdout(data.images, data.labels, val_fraction, cfg.seed)
        vsrc = f"{len(vy)} images held out from {data.source}"
    else:
        (tx, ty), (vx, vy) = (data.images, data.labels), (val.images, val.labels)
        vsrc = val.source
    result = train_generator(classifier, tx, ty, cfg, val=(vx, vy), data_source=data.source, val_source=vsrc,
                             **kwargs)
    result.skipped = [*data.skipped, *(val.skipped if val is not None else [])]
    return result


def load_gan_data(spec: str | os.PathLike, classifier: nn.Module) -> Any:
    """Images for GAN training: ``demo-digits`` (and ``demo-digits-test``), an ImageFolder tree whose
    subfolders are named after the classifier's classes, or any folder of images, labelled then by the
    classifier's clean predictions (an untargeted generator only needs to move away from them).
    Returns a TrainingSet (uint8 images at the model's input size). Raises DataError."""
    from .data import open_images
    from .training import DEMO_DATA, TrainingSet, load_training_set
    s = str(spec)
    if s in DEMO_DATA:
        return load_training_set(s, classifier)
    iset = open_images(s, getattr(classifier, "class_names", None))
    idx, x = iset.load_all(classifier.preprocess)
    skipped = [str(k) for k in iset.skipped]
    if iset.labelled:
        y = iset.labels_tensor(idx)
        assert y is not None
        return TrainingSet(x, y, s, skipped)
    dev = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    with torch.no_grad(), model_as_found(classifier):
        y = torch.cat([classifier(_as_float(x[b:b + 256]).to(dev)).argmax(1).cpu() for b in range(0, len(x), 256)])
    return TrainingSet(x, y, f"{s} (labels: the model's clean predictions)", skipped)


# -- GAN adversarial training of the classifier --------------------------------------------------------

class GanAdversary:
    """The hardening game of ``advgui train --method advgan``: every call lets D and G take one step against
    the classifier as it is now (frozen for that step), then returns G's images for the classifier to learn
    from. G starts untrained and learns along with the classifier (Xiao et al. 2018, §3.3; the seed's
    generator-versus-discriminator game). ``last`` holds the latest G/D losses for a live view."""

    def __init__(self, channels: int, input_size: tuple[int, int], eps: float, norm: str = "linf", *,
                 config: Optional[GanConfig] = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        base = config or GanConfig()
        self.cfg = GanConfig(**{**base.to_dict(), "eps": eps, "norm": norm, "target": None, "seed": seed,
                                "round8": False})
        self.cfg.validate()
        if min(input_size) < MIN_SIZE:
            raise GeneratorError(f"images of {input_size[0]}×{input_size[1]} are too small for the generator "
                                 f"(at least {MIN_SIZE}×{MIN_SIZE})", code="gan-data", size=list(input_size))
        spec = GeneratorSpec(channels, tuple(input_size), eps, norm, None, self.cfg.width, self.cfg.blocks)
        self.game = _Game(spec, self.cfg, torch.device(device))
        self.last: dict[str, float] = {}

    @property
    def generator(self) -> AdvGenerator:
        return self.game.g

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Optional[float] = None,
                 lr: Optional[float] = None) -> torch.Tensor:
        """G's adversarial images for the batch at ``eps`` (≤ the constructed ε; for a ramp), after one
        G/D update against ``model`` (the images of that update: G as it was before it). The model is left
        as found."""
        if lr is not None:
            self.game.set_lr(lr)
        if eps is not None and eps <= 0:
            return x
        losses, succ, adv = self.game.step(model, x, y, None, eps)
        self.last = {**losses, "success": float(succ.float().mean())}
        return adv
