"""Options shared by the subcommands: how a model is named on the command line and opened."""
from __future__ import annotations

import argparse
from typing import Optional


def add_model_options(p: argparse.ArgumentParser, *, required: bool = False, default: Optional[str] = "demo") -> None:
    g = p.add_argument_group("model")
    tail = f" (default: {default})" if default and not required else ""
    g.add_argument("--model", required=required, default=None if required else default, metavar="SPEC",
                   help="demo, demo-robust, torchvision:ARCH (with --weights), a TorchScript file, or a "
                        f".safetensors file saved by advgui{tail}")
    g.add_argument("--weights", metavar="FILE", help="state_dict for torchvision:ARCH (.pth/.pt or .safetensors)")
    g.add_argument("--labels", metavar="FILE", help="class names: a text file (one per line) or JSON")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow opening a whole pickled nn.Module (unpickling can run code: only for files you trust)")
    g.add_argument("--input-size", type=int, metavar="PX", help="override the model's input size (square)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto picks CUDA, then MPS, then the CPU (default: auto)")


def load_model_from_args(args: argparse.Namespace):
    from ..core.models import load_model
    return load_model(args.model, weights=args.weights, labels=args.labels, trust_pickle=args.trust_pickle,
                      device=args.device, input_size=getattr(args, "input_size", None))


# -- option types: a bad value is one line from argparse, never a traceback later --------------------------

MAX_SEED = 2 ** 63 - 1


def seed_int(text: str) -> int:
    """``--seed``: a whole number 0..2**63-1 (what torch's generators accept)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= v <= MAX_SEED:
        shown = text if len(text) <= 24 else f"{text[:12]}…({len(text)} digits)"
        raise argparse.ArgumentTypeError(f"{shown} is out of range: give a whole number from 0 to {MAX_SEED}")
    return v


def finite_float(text: str) -> float:
    """A float option that must be a finite number (``nan`` and ``inf`` are refused, not silently used)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    import math
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v
