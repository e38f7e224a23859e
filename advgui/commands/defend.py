"""``advgui defend``: input-transform defenses, whether an attack survives them, and the adaptive re-attack."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_model_options, load_model_from_args, positive_int
from .imagesets import add_attack_options, build_attack, load_images, progress_bar

DESCRIPTION = """\
Apply input transforms to the clean images and to an attack's adversarial images, and report the
model's accuracy after each: does the attack survive the transform? Then the honest counter: attack
again *through* the transform (Athalye et al. 2018), with BPDA (the transform's gradient taken as the
identity) for JPEG, bit depth and the median filter, and EOT (gradients averaged over noise draws) for
Gaussian noise. What remains under the adaptive attack is what the defense is worth.

transforms (comma-separated):
  jpeg:Q         JPEG at quality Q, 1-100
  bits:B         bit-depth reduction to B bits, 1-8
  median:K       K×K median filter, 2-15
  noise:S[:N]    Gaussian noise of standard deviation S in (0, 1], majority vote over N copies (default 16)
"""

EXAMPLES = """\
examples:
  advgui defend --model demo --images demo --attack pgd --eps 0.1 --transforms jpeg:75,bits:4,median:3,noise:0.1 --out out/defend
  advgui defend --model demo --images demo-digits-test --limit 200 --attack pgd --eps 0.1 --transforms bits:1 --no-adaptive

output (--out DIR): defend.json (one row per transform: clean accuracy, accuracy on the adversarial
images, accuracy under the adaptive re-attack; and one record per image), defend.csv (one row per
image: whether each transform keeps it correct and whether the attack survives it), defend.png
(docs/defend.md has the schema). The table goes to stdout.
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("defend", help="input-transform defenses (JPEG, bit depth, median, noise) and the adaptive re-attack",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, required=True)
    g = p.add_argument_group("images")
    g.add_argument("--images", required=True, metavar="PATH",
                   help="image file, folder, ImageFolder tree, 'demo', 'demo-digits-test' or 'demo-digits'")
    g.add_argument("--limit", type=positive_int, metavar="N", help="only the first N images")
    g.add_argument("--batch-size", type=positive_int, default=64, metavar="B", help="images per batch (default: 64)")
    add_attack_options(p, required=True)
    d = p.add_argument_group("defenses")
    d.add_argument("--transforms", default="jpeg:75,bits:4,median:3,noise:0.1", metavar="LIST",
                   help="comma-separated transforms (default: jpeg:75,bits:4,median:3,noise:0.1)")
    d.add_argument("--no-adaptive", action="store_true", help="skip the adaptive re-attack")
    d.add_argument("--eot-samples", type=positive_int, metavar="N",
                   help="noise draws per EOT gradient (default: the transform's vote count)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, metavar="DIR", help="write defend.json, defend.csv and defend.png here")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from ..core.defenses import DefenseError, evaluate_defenses, parse_transforms
    from ..core.fileio import FileProblem, check_writable_folder
    from ..core.plots import have_matplotlib
    from .common import SigintCancel
    try:
        transforms = parse_transforms(args.transforms)
    except DefenseError as e:
        raise DefenseError(f"--transforms {e}", code=e.code, **e.details) from None
    attack = build_attack(args)
    if args.out is not None:
        try:
            check_writable_folder(args.out)
        except FileProblem as e:
            raise CliError(str(e)) from None
    clf = load_model_from_args(args)
    data = load_images(args.images, clf, args.limit, quiet=args.quiet)
    stages = 1 + (0 if args.no_adaptive else len(transforms))
    bar = progress_bar(len(data.labels) * stages, "defend", args.quiet)

    def progress(p) -> None:
        if bar is not None:
            bar.set_description_str(p.stage)
            bar.update(p.done - bar.n)

    with SigintCancel() as stop:
        try:
            rep = evaluate_defenses(clf, data.x, data.labels, transforms, attack, adaptive=not args.no_adaptive,
                                    eot_samples=args.eot_samples, batch_size=args.batch_size, seed=args.seed,
                                    sources=data.names, progress=progress, cancel=stop.event)
        finally:
            if bar is not None:
                bar.close()
    rep.model, rep.images = args.model, args.images
    eps = attack.params().get("eps")
    print(f"{attack.name} eps {eps:.4g} ({eps * 255:.3g}/255), {attack.params().get('norm')}, on {rep.n} images, "
          f"model {args.model}{' (cancelled)' if rep.cancelled else ''}")
    print(rep.table())
    print("clean/adversarial/adaptive: accuracy after the transform; attack survives: share of the attack's "
          "successes still fooling the model after the transform; worst: survives both attacks")
    if args.out is not None:
        plot = have_matplotlib()
        if not plot:
            print("advgui defend: defend.png needs the 'explain' extra (matplotlib): pip install 'advgui[explain]'; "
                  "skipped", file=sys.stderr)
        paths = rep.save(args.out, plot=plot)
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 130 if rep.cancelled else 0
