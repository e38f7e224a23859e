"""Options shared by the subcommands: how a model is named on the command line and opened."""
from __future__ import annotations

import argparse
import sys
from typing import Optional

MODEL_HELP = (
    "demo, demo-robust; torchvision:ARCH with --weights FILE, or torchvision:ARCH:WEIGHTS (e.g. "
    "torchvision:resnet50:IMAGENET1K_V2: taken from torchvision's cache, downloaded when missing); "
    "timm:NAME with --weights FILE; hf:FOLDER or a folder with config.json (Hugging Face save_pretrained); "
    "a .onnx file; a .safetensors file saved by advgui. Code-carrying files (TorchScript, a pickled "
    "nn.Module) need --trust-code. Extra formats (timm, hf, onnx) need: pip install 'advgui[models]'")


def _floats(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not vals or len(vals) > 4 or any(v != v for v in vals):
        raise argparse.ArgumentTypeError(f"expected 1 or 3 numbers separated by commas, got {text!r}")
    return vals


def add_model_options(p: argparse.ArgumentParser, *, required: bool = False, default: Optional[str] = "demo") -> None:
    g = p.add_argument_group("model")
    tail = f" (default: {default})" if default and not required else ""
    g.add_argument("--model", required=required, default=None if required else default, metavar="SPEC",
                   help=MODEL_HELP + tail)
    g.add_argument("--weights", metavar="FILE",
                   help="weights for torchvision:ARCH or timm:NAME (.safetensors, or a .pth/.pt state_dict read "
                        "with weights_only=True)")
    g.add_argument("--labels", metavar="FILE", help="class names: a text file (one per line) or JSON")
    g.add_argument("--trust-code", dest="trust_code", action="store_true",
                   help="allow files that carry code: TorchScript (its forward runs), a whole pickled nn.Module "
                        "(unpickling runs code), Hugging Face folders with custom code. Only for files you trust")
    g.add_argument("--input-size", type=int, metavar="PX",
                   help="the model's input size (square): for a model that takes any size or an ONNX graph with "
                        "dynamic height/width; overrides the size the file gives")
    g.add_argument("--channels", type=int, choices=[1, 3], help="input channels, for a model that does not say")
    g.add_argument("--mean", type=_floats, metavar="M[,M,M]",
                   help="normalisation mean in [0, 1] pixel units, for a model that does not say (TorchScript, ONNX)")
    g.add_argument("--std", type=_floats, metavar="S[,S,S]", help="normalisation std, with --mean")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto picks CUDA, then MPS, then the CPU (default: auto)")
    # the old name of --trust-code stays accepted but is not listed
    g.add_argument("--trust-pickle", dest="trust_code", action="store_true", help=argparse.SUPPRESS)
    add_passphrase_option(g)


def add_passphrase_option(p) -> None:
    """``--passphrase-file``: for an encrypted model (.enc) and encrypted exports (added once per parser)."""
    if any("--passphrase-file" in a.option_strings for a in getattr(p, "_actions", [])):
        return
    p.add_argument("--passphrase-file", metavar="FILE",
                   help="the passphrase of an encrypted model file (.enc) or export, on the file's first line "
                        "(else $ADVGUI_PASSPHRASE, else asked on the terminal); needs the 'crypto' extra")


def passphrase_from_args(args: argparse.Namespace, what: str, confirm: bool = False) -> str:
    """The passphrase for ``what`` (named in the prompt): --passphrase-file, $ADVGUI_PASSPHRASE or a prompt."""
    from ..core.crypto import read_passphrase
    return read_passphrase(getattr(args, "passphrase_file", None), prompt=f"passphrase for {what}: ",
                           confirm=confirm)


def _is_encrypted(path) -> bool:
    from ..core.crypto import SUFFIX, is_encrypted_file
    return path is not None and (str(path).endswith(SUFFIX) or is_encrypted_file(path))


def _download_progress():
    """A tqdm bar on stderr for torchvision downloads (the core reports LoadProgress events)."""
    state: dict = {}

    def report(ev) -> None:
        if ev.stage != "download":
            return
        bar = state.get("bar")
        if bar is None:
            from tqdm import tqdm
            bar = state["bar"] = tqdm(total=ev.total, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc="downloading weights", file=sys.stderr, leave=False)
        bar.update(ev.done - bar.n)
        if ev.total is not None and ev.done >= ev.total:
            bar.close()

    return report


def _named_download(spec: str) -> bool:
    # a download starts only when the user named pretrained weights: torchvision:ARCH:WEIGHTS
    return spec.startswith("torchvision:") and len(spec.split(":")) == 3 and bool(spec.split(":")[2])


def load_model_from_args(args: argparse.Namespace):
    from ..core.models import load_model
    spec = str(args.model)
    named = _named_download(spec)
    enc = next((p for p in (spec, args.weights) if _is_encrypted(p)), None)
    passphrase = passphrase_from_args(args, str(enc)) if enc is not None else None
    return load_model(spec, weights=args.weights, labels=args.labels, passphrase=passphrase,
                      trust_code=getattr(args, "trust_code", False), device=args.device,
                      input_size=getattr(args, "input_size", None), channels=getattr(args, "channels", None),
                      mean=getattr(args, "mean", None), std=getattr(args, "std", None),
                      allow_download=named, progress=_download_progress() if named else None)


# -- running on a cluster (the 'cluster' extra) ------------------------------------------------------------------

def add_cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (needs the 'cluster' extra: pip install 'advgui[cluster]')")
    g.add_argument("--cluster", metavar="ADDRESS",
                   help="run on Ray: local:N (N workers on this machine, no set-up), auto (the cluster this machine "
                        "joined with `ray start`), ray://HOST:10001 (Ray Client) or HOST:PORT (a head node). One model "
                        "per worker, a GPU each when the cluster has GPUs; the results are the same as without it")
    g.add_argument("--workers", type=_at_least_one, metavar="N",
                   help="workers on the cluster (default: N of local:N, else one per GPU, or one per CPU)")
    g.add_argument("--worker-threads", type=_at_least_one, metavar="T",
                   help="torch threads per worker (default: local:N shares this machine's cores; 1 elsewhere)")


def _at_least_one(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def open_cluster_from_args(args: argparse.Namespace, clf, program: str):
    """Start (or join) the cluster of ``--cluster`` and its workers, each with the model of the command line;
    prints one line about them on stderr. Returns the core WorkerPool."""
    from ..core import cluster
    cluster.parse_address(args.cluster)          # a bad address is one line before anything starts
    kw = cluster.model_kwargs(str(args.model), weights=args.weights, labels=args.labels,
                              trust_code=getattr(args, "trust_code", False), device=args.device,
                              input_size=getattr(args, "input_size", None), channels=getattr(args, "channels", None),
                              mean=getattr(args, "mean", None), std=getattr(args, "std", None),
                              allow_download=_named_download(str(args.model)))
    import time
    t0 = time.perf_counter()
    if not getattr(args, "quiet", False):
        print(f"{program}: starting the workers on {args.cluster} …", file=sys.stderr)
    pool = cluster.open_pool(args.cluster, kw, workers=args.workers, threads=args.worker_threads, reference=clf)
    if not getattr(args, "quiet", False):
        print(f"{program}: {cluster.describe_pool(pool)}, ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return pool


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


def positive_int(text: str) -> int:
    """A count option (``--epochs``, ``--limit``, ``--batch-size`` …): a whole number of at least 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
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


class SigintCancel:
    """While active, the first Ctrl-C sets ``event`` (the run stops cleanly at its next check); a second one
    interrupts at once. Only installs itself in the main thread."""

    def __init__(self, message: str = "stopping after this batch (Ctrl-C again to abort)") -> None:
        import threading
        self.event = threading.Event()
        self.message = message
        self._old = None

    def __enter__(self) -> "SigintCancel":
        import signal
        import sys
        import threading
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):  # noqa: ANN001
                if self.event.is_set():
                    raise KeyboardInterrupt
                self.event.set()
                print(f"\n{self.message}", file=sys.stderr)

            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
