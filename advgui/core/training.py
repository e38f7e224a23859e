"""Adversarial training: PGD (Madry et al. 2018), fast FGSM with random start (Wong et al. 2020) and plain
training as the baseline, with validation every epoch and a catastrophic-overfitting detector.

``train(classifier, images, labels, TrainConfig(...), val=(x, y), on_batch=..., on_epoch=..., cancel=...)``
trains a copy of the classifier (the one passed in is left untouched) and returns a :class:`TrainResult`;
``save_training(result, "model.safetensors")`` writes the weights (safetensors, reopenable by path) and the
log (CSV + JSON, atomically). Everything runs in the calling thread: a GUI worker passes callbacks that
forward plain values, and a threading.Event (or any callable) to cancel between batches.

Choices, and why:
- ε ramps up linearly over the first ``ramp_epochs`` (per batch): PGD training at full ε from random
  weights can stall on a small set; a ramp is the simplest fix (as in Gowal et al. 2018's IBP schedule).
- Adversarial examples are made in eval mode with frozen parameters (BatchNorm statistics are updated only
  by the training forward pass); the update itself runs in train mode.
- fgsm-rs: uniform random start in the ε-ball, one sign step of 1.25·ε, projection (Wong et al. 2020,
  "Fast is better than free"). Its known failure, catastrophic overfitting, is watched each epoch:
  validation PGD accuracy collapsing while FGSM accuracy holds or climbs.
- Validation uses the same attacks as ``advgui eval`` (FGSM and PGD with a random start, float re-check).
"""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import AttackError, make_attack
from .attacks.base import model_as_found
from .attacks.gradient import default_step_size
from .attacks.norms import project, random_start, step_direction
from .data import DataError, digits_dataset, open_images
from .errors import UserError
from .evaluate import Cancel, is_cancelled
from .fileio import atomic_write_text
from .models import DIGITS_ARCH, Classifier, DigitsCNN, ModelError, save_weights

METHODS = ("pgd", "fgsm-rs", "clean")


class TrainingError(UserError):
    """Training cannot go on (the loss became NaN) or its result cannot be saved; ``code`` says which."""

    code = "training"
DEMO_DATA = {"demo-digits": "train", "demo-digits-train": "train", "demo-digits-test": "test"}


@dataclass
class TrainConfig:
    method: str = "pgd"               # pgd | fgsm-rs | clean
    eps: float = 0.1                  # training budget (pixel units)
    epochs: int = 10
    norm: str = "linf"
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"           # adam | sgd (momentum 0.9)
    weight_decay: float = 0.0
    schedule: str = "cosine"          # cosine (per batch) | constant
    pgd_steps: int = 7                # training PGD steps
    pgd_step_size: Optional[float] = None   # None: 2.5·ε/steps (Madry et al.)
    fgsm_step: float = 1.25           # fgsm-rs step, in units of ε (Wong et al. 2020)
    ramp_epochs: Optional[int] = None  # None: epochs // 3 for adversarial methods; 0: no ramp
    augment: str = "shift"            # shift (random shifts up to 2 px) | none
    from_scratch: bool = False        # re-initialise the weights before training
    val_eps: Optional[float] = None   # None: the training ε
    val_steps: int = 10               # validation PGD steps (random start)
    val_max: int = 1000               # validate on at most this many images (a fixed subset)
    overfit_drop: float = 0.2         # PGD accuracy this far below its best ...
    overfit_gap: float = 0.2          # ... and this far below FGSM accuracy: catastrophic overfitting
    on_overfit: str = "stop"          # stop (restore the best-PGD epoch's weights) | continue
    seed: int = 0

    def validate(self) -> None:
        if self.method not in METHODS:
            raise AttackError(f"unknown training method {self.method!r}; choose from {', '.join(METHODS)}")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise AttackError(f"eps must be a non-negative number, got {self.eps}")
        if self.method != "clean" and self.eps == 0:
            raise AttackError(f"{self.method} training needs eps > 0 (use --method clean for plain training)")
        if self.norm == "linf" and self.eps > 1:
            raise AttackError(f"eps {self.eps:g} is larger than the whole image range")
        if self.norm not in ("linf", "l2"):
            raise AttackError(f"unknown norm {self.norm!r}; choose linf or l2")
        for name in ("epochs", "batch_size", "pgd_steps", "val_steps", "val_max"):
            if getattr(self, name) < 1:
                raise AttackError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise AttackError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise AttackError(f"unknown optimizer {self.optimizer!r}; choose adam or sgd")
        if self.schedule not in ("cosine", "constant"):
            raise AttackError(f"unknown schedule {self.schedule!r}; choose cosine or constant")
        if self.augment not in ("shift", "none"):
            raise AttackError(f"unknown augmentation {self.augment!r}; choose shift or none")
        if self.on_overfit not in ("stop", "continue"):
            raise AttackError(f"on_overfit must be stop or continue, got {self.on_overfit!r}")
        if self.ramp_epochs is not None and self.ramp_epochs < 0:
            raise AttackError("ramp-epochs must be 0 or more")

    @property
    def effective_ramp_epochs(self) -> int:
        if self.method == "clean":
            return 0
        return self.epochs // 3 if self.ramp_epochs is None else min(self.ramp_epochs, self.epochs)


@dataclass
class BatchInfo:
    """Sent after every training batch."""

    epoch: int          # 1-based
    epochs: int
    batch: int          # 1-based within the epoch
    batches: int
    eps: float          # the (ramped) training ε of this batch
    loss: float         # mean training loss of the batch (on the inputs trained on)
    acc: float          # accuracy on those inputs
    lr: float
    elapsed: float      # seconds since training started

    @property
    def progress(self) -> float:
        """0..1 over the whole run (validation excluded)."""
        return ((self.epoch - 1) * self.batches + self.batch) / max(1, self.epochs * self.batches)


@dataclass
class EpochRecord:
    """One row of the training log."""

    epoch: int
    train_eps: float            # ε at the end of the epoch
    lr: float                   # learning rate at the end of the epoch
    train_loss: float
    train_acc: float
    val_clean_acc: float
    val_fgsm_acc: float
    val_pgd_acc: float
    seconds: float              # training time of the epoch
    val_seconds: float
    overfit: bool = False


@dataclass
class TrainResult:
    classifier: Classifier              # the trained copy, in eval mode
    config: TrainConfig
    history: list[EpochRecord]
    cancelled: bool = False
    overfit: Optional[str] = None       # the detector's message, if it fired
    restored_epoch: Optional[int] = None  # weights come from this epoch (best PGD) instead of the last
    elapsed: float = 0.0
    n_train: int = 0
    n_val: int = 0
    notes: list[str] = field(default_factory=list)   # things the user should know (skipped files, …)
    data_source: str = ""
    val_source: str = ""
    skipped: list[str] = field(default_factory=list)  # unreadable files left out of the data, with reasons
    warnings: list[dict] = field(default_factory=list)  # model-check flags ({code, message}) from before training

    @property
    def final(self) -> Optional[EpochRecord]:
        if not self.history:
            return None
        if self.restored_epoch is not None:
            return next(r for r in self.history if r.epoch == self.restored_epoch)
        return self.history[-1]


# -- catastrophic overfitting -----------------------------------------------------------------------------

def detect_catastrophic_overfitting(pgd_acc: Sequence[float], fgsm_acc: Sequence[float], *, drop: float = 0.2,
                                    gap: float = 0.2, fgsm_slack: float = 0.02) -> Optional[str]:
    """Catastrophic overfitting (Wong et al. 2020) in the latest epoch of a validation history.

    Fires when the latest PGD accuracy fell at least ``drop`` below its best earlier value, while FGSM
    accuracy did not fall (within ``fgsm_slack``) from that best epoch and now exceeds PGD accuracy by at
    least ``gap``: the model learned to beat the single-step attack, not the threat model. Returns a
    message naming the epochs and numbers, or None. A plain robustness decline (both attacks fall
    together) is not this failure and does not fire.
    """
    if len(pgd_acc) < 2 or len(pgd_acc) != len(fgsm_acc):
        return None
    p, f = pgd_acc[-1], fgsm_acc[-1]
    earlier = list(pgd_acc[:-1])
    if not all(math.isfinite(v) for v in (p, f, *earlier)):
        return None
    j = max(range(len(earlier)), key=lambda i: (earlier[i], i))
    best = earlier[j]
    if p <= best - drop and f >= fgsm_acc[j] - fgsm_slack and f - p >= gap:
        return (f"catastrophic overfitting at epoch {len(pgd_acc)}: validation PGD accuracy fell from "
                f"{100 * best:.1f}% (epoch {j + 1}) to {100 * p:.1f}% while FGSM accuracy is {100 * f:.1f}% "
                f"(was {100 * fgsm_acc[j]:.1f}%); the model beats the one-step attack but not PGD (Wong et al. 2020)")
    return None


# -- data ---------------------------------------------------------------------------------------------

@dataclass
class TrainingSet:
    images: torch.Tensor        # (N, C, H, W) uint8 at the model's input size
    labels: torch.Tensor        # (N,) int64
    source: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_training_set(spec: str | os.PathLike, classifier: Classifier) -> TrainingSet:
    """An ImageFolder tree whose subfolders are named after the classifier's classes (bad files are
    skipped with reasons), or ``demo-digits`` / ``demo-digits-test``: the built-in digits splits.
    Raises DataError."""
    s = str(spec)
    if s in DEMO_DATA:
        names = [str(c) for c in classifier.class_names]
        if names != [str(i) for i in range(10)]:
            raise DataError(f"{s}: the built-in digits have classes 0..9; the model has {classifier.num_classes} "
                            f"classes ({', '.join(names[:4])}, …)")
        x, y = digits_dataset(DEMO_DATA[s], classifier.input_size)
        if classifier.channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        return TrainingSet(x, y, f"{s} (built-in digits, {DEMO_DATA[s]} split)")
    iset = open_images(s, classifier.class_names)
    if not iset.labelled:
        shown = ", ".join(classifier.class_names[:5])
        raise DataError(f"{s}: training needs an ImageFolder tree, one subfolder per class named after the model's "
                        f"classes ({shown}{', …' if classifier.num_classes > 5 else ''}), with the images inside")
    idx, x = iset.load_all(classifier.preprocess)
    y = iset.labels_tensor(idx)
    assert y is not None
    left_out = [f"{Path(s) / name}/: {n} image(s) left out, not a class of the model"
                for name, n in iset.other_folders.items()]
    if iset.loose_files:
        left_out.append(f"{s}: {iset.loose_files} image(s) outside any class folder left out")
    return TrainingSet(x, y, s, [str(k) for k in iset.skipped] + left_out)


def split_holdout(x: torch.Tensor, y: torch.Tensor, fraction: float = 0.1, seed: int = 0
                  ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Stratified split: (train, val), with about ``fraction`` of each class (at least one, when the class
    has two or more images) in val."""
    g = torch.Generator().manual_seed(seed)
    val_mask = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y):
        idx = (y == c).nonzero()[:, 0]
        if len(idx) < 2:
            continue
        k = max(1, int(round(fraction * len(idx))))
        val_mask[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    return (x[~val_mask], y[~val_mask]), (x[val_mask], y[val_mask])


def architecture_of(classifier: Classifier) -> str:
    """The ``arch`` metadata that lets ``load_model(path)`` rebuild this network. Raises ModelError for
    networks that cannot be rebuilt from a state_dict (TorchScript, pickled modules)."""
    if isinstance(classifier.net, DigitsCNN):
        return DIGITS_ARCH
    spec = str(classifier.spec)
    if spec.startswith(("torchvision:", "timm:")):
        return spec
    path = Path(spec)
    if path.suffix.lower() == ".safetensors" and path.exists():
        from .models import _read_safetensors
        arch = _read_safetensors(path)[1].get("arch")
        if arch:
            return arch
    raise ModelError(f"{spec}: cannot save trained weights for this model (only the demo network, torchvision:ARCH, "
                     "timm:NAME and advgui .safetensors models can be rebuilt from saved weights)")


# -- the loop -------------------------------------------------------------------------------------------

def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels, zero fill (pad and crop)."""
    n, _, h, w = x.shape
    m = max_shift
    pad = F.pad(x, (m, m, m, m))
    dx = torch.randint(0, 2 * m + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * m + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for sx in range(2 * m + 1):            # at most 25 slices, whatever the batch size
        for sy in range(2 * m + 1):
            sel = ((dx == sx) & (dy == sy)).nonzero()[:, 0]
            if sel.numel():
                out[sel] = pad[sel, :, sy:sy + h, sx:sx + w]
    return out


def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str, eps: float, norm: str = "linf",
            steps: int = 7, step_size: Optional[float] = None, fgsm_step: float = 1.25,
            gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """Training-time adversarial examples (no telemetry, no 8-bit re-check: this is the inner loop).

    pgd: random start, ``steps`` projected steps of ``step_size`` (default 2.5·ε/steps).
    fgsm-rs: random start, one step of ``fgsm_step``·ε, projected (Wong et al. 2020).
    clean, or ε = 0: ``x`` unchanged. The model is left as found.
    """
    if method == "clean" or eps <= 0:
        return x
    if method == "pgd":
        n_steps, alpha = steps, step_size if step_size is not None else default_step_size(eps, steps)
    elif method == "fgsm-rs":
        n_steps, alpha = 1, fgsm_step * eps
    else:
        raise AttackError(f"unknown training method {method!r}")
    gens = None if gen is None else [gen] * x.shape[0]
    with model_as_found(model):
        adv = random_start(x, eps, norm, gens)
        for _ in range(n_steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), y, reduction="sum")
            grad, = torch.autograd.grad(loss, adv)
            adv = (x + project(adv.detach() + alpha * step_direction(grad, norm) - x, eps, norm)).clamp(0, 1)
    return adv.detach()


@torch.no_grad()
def _clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    dev = _device(model)
    ok = 0
    with model_as_found(model):
        for b in range(0, len(y), batch_size):
            ok += int((model(_as_float(x[b:b + batch_size]).to(dev)).argmax(1).cpu() == y[b:b + batch_size]).sum())
    return ok / max(1, len(y))


def validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
             pgd_steps: int = 10, batch_size: int = 256, seed: int = 0, cancel: Cancel = None
             ) -> tuple[float, float, float]:
    """(clean, FGSM, PGD) accuracy with the attacks ``advgui eval`` uses (float re-check).
    NaNs when there is nothing to validate or ``cancel`` fires between batches."""
    nan = float("nan")
    if len(y) == 0:
        return nan, nan, nan
    clean = _clean_accuracy(model, x, y, batch_size)
    if eps <= 0:
        return clean, clean, clean
    fgsm = make_attack("fgsm", eps=eps, norm=norm)
    pgd = make_attack("pgd", eps=eps, steps=pgd_steps, norm=norm)
    ok_f = ok_p = 0
    for b in range(0, len(y), batch_size):
        if is_cancelled(cancel):
            return clean, nan, nan
        xb, yb = _as_float(x[b:b + batch_size]), y[b:b + batch_size]
        ok_f += int((fgsm.run(model, xb, yb, seed=seed).adv_pred == yb.numpy()).sum())
        ok_p += int((pgd.run(model, xb, yb, seed=seed).adv_pred == yb.numpy()).sum())
    return clean, ok_f / len(y), ok_p / len(y)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _reinit(net: nn.Module, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in net.modules():
            if hasattr(m, "reset_parameters") and m is not net:
                m.reset_parameters()


METHODS = (*METHODS, "advgan")     # GAN adversarial training: see gan_adversary


def gan_adversary(model: Classifier, images: torch.Tensor, cfg: TrainConfig):
    """The adversary of ``method="advgan"``: an AdvGAN generator and discriminator that start untrained and
    learn, one step per batch, against the classifier as it trains (Xiao et al. 2018, §3.3)."""
    from .gan import GanAdversary
    return GanAdversary(int(images.shape[1]), (int(images.shape[2]), int(images.shape[3])), cfg.eps, cfg.norm,
                        seed=cfg.seed, device=_device(model))


def train(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, config: Optional[TrainConfig] = None,
          *, val: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
          on_batch: Optional[Callable[[BatchInfo], Optional[bool]]] = None,
          on_epoch: Optional[Callable[[EpochRecord], Optional[bool]]] = None,
          cancel: Cancel = None) -> TrainResult:
    """Train a copy of ``classifier`` on ``images`` ((N, C, H, W) uint8 or float in [0, 1]) and ``labels``.

    ``val``: (images, labels) validated after every epoch (clean, FGSM and PGD accuracy at the validation
    ε); without it, training has no validation and no overfitting detection (``train_model`` and the CLI
    hold out a split instead). ``on_batch``/``on_epoch`` receive a BatchInfo/EpochRecord and may return
    True to cancel; ``cancel`` (callable or threading.Event) is checked between batches. A cancelled run
    returns the model as it was after the last finished batch, with ``cancelled=True``.
    """
    cfg = config or TrainConfig()
    cfg.validate()
    t0 = time.perf_counter()
    x_all, y_all = images, torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    n = int(y_all.shape[0])
    if n == 0:
        raise DataError("no training images")
    if x_all.shape[0] != n:
        raise DataError(f"{n} labels for {x_all.shape[0]} training images")
    if int(y_all.min()) < 0 or int(y_all.max()) >= classifier.num_classes:
        raise DataError(f"labels out of range 0..{classifier.num_classes - 1}")
    model = copy.deepcopy(classifier)
    if cfg.from_scratch:
        _reinit(model.net, cfg.seed)
    dev = _device(model)
    params = [p for p in model.net.parameters()]
    for p in params:
        p.requires_grad_(True)
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    batches = math.ceil(n / cfg.batch_size)
    total_iters = batches * cfg.epochs
    ramp_iters = cfg.effective_ramp_epochs * batches
    gen = torch.Generator().manual_seed(cfg.seed)
    val_eps = cfg.eps if cfg.val_eps is None else cfg.val_eps
    vx = vy = None
    if val is not None:
        vx, vy = val[0][:cfg.val_max], torch.as_tensor(val[1], dtype=torch.long).reshape(-1)[:cfg.val_max]
    history: list[EpochRecord] = []
    best_state: Optional[dict[str, torch.Tensor]] = None
    best_pgd, best_epoch = -1.0, None
    result = TrainResult(model, cfg, history, n_train=n, n_val=0 if vy is None else int(len(vy)))
    it = 0
    eps_t = 0.0
    lr_t = cfg.lr
    gan = gan_adversary(model, x_all, cfg) if cfg.method == "advgan" else None

    def stop_requested() -> bool:
        return is_cancelled(cancel)

    for epoch in range(1, cfg.epochs + 1):
        te = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        ok = 0
        seen = 0
        for bi in range(batches):
            if stop_requested():
                result.cancelled = True
                break
            idx = perm[bi * cfg.batch_size:(bi + 1) * cfg.batch_size]
            xb = _as_float(x_all[idx])
            yb = y_all[idx]
            if cfg.augment == "shift":
                xb = _shift(xb, gen)
            xb, yb = xb.to(dev), yb.to(dev)
            eps_t = cfg.eps if ramp_iters == 0 else cfg.eps * min(1.0, (it + 1) / ramp_iters)
            lr_t = cfg.lr if cfg.schedule == "constant" else 0.5 * cfg.lr * (1 + math.cos(math.pi * it / total_iters))
            for gparam in opt.param_groups:
                gparam["lr"] = lr_t
            if gan is not None:
                xin = gan(model, xb, yb, eps_t)
            else:
                xin = perturb(model, xb, yb, method=cfg.method, eps=eps_t, norm=cfg.norm, steps=cfg.pgd_steps,
                              step_size=cfg.pgd_step_size, fgsm_step=cfg.fgsm_step, gen=gen)
            model.train()
            logits = model(xin)
            loss = F.cross_entropy(logits, yb)
            if not math.isfinite(float(loss.detach())):
                raise TrainingError(
                    f"training diverged: the loss became {float(loss.detach())} at epoch {epoch}, batch {bi + 1} "
                    f"(learning rate {lr_t:.3g}); nothing was saved. Try a smaller learning rate",
                    code="loss-not-finite", epoch=epoch, batch=bi + 1, lr=lr_t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.eval()
            it += 1
            bl = float(loss.detach())
            bok = int((logits.detach().argmax(1) == yb).sum())
            loss_sum += bl * len(yb)
            ok += bok
            seen += len(yb)
            if on_batch is not None and on_batch(BatchInfo(epoch, cfg.epochs, bi + 1, batches, eps_t, bl,
                                                           bok / len(yb), lr_t, time.perf_counter() - t0)):
                result.cancelled = True
                break
        train_secs = time.perf_counter() - te
        if seen == 0:
            break
        tv = time.perf_counter()
        if vx is not None and vy is not None and len(vy) and not result.cancelled:
            vc, vf, vp = validate(model, vx, vy, eps=val_eps, norm=cfg.norm, pgd_steps=cfg.val_steps,
                                  batch_size=max(cfg.batch_size, 128), seed=cfg.seed, cancel=cancel)
            result.cancelled = is_cancelled(cancel)
        else:   # no validation set, or cancelled: a cancelled run should stop now, not after validating
            vc = vf = vp = float("nan")
        rec = EpochRecord(epoch=epoch, train_eps=eps_t, lr=lr_t, train_loss=loss_sum / seen, train_acc=ok / seen,
                          val_clean_acc=vc, val_fgsm_acc=vf, val_pgd_acc=vp, seconds=train_secs,
                          val_seconds=time.perf_counter() - tv)
        history.append(rec)
        msg = None
        if cfg.method != "clean" and not result.cancelled:
            msg = detect_catastrophic_overfitting([r.val_pgd_acc for r in history], [r.val_fgsm_acc for r in history],
                                                  drop=cfg.overfit_drop, gap=cfg.overfit_gap)
        if msg:
            rec.overfit = True
            if result.overfit is None:
                result.overfit = msg
        if math.isfinite(vp) and vp >= best_pgd and not rec.overfit:
            best_pgd, best_epoch = vp, epoch
            best_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
        if on_epoch is not None and on_epoch(rec):
            result.cancelled = True
        if result.cancelled:
            break
        if msg and cfg.on_overfit == "stop":
            break
    if result.overfit and cfg.on_overfit == "stop" and best_state is not None:
        model.net.load_state_dict(best_state)
        result.restored_epoch = best_epoch
        result.notes.append(f"training stopped; weights restored from epoch {best_epoch} "
                            f"(best validation PGD accuracy {100 * best_pgd:.1f}%)")
    for p in params:
        p.requires_grad_(False)
    model.eval()
    result.elapsed = time.perf_counter() - t0
    return result


def train_model(classifier: Classifier, data: TrainingSet, config: Optional[TrainConfig] = None, *,
                val: Optional[TrainingSet] = None, val_fraction: float = 0.1,
                on_batch: Optional[Callable[[BatchInfo], Optional[bool]]] = None,
                on_epoch: Optional[Callable[[EpochRecord], Optional[bool]]] = None,
                cancel: Cancel = None, warnings: Optional[Sequence[Any]] = None) -> TrainResult:
    """``train`` on a TrainingSet; without ``val``, a stratified ``val_fraction`` of the data is held out
    for validation (and not trained on). This is what ``advgui train`` and a GUI worker call.

    The model checks of ``advgui eval`` run first (``training_checks``; pass ``warnings`` when they already
    ran) and their flags land in ``result.warnings`` and the training log. A loss that becomes NaN or infinite
    raises TrainingError ``loss-not-finite``."""
    cfg = config or TrainConfig()
    notes = []
    checks = training_checks(classifier, data) if warnings is None else list(warnings)
    if val is None:
        (tx, ty), (vx, vy) = split_holdout(data.images, data.labels, val_fraction, cfg.seed)
        if len(vy) == 0:
            raise DataError(f"{data.source}: too few images to hold out a validation split; pass a validation set")
        notes.append(holdout_note(len(vy), len(data), val_fraction, data.source))
    else:
        (tx, ty), (vx, vy) = (data.images, data.labels), (val.images, val.labels)
        notes.append(f"validation: {val.source} ({len(vy)} images"
                     + (f", first {cfg.val_max} used)" if len(vy) > cfg.val_max else ")"))
    for s in (data, val):
        if s is not None and s.skipped:
            notes.append(f"{s.source}: left out {len(s.skipped)} unreadable file(s) or non-class folder(s) "
                         "(listed as skipped)")
    result = train(classifier, tx, ty, cfg, val=(vx, vy), on_batch=on_batch, on_epoch=on_epoch, cancel=cancel)
    result.notes = notes + result.notes
    result.data_source = data.source
    result.val_source = val.source if val is not None else f"held out from {data.source}"
    result.skipped = [*data.skipped, *(val.skipped if val is not None else [])]
    result.warnings = [w if isinstance(w, dict) else w.to_dict() for w in checks]
    return result


def holdout_note(n_val: int, n: int, fraction: float, source: str) -> str:
    """The note about the held-out split, with the share actually held out (stratification keeps at least one
    image of every class with two or more, so small sets hold out more than asked)."""
    actual = n_val / max(1, n)
    text = f"validation: {n_val} of {n} images held out from {source} ({100 * actual:.0f}%"
    if abs(actual - fraction) >= 0.005:
        text += f"; {100 * fraction:.0f}% was asked, but every class with two or more images gives at least one"
    return text + ")"


def training_checks(classifier: Classifier, data: TrainingSet, max_images: int = 64) -> list:
    """The model checks ``eval`` and ``attack`` run (sanity.check_metadata and check_model) on the first
    ``max_images`` training images: SanityWarning objects."""
    from .sanity import check_metadata, check_model
    out = list(check_metadata(classifier))
    have = {w.code for w in out}
    if len(data):
        out += [w for w in check_model(classifier, data.images[:max_images], data.labels[:max_images])
                if w.code not in have]
    return out


# -- saving ---------------------------------------------------------------------------------------------

LOG_FIELDS = [f for f in EpochRecord.__dataclass_fields__]


def log_paths(weights_path: str | os.PathLike) -> tuple[Path, Path]:
    """``model.safetensors`` -> (``model.log.csv``, ``model.log.json``)."""
    p = Path(weights_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".log.csv"), p.with_name(stem + ".log.json")


def training_log(result: TrainResult, weights: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    cfg = result.config
    final = result.final
    return {
        "format": "advgui-trainlog-1",
        "model": str(result.classifier.spec),
        "weights": None if weights is None else str(weights),
        "data": result.data_source,
        "validation": result.val_source,
        "n_train": result.n_train, "n_val": result.n_val,
        "config": asdict(cfg), "ramp_epochs": cfg.effective_ramp_epochs,
        "epochs": [asdict(r) for r in result.history],
        "final": None if final is None else asdict(final),
        "cancelled": result.cancelled, "catastrophic_overfitting": result.overfit,
        "restored_epoch": result.restored_epoch, "notes": result.notes, "warnings": list(result.warnings),
        "skipped": list(result.skipped), "elapsed": result.elapsed,
    }


def _finite(v: Any) -> Any:
    """NaN/inf (no validation, cancelled runs) become null: strict JSON readers reject NaN."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def write_epoch_csv(history: Sequence[EpochRecord], path: str | os.PathLike) -> Path:
    """The per-epoch log as CSV (atomically); callers may rewrite it after every epoch."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(r).items()})
    return atomic_write_text(path, buf.getvalue())


def write_log(result: TrainResult, csv_path: str | os.PathLike, json_path: str | os.PathLike,
              weights: Optional[str | os.PathLike] = None) -> tuple[Path, Path]:
    """Write the per-epoch log as CSV and the whole run (config, epochs, events) as JSON, atomically."""
    c = write_epoch_csv(result.history, csv_path)
    data = json.dumps(_finite(training_log(result, weights)), indent=2, default=str, allow_nan=False)
    j = atomic_write_text(json_path, data + "\n")
    return c, j


def save_training(result: TrainResult, weights_path: str | os.PathLike, *, log: bool = True
                  ) -> dict[str, Path]:
    """Save the trained weights (safetensors, with the classifier's metadata so ``load_model(path)``
    reopens it) and, with ``log``, the training log next to them. Returns the written paths."""
    clf = result.classifier
    arch = architecture_of(clf)
    cfg = result.config
    final = result.final
    extra = {"trained_by": "advgui train", "method": cfg.method, "train_eps": f"{cfg.eps:.6g}",
             "train_norm": cfg.norm, "epochs_run": str(len(result.history))}
    if final is not None:
        extra.update({"val_clean_acc": f"{final.val_clean_acc:.4f}", "val_pgd_acc": f"{final.val_pgd_acc:.4f}"})
    out = {"weights": save_weights(weights_path, clf, arch=arch, class_names=clf.class_names, mean=clf.mean,
                                   std=clf.std, input_size=clf.input_size, channels=clf.channels, extra=extra)}
    if log:
        c, j = log_paths(weights_path)
        out["log_csv"], out["log_json"] = write_log(result, c, j, weights_path)
    return out


# -- saving without losing anything ------------------------------------------------------------------------

def interrupted_path(weights_path: str | os.PathLike) -> Path:
    """``model.safetensors`` -> ``model.interrupted.safetensors``: where an interrupted run saves, so that it
    never replaces a finished model with an unvalidated one."""
    p = Path(weights_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".interrupted" + (p.suffix or ".safetensors"))


def progress_log_path(weights_path: str | os.PathLike) -> Path:
    """``model.safetensors`` -> ``model.partial.log.csv``: the per-epoch log while training runs (the final log
    goes beside the weights only when they are saved, so an earlier model's log is never replaced early)."""
    p = Path(weights_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".partial.log.csv")


def _fallback_candidates(weights_path: Path, dirs: Optional[Sequence[str | os.PathLike]]) -> list[Path]:
    import tempfile
    stem = weights_path.name[: -len(weights_path.suffix)] if weights_path.suffix else weights_path.name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folders = [Path(d) for d in dirs] if dirs is not None else [Path(tempfile.gettempdir()), Path.home()]
    out = []
    for d in folders:
        cand = d / f"{stem}.recovered-{stamp}.safetensors"
        k = 2
        while cand.exists():            # never replace anything, not even an earlier recovery
            cand = d / f"{stem}.recovered-{stamp}-{k}.safetensors"
            k += 1
        out.append(cand)
    return out


def save_training_safely(result: TrainResult, weights_path: str | os.PathLike, *,
                         fallback_dirs: Optional[Sequence[str | os.PathLike]] = None, log: bool = True
                         ) -> tuple[dict[str, Path], list[dict[str, str]]]:
    """Save like :func:`save_training`, but a failed save (disk full, no permission) loses nothing: the
    weights stay in ``result`` and are tried at a new, unique name in each of ``fallback_dirs`` (default: the
    temporary folder, then the home folder). Every file is written atomically (unique temporary name, fsync,
    rename), so the file at ``weights_path`` is either the old one or the new one, never a broken one.

    Returns (written paths, failures as ``{"path", "reason"}``). Raises TrainingError ``save-failed`` with
    ``attempts`` when no place worked; ``result`` still holds the weights, so a caller can ask the user for
    another path and call this again. A log that cannot be written beside saved weights is a failure entry,
    not an error."""
    architecture_of(result.classifier)          # a model that cannot be saved at all: ModelError, at once
    target = Path(weights_path)
    failures: list[dict[str, str]] = []
    for cand in [target, *_fallback_candidates(target, fallback_dirs)]:
        try:
            paths = save_training(result, cand, log=False)
        except Exception as e:  # noqa: BLE001 - OSError, SafetensorError (disk full), anything the writer raises
            failures.append({"path": str(cand), "reason": str(e).splitlines()[0] if str(e) else type(e).__name__})
            continue
        if log:
            c, j = log_paths(cand)
            try:
                paths["log_csv"], paths["log_json"] = write_log(result, c, j, cand)
            except (OSError, ValueError) as e:
                failures.append({"path": str(c), "reason": str(e).splitlines()[0] if str(e) else type(e).__name__})
        return paths, failures
    raise TrainingError(f"{target}: the trained weights could not be saved anywhere ("
                        + "; ".join(f"{f['path']}: {f['reason']}" for f in failures) + ")",
                        code="save-failed", path=str(target), attempts=failures)
