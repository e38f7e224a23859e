"""Reproduce the built-in demo: the digits data file, the demo CNN weights and the demo images.

    python scripts/train_demo.py            # writes resources/digits8x8.npz, demo_digits.safetensors,
                                            # demo_images/<class>/*.png
Needs scikit-learn (the digits ship inside it). Deterministic on the CPU for a given seed.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from advgui.core.data import digits_dataset
from advgui.core.models import DIGITS_ARCH, DIGITS_SIZE, DigitsCNN, save_weights

RES = Path(__file__).resolve().parent.parent / "resources"
CLASSES = [str(i) for i in range(10)]


def make_digits_file(seed: int) -> None:
    from sklearn.datasets import load_digits
    d = load_digits()
    rng = np.random.default_rng(seed)
    test = np.zeros(len(d.target), bool)
    for c in range(10):  # stratified 20% hold-out
        idx = np.flatnonzero(d.target == c)
        test[rng.choice(idx, size=round(0.2 * len(idx)), replace=False)] = True
    np.savez_compressed(RES / "digits8x8.npz", images=d.images.astype(np.uint8), labels=d.target.astype(np.uint8),
                        test=test)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (pad + crop)."""
    n = x.shape[0]
    pad = F.pad(x, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = pad[i, :, dy[i]:dy[i] + x.shape[2], dx[i]:dx[i] + x.shape[3]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--per-class", type=int, default=5, help="demo images per class")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    make_digits_file(args.seed)
    xtr, ytr = digits_dataset("train", DIGITS_SIZE)
    xte, yte = digits_dataset("test", DIGITS_SIZE)
    xtr, xte = xtr.float() / 255, xte.float() / 255
    net = DigitsCNN()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    gen = torch.Generator().manual_seed(args.seed)
    mean, std = [0.5], [0.5]
    norm = lambda x: (x - mean[0]) / std[0]  # noqa: E731
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for b in range(0, len(xtr), 64):
            i = perm[b:b + 64]
            loss = F.cross_entropy(net(norm(augment(xtr[i], gen))), ytr[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(norm(xte)).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1:2d}  loss {loss.item():.3f}  held-out accuracy {acc:.4f}")
    save_weights(RES / "demo_digits.safetensors", net, arch=DIGITS_ARCH, class_names=CLASSES, mean=mean, std=std,
                 input_size=DIGITS_SIZE, channels=1,
                 extra={"trained_on": "scikit-learn digits, 80% split", "heldout_accuracy": f"{acc:.4f}"})
    # demo images: the first few held-out digits of each class, correctly classified or not
    out = RES / "demo_images"
    shutil.rmtree(out, ignore_errors=True)
    raw_te, lab_te = digits_dataset("test", DIGITS_SIZE)
    for c in range(10):
        (out / CLASSES[c]).mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(np.flatnonzero(lab_te.numpy() == c)[: args.per_class]):
            Image.fromarray(raw_te[i, 0].numpy()).save(out / CLASSES[c] / f"digit_{c}_{k}.png")
    print(f"held-out accuracy {acc:.4f}; wrote {RES}")


if __name__ == "__main__":
    main()
