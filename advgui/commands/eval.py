"""``advgui eval``: robustness curves (accuracy against ε for several attacks and the worst case), or the
standard suite (``--suite standard|quick``: APGD-CE → APGD-T → Square, per-image worst case)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (SigintCancel, add_cluster_options, add_model_options, load_model_from_args, open_cluster_from_args,
                     positive_int, seed_int)

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

--suite standard|quick runs the AutoAttack-grade evaluation at one ε instead: APGD-CE, then APGD-T
(targeted DLR over the top 9 other classes), a second APGD-T pass over the top 3 from new random
starts, then the black-box Square attack (5000 queries), each on the images still robust after the
stages before it. It reports the per-image worst case: robust
accuracy with a 95% Wilson interval, and per stage its robust accuracy, seconds and forward/backward/
query counts, plus sanity flags (gradient health, black box beating white box, accuracy not monotone in
ε, more budget doing worse, too few images). 'quick' is about five times cheaper (50 steps, 3 targets,
1000 queries, no second pass). FAB-T is not part of either (docs/robustness.md says why).
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

standard suite:
  advgui eval --model demo-robust --images demo-digits-test --suite standard --eps 0.1 --out eval/
  advgui eval --model demo --images demo --suite quick --eps 8/255
  with --suite, --out DIR writes robustness.json (suite, stages, per-image results, checks, warnings;
  schema in docs/robustness.md) and card.json (RobustBench's model-card fields). --eps is one value
  (default 8/255 for linf, 0.5 for l2); --attacks, --steps, --restarts and --step-size do not apply.
  Ctrl-C stops the running stage at its next step and keeps the finished stages (exit code 130).

cluster (--cluster ADDRESS, the 'cluster' extra):
  advgui eval --model demo-robust --images demo-digits-test --suite standard --eps 0.1 --cluster local:2
  the images are cut into shards of whole batches, each evaluated on a Ray worker (one model each, a GPU each
  when the cluster has GPUs) and merged here: the same curves, per-image results and flags as without
  --cluster. The progress bar counts the images of finished shards; Ctrl-C cancels the workers and reports
  the finished shards (their image count is printed).
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


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="robustness curves: accuracy against ε for several attacks, worst case",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, required=True)
    g = p.add_argument_group("images")
    g.add_argument("--images", required=True, metavar="PATH",
                   help="image file, folder, ImageFolder tree, 'demo', 'demo-digits-test' or 'demo-digits'")
    g.add_argument("--limit", type=positive_int, metavar="N", help="evaluate only the first N images")
    g.add_argument("--batch-size", type=positive_int, default=128, metavar="B", help="images per batch (default: 128)")
    a = p.add_argument_group("attacks")
    a.add_argument("--suite", choices=["standard", "quick"],
                   help="run the standard evaluation (APGD-CE → APGD-T ×2 → Square, per-image worst case) at one ε "
                        "instead of curves; 'quick' is about five times cheaper")
    a.add_argument("--attacks", default=None, metavar="LIST",
                   help="comma-separated: fgsm, bim, pgd, mifgsm, apgd, apgd-dlr, apgd-t, square (default: fgsm,pgd)")
    a.add_argument("--eps", type=_eps_list, default=None, metavar="LIST",
                   help="comma-separated budgets in pixel units, e.g. 0,2/255,4/255,8/255 (the default) or 0,0.05,0.1; "
                        "with --suite one value (default 8/255 for linf, 0.5 for l2)")
    a.add_argument("--norm", choices=["linf", "l2"], default="linf", help="threat model (default: linf)")
    a.add_argument("--steps", type=positive_int, default=20, metavar="N",
                   help="iterations of BIM/PGD/MI-FGSM/APGD (default: 20; Square keeps its 5000 queries)")
    a.add_argument("--restarts", type=positive_int, default=1, metavar="R", help="PGD random restarts (default: 1)")
    a.add_argument("--step-size", type=_eps, metavar="A", help="step size (default: 2.5·ε/steps for PGD, ε/steps for BIM)")
    a.add_argument("--seed", type=seed_int, default=0, help="seed for random starts (default: 0)")
    a.add_argument("--no-sanity", action="store_true", help="skip the sanity checks")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, metavar="DIR", help="write robustness.csv, .json and .png here")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cluster_options(p)
    p.set_defaults(func=run)
    return p


def load_eval_images(spec: str, clf, limit: int | None = None, with_paths: bool = False):
    """(uint8 images, labels, label_source, skipped) for ``--images`` (and the images' names with
    ``with_paths``: paths relative to the input, or ``demo-digits-test[i]``). Raises DataError."""
    out = _load_eval_images(spec, clf, limit)
    return out if with_paths else out[:4]


def _load_eval_images(spec: str, clf, limit: int | None = None):
    import torch

    from ..core.data import open_images
    from ..core.training import DEMO_DATA, load_training_set
    if spec in DEMO_DATA:
        ts = load_training_set(spec, clf)
        x, y = ts.images, ts.labels
        if limit:
            x, y = x[:limit], y[:limit]
        return x, y, "labels", [], [f"{spec}[{i}]" for i in range(len(y))]
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
    names = [iset.items[i].rel for i in idx]
    if iset.labelled:
        return x, iset.labels_tensor(idx), "labels", skipped, names
    with torch.no_grad():
        clf.eval()
        pred = torch.cat([clf(x[b:b + 256].float().div(255).to(clf.device)).argmax(1).cpu()
                          for b in range(0, len(x), 256)])
    return x, pred, "predictions", skipped, names


def _report_inputs(images: str, skipped: list[str], label_source: str) -> None:
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    if label_source == "predictions":
        print(f"note: {images} has no class subfolders named after the model's classes; the clean predictions "
              "stand in for labels, so clean accuracy is 100% by construction", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..core.attacks import AttackError, attack_class
    from ..core.evaluate import evaluate_robustness
    _check_cluster_options(args)
    if args.suite:
        return run_suite_command(args)
    if args.eps is None:
        args.eps = _eps_list("0,2/255,4/255,8/255")
    names = [a.strip() for a in (args.attacks or "fgsm,pgd").split(",") if a.strip()]
    if not names:
        raise AttackError("--attacks: no attack names given")
    for name in names:
        cls = attack_class(name)   # AttackError for unknown names, before loading anything
        if cls.minimal_norm:
            raise AttackError(f"--attacks: {cls.name} finds minimal perturbations and has no fixed ε; "
                              "eval takes fgsm, bim, pgd, mifgsm, apgd, apgd-dlr, apgd-t, square")
    clf = load_model_from_args(args)
    from ..core.attacks.base import check_attack_fits
    for name in names:
        check_attack_fits(attack_class(name)(), clf)   # black-box models refuse gradient attacks at once
    x, y, label_source, skipped = load_eval_images(args.images, clf, args.limit)
    _report_inputs(args.images, skipped, label_source)
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        n_eps = sum(1 for e in args.eps if e > 0)
        bar = tqdm(total=len(y) * len(names) * n_eps, unit="img", file=sys.stderr, dynamic_ncols=True, desc="eval")

    def progress(info) -> None:
        if bar is not None:
            bar.set_description_str(f"{info.attack} ε={info.eps:.4g}")
            bar.update(info.done - bar.n)

    pool = None
    try:
        if args.cluster:
            pool = open_cluster_from_args(args, clf, "advgui eval")
            if bar is not None:
                bar.reset(total=len(y))
        with SigintCancel() as stop:
            try:
                if pool is not None:
                    from ..core.cluster import evaluate_on_cluster
                    report = evaluate_on_cluster(pool, clf, x, y, names, args.eps, norm=args.norm, steps=args.steps,
                                                 restarts=args.restarts, step_size=args.step_size,
                                                 batch_size=args.batch_size, seed=args.seed,
                                                 sanity=not args.no_sanity, progress=_shard_progress(bar),
                                                 cancel=stop.event)
                else:
                    report = evaluate_robustness(clf, x, y, names, args.eps, norm=args.norm, steps=args.steps,
                                                 restarts=args.restarts, step_size=args.step_size,
                                                 batch_size=args.batch_size, seed=args.seed, sanity=not args.no_sanity,
                                                 on_progress=progress, cancel=stop.event)
            finally:
                if bar is not None:
                    bar.close()
    finally:
        _release(args)
    report.model = args.model
    report.images = args.images
    report.label_source = label_source
    report.skipped = skipped
    print(f"{args.model} on {args.images}: {report.n} images, {args.norm}, steps {args.steps}, "
          f"restarts {args.restarts}{' (cancelled)' if report.cancelled else ''}")
    _note_partial(report.n, len(y), report.cancelled)
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
        if "png" not in paths:
            print("advgui eval: note: robustness.png needs the 'report' extra: pip install 'advgui[report]'",
                  file=sys.stderr)
    return 130 if report.cancelled else 0


def _check_cluster_options(args: argparse.Namespace) -> None:
    from ..cli import CliError
    if (args.workers or args.worker_threads) and not args.cluster:
        raise CliError("--workers/--worker-threads need --cluster ADDRESS")
    if args.cluster:
        from ..core.cluster import parse_address
        parse_address(args.cluster)     # a bad address is one line before the model is loaded


def _shard_progress(bar):
    """The progress bar of a cluster run: images of finished shards, and a line when a worker was lost."""
    def progress(p) -> None:
        if bar is None:
            return
        if p.message:
            bar.write(f"advgui eval: {p.message}")
        bar.set_postfix_str(f"shards {p.shards_done}/{p.shards}" + (f", {p.retried} retried" if p.retried else ""),
                            refresh=False)
        bar.update(p.done - bar.n)
    return progress


def _note_partial(n: int, total: int, cancelled: bool) -> None:
    if cancelled and n < total:
        print(f"advgui eval: cancelled: the numbers are of the {n} of {total} images whose shards finished",
              file=sys.stderr)


def _release(args: argparse.Namespace) -> None:
    if args.cluster:
        from ..core.cluster import release
        release()


def run_suite_command(args: argparse.Namespace) -> int:
    """``advgui eval --suite NAME``: the standard evaluation at one ε."""
    from ..cli import CliError
    from ..core.suite import run_suite
    eps_values = [e for e in (args.eps or []) if e > 0]
    if args.eps is not None and len(eps_values) != 1:
        raise CliError(f"--suite takes one ε > 0 in --eps, got {', '.join(f'{e:g}' for e in args.eps)}")
    eps = eps_values[0] if eps_values else (8 / 255 if args.norm == "linf" else 0.5)
    given = [flag for flag, v, default in (("--attacks", args.attacks, None), ("--restarts", args.restarts, 1),
                                           ("--step-size", args.step_size, None), ("--steps", args.steps, 20))
             if v != default]
    if given:
        print(f"advgui eval: note: --suite {args.suite} has fixed stages; {', '.join(given)} ignored", file=sys.stderr)
    clf = load_model_from_args(args)
    x, y, label_source, skipped, names = load_eval_images(args.images, clf, args.limit, with_paths=True)
    _report_inputs(args.images, skipped, label_source)
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=1000, unit="‰", file=sys.stderr, dynamic_ncols=True, desc=args.suite,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
    state = {"stage": ""}

    def progress(ev) -> None:
        if bar is None:
            return
        if ev.stage and ev.stage != state["stage"]:
            state["stage"] = ev.stage
            bar.reset()
        if ev.kind in ("step", "probe", "stage-end"):
            bar.set_description_str(f"{ev.stage} ({ev.stage_index + 1}/{ev.n_stages}) robust {100 * ev.robust_accuracy:.1f}%"
                                    if ev.stage_index >= 0 else f"check: {ev.stage}", refresh=False)
            bar.update(int(1000 * ev.fraction) - bar.n)

    pool = None
    try:
        if args.cluster:
            pool = open_cluster_from_args(args, clf, "advgui eval")
            if bar is not None:
                bar.close()
                from tqdm import tqdm
                bar = tqdm(total=len(y), unit="img", file=sys.stderr, dynamic_ncols=True, desc=f"{args.suite} (shards)")
        with SigintCancel() as stop:
            try:
                if pool is not None:
                    from ..core.cluster import suite_on_cluster
                    report = suite_on_cluster(pool, clf, x, y, suite=args.suite, eps=eps, norm=args.norm,
                                              batch_size=args.batch_size, seed=args.seed, sanity=not args.no_sanity,
                                              paths=names, progress=_shard_progress(bar), cancel=stop.event)
                else:
                    report = run_suite(clf, x, y, suite=args.suite, eps=eps, norm=args.norm, batch_size=args.batch_size,
                                       seed=args.seed, sanity=not args.no_sanity, paths=names, keep_adv=False,
                                       progress=progress, cancel=stop.event)
            finally:
                if bar is not None:
                    bar.close()
    finally:
        _release(args)
    _note_partial(report.n, len(y), report.cancelled)
    report.model, report.images, report.label_source = args.model, args.images, label_source
    from ..core.eps import format_eps
    lo, hi = report.ci95
    print(f"{args.model} on {args.images}: {report.n} images, {args.norm}, ε={format_eps(eps)}, suite {args.suite}"
          f"{' (cancelled)' if report.cancelled else ''}")
    print(report.table())
    print(f"robust accuracy {100 * report.robust_accuracy:.1f}% (95% interval {100 * lo:.1f}–{100 * hi:.1f}%), "
          f"clean {100 * report.clean_accuracy:.1f}%")
    for w in report.warnings:
        print(f"warning [{w.code}]: {w}", file=sys.stderr)
    if args.out is not None:
        try:
            paths = report.save(args.out, architecture=type(getattr(clf, "net", clf)).__name__)
        except OSError as e:
            print(f"advgui eval: error: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
            return 1
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 130 if report.cancelled else 0
