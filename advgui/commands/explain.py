"""``advgui explain``: attribution maps before and after an attack, with faithfulness and overlap."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_model_options, load_model_from_args, positive_int
from .imagesets import add_attack_options, build_attack, fraction, load_images, progress_bar

DESCRIPTION = """\
Why did the model change its mind? Compute an attribution map for every image, for its true class on
the original image and, with --attack, for the adversarial class on the adversarial image (and the
two crossed pairs), then measure:

  faithfulness  the drop of the class probability when the map's top --fraction of pixels are set to
                black, against deleting as many random pixels (a deletion test); a map that explains
                the decision beats random deletion
  overlap       IoU of the top --fraction pixels of the map before and after the attack

Methods (from Captum; needs the 'explain' extra: pip install 'advgui[explain]'):
  gradcam   Grad-CAM on the last convolutional feature map (--layer to choose another); a model
            without convolutions falls back to saliency, and the output says why
  saliency  absolute input gradient
  ig        Integrated Gradients from a black image (--ig-steps passes per image)
"""

EXAMPLES = """\
examples:
  advgui explain --model demo --images demo --attack pgd --eps 0.1 --method gradcam --out out/explain
  advgui explain --model demo --images demo-digits-test --limit 100 --method ig --out out/ig
  advgui explain --model torchvision:resnet18 --weights r18.pth --images photos/ --method gradcam --layer net.layer3 --out out/

output (--out DIR):
  maps/<same relative path>.npz     keys clean and adv: H×W float maps at the model's input size
                                    (clean: true class on the original; adv: adversarial class on the
                                    adversarial image), clean_adv_class, adv_true_class, label, adv_class
  overlays/<same relative path>.png the maps over the images (2×2 with an attack)
  explain.json, explain.csv         faithfulness and overlap per image and overall (docs/explain.md)
  explain.png                       mean deletion drops: map vs random
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("explain", help="attribution maps (Grad-CAM, IG, saliency) before and after an attack",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, required=True)
    g = p.add_argument_group("images")
    g.add_argument("--images", required=True, metavar="PATH",
                   help="image file, folder, ImageFolder tree, 'demo', 'demo-digits-test' or 'demo-digits'")
    g.add_argument("--limit", type=positive_int, metavar="N", help="only the first N images")
    g.add_argument("--batch-size", type=positive_int, default=32, metavar="B", help="images per batch (default: 32)")
    add_attack_options(p, required=False)
    e = p.add_argument_group("explanation")
    e.add_argument("--method", default="gradcam", choices=["gradcam", "ig", "saliency"], help="default: gradcam")
    e.add_argument("--layer", metavar="NAME", help="Grad-CAM layer (dotted module name, e.g. net.features.7); "
                                                   "default: the last convolutional feature map")
    e.add_argument("--fraction", type=fraction, default=0.1, metavar="F",
                   help="share of pixels for the deletion test and the top-k overlap (default: 0.1)")
    e.add_argument("--random-masks", type=positive_int, default=8, metavar="R",
                   help="random deletions averaged per image (default: 8)")
    e.add_argument("--ig-steps", type=positive_int, default=32, metavar="S", help="Integrated Gradients steps (default: 32)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, required=True, metavar="DIR", help="write maps/, overlays/, explain.json/.csv/.png")
    o.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from ..core.explain import Explainer, _captum, explain_set
    from ..core.fileio import FileProblem, check_writable_folder
    from ..core.plots import _pyplot
    from .common import SigintCancel
    if args.eps is not None and args.attack is None:
        raise CliError("--eps needs --attack")
    if args.ig_steps < 2:
        raise CliError("--ig-steps must be at least 2")
    _captum()      # the extra is missing: say so before loading anything
    _pyplot()
    attack = build_attack(args) if args.attack else None
    try:
        check_writable_folder(args.out)
    except FileProblem as e:
        raise CliError(str(e)) from None
    clf = load_model_from_args(args)
    ex = Explainer(clf, args.method, layer=args.layer, ig_steps=args.ig_steps)
    if ex.fallback_reason:
        print(f"advgui explain: {ex.fallback_reason}", file=sys.stderr)
    data = load_images(args.images, clf, args.limit, quiet=args.quiet)
    bar = progress_bar(len(data.labels), args.method, args.quiet)

    def progress(p) -> None:
        if bar is not None:
            bar.update(p.done - bar.n)

    with SigintCancel() as stop:
        try:
            rep = explain_set(clf, data.x, data.labels, method=args.method, attack=attack, layer=args.layer,
                              fraction=args.fraction, n_random=args.random_masks, ig_steps=args.ig_steps,
                              batch_size=args.batch_size, seed=args.seed, sources=data.names,
                              progress=progress, cancel=stop.event)
        finally:
            if bar is not None:
                bar.close()
    rep.model, rep.images, rep.label_source = args.model, args.images, data.label_source
    written = rep.save(args.out, overlays=not args.no_overlays)
    o = rep.overall()
    where = f" (layer {rep.layer})" if rep.layer else ""
    print(f"{rep.method}{where} on {rep.n} images, model {args.model}"
          + (f", {rep.attack} eps {attack.eps:.4g} ({attack.eps * 255:.3g}/255)" if attack else ""))
    _faith_line("original, true class", o["clean"], rep.fraction)
    if "adv" in o:
        print(f"  attack success            {100 * o['success_rate']:.1f}%")
        _faith_line("adversarial, adv. class", o["adv"], rep.fraction)
        print(f"  top-{rep.fraction:.0%} overlap before/after {o['mean_overlap']:.3f} (true class on both: "
              f"{o['mean_overlap_true_class']:.3f})")
    print(f"  wrote {args.out}/ ({written['maps']} maps, {written['overlays']} overlays, explain.json, explain.csv, "
          "explain.png)")
    return 130 if rep.cancelled else 0


def _faith_line(name: str, f: dict, fr: float) -> None:
    print(f"  {name:<25} deleting the top {fr:.0%}: probability drop {f['mean_drop_map']:.3f} vs random "
          f"{f['mean_drop_random']:.3f} (beats random on {100 * f['beats_random']:.0f}% of images)")
