"""``--images`` for explain / defend / detect: images, labels and a relative name per image (for output
files that mirror the sources). No ``register``: not a subcommand."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

import torch

from .common import positive_int


@dataclass
class LoadedImages:
    x: torch.Tensor                  # (N, C, H, W) uint8 at the model's input size
    labels: torch.Tensor             # (N,)
    names: list[str]                 # relative source path per image (e.g. "7/img3.png")
    label_source: str                # "labels" or "predictions"
    skipped: list[str] = field(default_factory=list)


def load_images(spec: str, clf, limit: Optional[int] = None, *, quiet: bool = False) -> LoadedImages:
    """A file, a folder, an ImageFolder tree, 'demo', or the built-in digits splits ('demo-digits-test',
    'demo-digits'). Unlabelled images get the clean prediction as label (a note says so on stderr)."""
    from ..core.data import DataError, open_images
    from ..core.training import DEMO_DATA, load_training_set
    if spec in DEMO_DATA:
        ts = load_training_set(spec, clf)
        x, y = ts.images, ts.labels
        if limit:
            x, y = x[:limit], y[:limit]
        return LoadedImages(x, y, [f"{spec}/{i:05d}.png" for i in range(len(y))], "labels")
    iset = open_images(spec, clf.class_names)
    order = list(range(len(iset)))[:limit] if limit else None
    xs, idx = [], []
    for bi, bx in iset.iter_batches(clf.preprocess, 256, order):
        idx += bi
        xs.append(bx)
    skipped = [str(s) for s in iset.skipped]
    if not quiet:
        for s in skipped:
            print(f"skipped {s}", file=sys.stderr)
    if not idx:
        reasons = "; ".join(skipped[:3])
        raise DataError(f"{spec}: no readable images ({reasons})")
    x = torch.cat(xs)
    names = [iset.items[i].rel for i in idx]
    if iset.labelled:
        return LoadedImages(x, iset.labels_tensor(idx), names, "labels", skipped)
    with torch.no_grad():
        clf.eval()
        pred = torch.cat([clf(x[b:b + 256].float().div(255).to(clf.device)).argmax(1).cpu()
                          for b in range(0, len(x), 256)])
    if not quiet:
        print(f"note: {spec} has no class subfolders named after the model's classes; the clean predictions "
              "stand in for labels", file=sys.stderr)
    return LoadedImages(x, pred, names, "predictions", skipped)


def fraction(text: str) -> float:
    import argparse
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {v}")
    return v


def add_attack_options(p, *, required: bool, default_eps: Optional[str] = None) -> None:
    a = p.add_argument_group("attack")
    a.add_argument("--attack", required=required, metavar="NAME",
                   help="fgsm, bim, pgd, mifgsm" + ("" if required else " (default: no attack)"))
    a.add_argument("--eps", metavar="E", default=default_eps,
                   help="budget in pixel units: 0.1 or 8/255" + (f" (default: {default_eps})" if default_eps else
                                                                   " (default 8/255)"))
    a.add_argument("--norm", choices=["linf", "l2"], default="linf", help="threat model (default: linf)")
    a.add_argument("--steps", type=positive_int, default=10, metavar="N", help="attack iterations (default: 10)")
    a.add_argument("--seed", type=int, default=0, help="seed for random starts and random masks (default: 0)")


def build_attack(args):
    """A fixed-budget attack from --attack/--eps/--norm/--steps; minimal-norm attacks are refused."""
    from ..cli import CliError
    from ..core.attacks import attack_class, make_attack
    from ..core.eps import parse_eps
    cls = attack_class(args.attack)
    if cls.minimal_norm:
        raise CliError(f"--attack {cls.name}: finds minimal perturbations; use fgsm, bim, pgd or mifgsm here")
    try:
        eps = parse_eps(args.eps) if args.eps is not None else 8 / 255
    except ValueError as e:
        raise CliError(f"--eps: {e}") from None
    return make_attack(args.attack, eps=eps, norm=args.norm, steps=args.steps)


def progress_bar(total: int, desc: str, quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, desc=desc)
