"""Sanity checks: the reasons a robustness number may look better than it is.

In the spirit of AutoAttack's checks (Croce & Hein 2020): a model that outputs probabilities instead of
logits; zero or vanishing input gradients; randomness in the forward pass; non-finite outputs; an attack
given more budget (a larger ε, or iterations instead of one FGSM step) doing worse. Every warning has a
short ``code`` and a plain-language ``message``; reports store them as ``{"code", "message", "attack"}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .attacks.base import model_as_found
from .eps import format_eps

# attacks that take several gradient steps and so must do at least as well as one FGSM step
ITERATIVE = ("bim", "pgd", "mifgsm")


@dataclass
class SanityWarning:
    """One reason the numbers may lie. ``code``: probabilities, zero-gradients, vanishing-gradients,
    randomness, non-finite, budget-eps, budget-steps."""

    code: str
    message: str
    attack: Optional[str] = None

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "attack": self.attack}


def _as_float01(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float() / 255
    return images.float()


def check_model(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                max_images: int = 64, zero_tol: float = 0.0, vanish_tol: float = 1e-30,
                random_tol: float = 1e-5) -> list[SanityWarning]:
    """Model-level checks on up to ``max_images`` images (pixel space [0, 1] or uint8).

    - probabilities: every output row is in [0, 1] and sums to 1. Cross-entropy on probabilities has
      tiny, badly scaled gradients, so gradient attacks underperform.
    - zero-gradients: the gradient of the logit margin (true logit minus the best other) is exactly zero
      for some images: a non-differentiable step (rounding, thresholds) masks the gradient.
    - vanishing-gradients: the margin gradient exists but the cross-entropy gradient underflows to
      (almost) zero, because the softmax is saturated; FGSM/PGD on cross-entropy cannot move.
    - randomness: two forward passes on the same images in eval mode disagree.
    - non-finite: NaN or infinite outputs.
    The model is left as found (mode and parameter flags restored).
    """
    warnings: list[SanityWarning] = []
    x = _as_float01(images[:max_images])
    y = torch.as_tensor(labels[:max_images], dtype=torch.long)
    if x.shape[0] == 0:
        return warnings
    dev = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    x, y = x.to(dev), y.to(dev)
    n = x.shape[0]
    with model_as_found(classifier):
        with torch.no_grad():
            out1 = classifier(x).float()
            out2 = classifier(x).float()
        if not bool(torch.isfinite(out1).all()):
            bad = int((~torch.isfinite(out1)).any(1).sum())
            warnings.append(SanityWarning("non-finite", f"the model returns NaN or infinite outputs for {bad} of {n} "
                                          "images; accuracies and attacks on them are meaningless"))
        scale = 1.0 + float(out1[torch.isfinite(out1)].abs().max()) if bool(torch.isfinite(out1).any()) else 1.0
        diff = float((out1 - out2).abs().nan_to_num(0.0).max())
        if diff > random_tol * scale:
            warnings.append(SanityWarning(
                "randomness", f"the forward pass is random: two evaluations of the same images differ by up to "
                f"{diff:.3g} in eval mode. Randomised defences hide gradients and make single-run accuracies "
                "optimistic; evaluate with an expectation over the randomness (EOT) before trusting them"))
        finite = out1[torch.isfinite(out1).all(1)]
        if finite.shape[0] and bool((finite >= -1e-6).all()) and bool((finite <= 1 + 1e-6).all()) \
                and bool(((finite.sum(1) - 1).abs() < 1e-3).all()):
            warnings.append(SanityWarning(
                "probabilities", "the model seems to output probabilities (every row is in [0, 1] and sums to 1), "
                "not logits: attacks apply a softmax on top, which flattens their gradients and overstates "
                "robustness. Remove the final softmax"))
        if y.numel() and int(y.max()) < out1.shape[1] and getattr(classifier, "white_box", True):
            xg = x.detach().clone().requires_grad_(True)
            logits = classifier(xg).float()
            if logits.requires_grad:
                ce = F.cross_entropy(logits, y, reduction="none")
                g_ce, = torch.autograd.grad(ce.sum(), xg, retain_graph=True)
                true = logits.gather(1, y[:, None])[:, 0]
                other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -float("inf")).amax(1)
                g_m, = torch.autograd.grad((true - other).sum(), xg)
            else:   # a hard threshold or argmax cut the graph: no gradient reaches the input at all
                g_ce = g_m = torch.zeros_like(xg)
            gm = g_m.flatten(1).abs().amax(1).nan_to_num(0.0)
            gc = g_ce.flatten(1).abs().amax(1).nan_to_num(0.0)
            zero = gm <= zero_tol
            vanish = (gc <= vanish_tol) & ~zero
            if bool(zero.any()):
                k = int(zero.sum())
                warnings.append(SanityWarning(
                    "zero-gradients", f"the input gradient is exactly zero for {k} of {n} images "
                    f"({100 * k / n:.0f}%): something in the model is not differentiable (rounding, "
                    "thresholds, argmax), so gradient attacks are blind there. Their accuracy is an upper bound; "
                    "try a transfer or score-based attack"))
            if bool(vanish.any()):
                k = int(vanish.sum())
                warnings.append(SanityWarning(
                    "vanishing-gradients", f"the cross-entropy gradient vanishes for {k} of {n} images "
                    f"({100 * k / n:.0f}%): the softmax is saturated (huge logits), so cross-entropy attacks "
                    "(FGSM, PGD) cannot take a step. Their accuracy is an upper bound; a margin loss or "
                    "rescaled logits would do better"))
    return warnings


def check_metadata(classifier: torch.nn.Module) -> list[SanityWarning]:
    """Checks of a classifier's own description, before any image is seen: normalisation that is not a finite
    number or divides by zero (``bad-normalisation``: every output becomes NaN), and fewer than two classes
    (``one-class``: nothing can be misclassified, so success rates mean nothing)."""
    warnings: list[SanityWarning] = []
    mean = [float(v) for v in getattr(classifier, "mean", []) or []]
    std = [float(v) for v in getattr(classifier, "std", []) or []]
    bad = [v for v in mean + std if v != v or v in (float("inf"), float("-inf"))] or [v for v in std if v == 0]
    if bad:
        warnings.append(SanityWarning(
            "bad-normalisation", f"the model's normalisation is not usable (mean {mean}, std {std}): NaN, infinite "
            "or zero values make every output NaN; fix the metadata of the model file"))
    names = getattr(classifier, "class_names", None)
    if names is not None and len(names) < 2:
        warnings.append(SanityWarning(
            "one-class", f"the model has {len(names)} class: every image gets that class, so no attack can change "
            "a prediction and accuracy and success rates mean nothing"))
    return warnings


def check_budget(eps: Sequence[float], raw_acc: dict[str, Sequence[float]], *, tol: float = 0.01
                 ) -> list[SanityWarning]:
    """Warn where more budget did worse: an attack's raw accuracy rising with ε, or an iterative attack
    (BIM/PGD/MI-FGSM) leaving higher accuracy than a single FGSM step at the same ε. ``tol`` is the
    rise (as a fraction of images) that is tolerated as noise of random starts."""
    warnings: list[SanityWarning] = []
    for name, acc in raw_acc.items():
        for k in range(1, len(eps)):
            rise = acc[k] - acc[k - 1]
            if rise > tol:
                warnings.append(SanityWarning(
                    "budget-eps", f"{name}: accuracy rose from {100 * acc[k - 1]:.1f}% at ε={format_eps(eps[k - 1])} "
                    f"to {100 * acc[k]:.1f}% at ε={format_eps(eps[k])}; a larger budget can only help a working "
                    "attack, so this points at gradient masking or too large a step. The reported curve counts "
                    "images fooled at the smaller ε as fooled at the larger one", attack=name))
    if "fgsm" in raw_acc:
        for name in raw_acc:
            if name not in ITERATIVE:
                continue
            for k, e in enumerate(eps):
                if e > 0 and raw_acc[name][k] - raw_acc["fgsm"][k] > tol:
                    warnings.append(SanityWarning(
                        "budget-steps", f"{name} leaves {100 * raw_acc[name][k]:.1f}% accuracy at ε={format_eps(e)}, "
                        f"more than one FGSM step ({100 * raw_acc['fgsm'][k]:.1f}%); an iterative attack should be "
                        "at least as strong. Check the step size and steps, and suspect gradient masking",
                        attack=name))
    return warnings
