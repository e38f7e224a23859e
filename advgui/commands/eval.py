"""``advgui eval``: robustness curves (accuracy against ε for several attacks and the worst case)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .common import add_model_options, load_model_from_args, seed_int

DESCRIPTION = """\
Attack every image with every attack at every ε and report accuracy against ε, plus the worst case
over all attacks (an image counts as robust only if it survives every one of them).

Accuracy never rises with ε: an image fooled at a smaller ε is counted as fooled at every larger ε
(the same adversarial image lies inside the larger ball). The measured numbers are kept in the JSON
as raw_accuracy; where they rise, a warning says so. Accuracy uses the re-checked float adversarial
images; the 8-bit column rounds them to what a PNG can hold first.

Warnings in the spirit of AutoAttack's sanity checks flag numbers that may lie: a model that outputs
probabilities instead of logits, zero or vanishing input gradients, randomness in the forward pass,
and an attack given more budget (larger ε, or PGD instead of FGSM) doing worse.
"""

EXAMPLES = """\
examples:
  advgui eval --model demo --images demo --attacks fgsm,pgd --eps 0,0.05,0.1,0.2
  advgui eval --model demo-robust --images demo-digits-test --attacks fgsm,pgd --eps 0,0.05,0.1,0.2 --out eval/
  advgui eval --model torchvision:resnet18 --weights r18.pth --images val/ --eps 0,1/255,2/255,4/255 --limit 200

images: a file, a folder, an ImageFolder tree (subfolders named after the model's classes give the
true labels; otherwise the clean predictions stand in for them), 'demo' (the demo images), or
'demo-digits-test' / 'demo-digits' (the built-in digits' test / train split, for digits models).

output (--out DIR): robustness.csv (one row per attack and ε), robustness.json (everything, including
raw accuracies, warnings and settings) and robustness.png (the plot). The table goes to stdout,
warnings and progress to stderr.
"""


def _eps_list(text: str) -> list[float]:
    from ..core.eps import parse_eps_list
    try:
        return parse_eps_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _eps(text: str) -> float:
    from ..core.eps import parse_eps
    try:
        return parse_eps(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="robustness curves: accuracy against ε for several attacks, worst case",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, required=True)
    g = p.add_argument_group("images")
    g.add_argument("--images", required=True, metavar="PATH",
                   help="image file, folder, ImageFolder tree, 'demo', 'demo-digits-test' or 'demo-digits'")
    g.add_argument("--limit", type=_positive_int, metavar="N", help="evaluate only the first N images")
    g.add_argument("--batch-size", type=_positive_int, default=128, metavar="B", help="images per batch (default: 128)")
    a = p.add_argument_group("attacks")
    a.add_argument("--attacks", default="fgsm,pgd", metavar="LIST",
                   help="comma-separated: fgsm, bim, pgd, mifgsm (default: fgsm,pgd)")
    a.add_argument("--eps", type=_eps_list, default=_eps_list("0,2/255,4/255,8/255"), metavar="LIST",
                   help="comma-separated budgets in pixel units, e.g. 0,2/255,4/255,8/255 (the default) or 0,0.05,0.1")
    a.add_argument("--norm", choices=["linf", "l2"], default="linf", help="threat model (default: linf)")
    a.add_argument("--steps", type=_positive_int, default=20, metavar="N",
                   help="iterations of BIM/PGD/MI-FGSM (default: 20)")
    a.add_argument("--restarts", type=_positive_int, default=1, metavar="R", help="PGD random restarts (default: 1)")
    a.add_argument("--step-size", type=_eps, metavar="A", help="step size (default: 2.5·ε/steps for PGD, ε/steps for BIM)")
    a.add_argument("--seed", type=seed_int, default=0, help="seed for random starts (default: 0)")
    a.add_argument("--no-sanity", action="store_true", help="skip the sanity checks")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, metavar="DIR", help="write robustness.csv, .json and .png here")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def load_eval_images(spec: str, clf, limit: int | None = None):
    """(uint8 images, labels, label_source, skipped) for ``--images``. Raises DataError."""
    import torch

    from ..core.data import open_images
    from ..core.training import DEMO_DATA, load_training_set
    if spec in DEMO_DATA:
        ts = load_training_set(spec, clf)
        x, y = ts.images, ts.labels
        if limit:
            x, y = x[:limit], y[:limit]
        return x, y, "labels", []
    iset = open_images(spec, clf.class_names)
    order = list(range(len(iset)))[:limit] if limit else None
    xs, idx = [], []
    for bi, bx in iset.iter_batches(clf.preprocess, 256, order):
        idx += bi
        xs.append(bx)
    if not idx:
        from ..core.data import DataError
        reasons = "; ".join(str(s) for s in iset.skipped[:3])
        raise DataError(f"{spec}: no readable images ({reasons})")
    x = torch.cat(xs)
    skipped = [str(s) for s in iset.skipped]
    if iset.labelled:
        return x, iset.labels_tensor(idx), "labels", skipped
    with torch.no_grad():
        clf.eval()
        pred = torch.cat([clf(x[b:b + 256].float().div(255).to(clf.device)).argmax(1).cpu()
                          for b in range(0, len(x), 256)])
    return x, pred, "predictions", skipped


class SigintCancel:
    """While active, the first Ctrl-C sets ``event`` (the run stops cleanly at the next batch); a second
    one interrupts at once. Only installs itself in the main thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old = None

    def __enter__(self) -> "SigintCancel":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):  # noqa: ANN001
                if self.event.is_set():
                    raise KeyboardInterrupt
                self.event.set()
                print("\nstopping after this batch (Ctrl-C again to abort)", file=sys.stderr)

            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def run(args: argparse.Namespace) -> int:
    from ..core.attacks import AttackError, attack_class
    from ..core.evaluate import evaluate_robustness
    names = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if not names:
        raise AttackError("--attacks: no attack names given")
    for name in names:
        cls = attack_class(name)   # AttackError for unknown names, before loading anything
        if cls.minimal_norm:
            raise AttackError(f"--attacks: {cls.name} finds minimal perturbations and has no fixed ε; "
                              "eval takes fgsm, bim, pgd, mifgsm")
    clf = load_model_from_args(args)
    from ..core.attacks.base import check_attack_fits
    for name in names:
        check_attack_fits(attack_class(name)(), clf)   # black-box models refuse gradient attacks at once
    x, y, label_source, skipped = load_eval_images(args.images, clf, args.limit)
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    if label_source == "predictions":
        print(f"note: {args.images} has no class subfolders named after the model's classes; the clean predictions "
              "stand in for labels, so clean accuracy is 100% by construction", file=sys.stderr)
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        n_eps = sum(1 for e in args.eps if e > 0)
        bar = tqdm(total=len(y) * len(names) * n_eps, unit="img", file=sys.stderr, dynamic_ncols=True, desc="eval")

    def progress(info) -> None:
        if bar is not None:
            bar.set_description_str(f"{info.attack} ε={info.eps:.4g}")
            bar.update(info.done - bar.n)

    with SigintCancel() as stop:
        try:
            report = evaluate_robustness(clf, x, y, names, args.eps, norm=args.norm, steps=args.steps,
                                         restarts=args.restarts, step_size=args.step_size,
                                         batch_size=args.batch_size, seed=args.seed, sanity=not args.no_sanity,
                                         on_progress=progress, cancel=stop.event)
        finally:
            if bar is not None:
                bar.close()
    report.model = args.model
    report.images = args.images
    report.label_source = label_source
    report.skipped = skipped
    print(f"{args.model} on {args.images}: {report.n} images, {args.norm}, steps {args.steps}, "
          f"restarts {args.restarts}{' (cancelled)' if report.cancelled else ''}")
    print(report.table())
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.out is not None:
        try:
            paths = report.save(args.out)
        except OSError as e:
            print(f"advgui eval: error: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
            return 1
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 130 if report.cancelled else 0
