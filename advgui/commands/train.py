"""``advgui train``: adversarial training (PGD, fast FGSM with random start) or plain training."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import SigintCancel, add_model_options, finite_float, load_model_from_args, positive_int, seed_int
from .eval import _eps

DESCRIPTION = """\
Train a model against adversarial examples and save the hardened weights.

methods:
  pgd      PGD adversarial training (Madry et al. 2018): every batch is attacked with PGD (random start,
           --steps steps of 2.5·ε/steps) and the model learns from the attacked images.
  fgsm-rs  fast adversarial training (Wong et al. 2020): random start plus one FGSM step of 1.25·ε;
           about --steps times cheaper than pgd, but prone to catastrophic overfitting (watched below).
  clean    plain training, the baseline.
  advgan   GAN adversarial training (the game of AdvGAN, Xiao et al. 2018): a generator learns, one step
           per batch, to fool the model within ε while the model learns from the generator's images.
           One generator pass per batch instead of --steps gradient steps: cheap, but it only hardens
           against what the generator finds (compare its PGD column with pgd training's).

ε ramps up linearly over the first --ramp-epochs (default: a third of the epochs), because PGD training
at full ε from the start can stall on a small set. The model starts from the weights of --model
(fine-tuning) unless --from-scratch is given.

Every epoch reports clean, FGSM and PGD accuracy on the validation images (--val, or a stratified 10%
held out from --data). Catastrophic overfitting (PGD accuracy collapsing while FGSM accuracy holds or
climbs) is detected; by default training then stops and the weights of the best-PGD epoch are saved.
"""

EXAMPLES = """\
examples:
  advgui train --model demo --data demo-digits --val demo-digits-test --method pgd --eps 0.1 --epochs 10 --out robust.safetensors
  advgui train --model demo --data demo-digits --method fgsm-rs --eps 0.1 --epochs 10 --out fast.safetensors
  advgui train --model torchvision:resnet18 --weights r18.pth --data train/ --val val/ --eps 2/255 --epochs 5 --out r18_robust.safetensors

data: an ImageFolder tree (one subfolder per class, named after the model's classes; unreadable files
are skipped with reasons), or 'demo-digits' for the built-in digits' train split ('demo-digits-test'
is its held-out test split, handy for --val).

output: --out FILE.safetensors (reopen it with --model FILE.safetensors) and the training log next to
it, FILE.log.csv (one row per epoch) and FILE.log.json (settings, epochs, model-check warnings, skipped
files). While training, the epochs go to FILE.partial.log.csv. Ctrl-C stops after the current batch and
saves what was trained as FILE.interrupted.safetensors: an existing FILE is never replaced by an
unfinished model. A loss that becomes NaN stops training with an error and saves nothing. A save that
fails (disk full) is retried under a new name in the temporary folder, then the home folder.
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..core.training import TrainConfig
    d = TrainConfig()
    p = sub.add_parser("train", help="adversarial training (PGD, fast FGSM) or plain training",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, required=True)
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="PATH",
                   help="ImageFolder tree with one subfolder per class, or demo-digits (built-in digits, train split)")
    g.add_argument("--val", metavar="PATH",
                   help="validation images (ImageFolder tree, or demo-digits-test); default: hold out --val-fraction")
    g.add_argument("--val-fraction", type=finite_float, default=0.1, metavar="F",
                   help="share of --data held out for validation when --val is not given (default: 0.1)")
    g.add_argument("--val-max", type=positive_int, default=d.val_max, metavar="N",
                   help=f"validate on at most N images (default: {d.val_max})")
    t = p.add_argument_group("training")
    t.add_argument("--method", choices=["pgd", "fgsm-rs", "clean", "advgan"], default="pgd", help="(default: pgd)")
    t.add_argument("--eps", type=_eps, default=None, metavar="E",
                   help="training budget in pixel units, e.g. 0.1 or 8/255 (default 8/255; not used by clean)")
    t.add_argument("--norm", choices=["linf", "l2"], default="linf", help="threat model (default: linf)")
    t.add_argument("--epochs", type=positive_int, default=d.epochs, metavar="N", help=f"(default: {d.epochs})")
    t.add_argument("--batch-size", type=positive_int, default=d.batch_size, metavar="B",
                   help=f"(default: {d.batch_size})")
    t.add_argument("--lr", type=finite_float, default=d.lr, help=f"peak learning rate (default: {d.lr:g})")
    t.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer, help=f"(default: {d.optimizer})")
    t.add_argument("--schedule", choices=["cosine", "constant"], default=d.schedule,
                   help=f"learning-rate schedule (default: {d.schedule})")
    t.add_argument("--weight-decay", type=finite_float, default=d.weight_decay, metavar="WD", help="(default: 0)")
    t.add_argument("--steps", type=positive_int, default=d.pgd_steps, metavar="N",
                   help=f"PGD steps per training batch (default: {d.pgd_steps})")
    t.add_argument("--step-size", type=_eps, metavar="A", help="PGD step size (default: 2.5·ε/steps)")
    t.add_argument("--ramp-epochs", type=int, metavar="K", help="epochs over which ε ramps up (default: epochs // 3)")
    t.add_argument("--augment", choices=["shift", "none"], default=d.augment,
                   help="random shifts of up to 2 pixels, or none (default: shift)")
    t.add_argument("--from-scratch", action="store_true", help="re-initialise the weights instead of fine-tuning")
    t.add_argument("--seed", type=seed_int, default=0, help="(default: 0)")
    v = p.add_argument_group("validation")
    v.add_argument("--val-eps", type=_eps, metavar="E", help="ε of the validation attacks (default: --eps)")
    v.add_argument("--val-steps", type=positive_int, default=d.val_steps, metavar="N",
                   help=f"validation PGD steps (default: {d.val_steps})")
    v.add_argument("--on-overfit", choices=["stop", "continue"], default=d.on_overfit,
                   help="on catastrophic overfitting: stop and keep the best-PGD epoch, or continue (default: stop)")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, type=Path, metavar="FILE.safetensors", help="where to save the weights")
    o.add_argument("--quiet", action="store_true", help="no progress bar (epoch lines are still printed)")
    o.add_argument("--compare", action="store_true",
                   help="after training, measure the starting and the trained model on the same validation images "
                        "(worst case of FGSM and PGD at 0, 0.5, 1, 1.5 and 2 × the validation ε, as the window's "
                        "Harden tab does): prints a table and writes FILE.compare.json")
    o.add_argument("--compare-max", type=positive_int, default=200, metavar="N",
                   help="--compare on at most N validation images, a fixed random subset (default: 200)")
    p.set_defaults(func=run)
    return p


def _pct(v: float) -> str:
    return "  n/a" if v != v else f"{100 * v:5.1f}%"


def run(args: argparse.Namespace) -> int:
    from ..core.attacks import AttackError
    from ..core.data import DataError
    from ..core.fileio import FileProblem, check_writable_folder
    from ..core.training import (TrainConfig, TrainingError, architecture_of, interrupted_path, load_training_set,
                                 log_paths, progress_log_path, train_model,
                                 training_checks, write_epoch_csv)
    out: Path = args.out
    if out.suffix.lower() != ".safetensors":
        raise DataError(f"--out {out}: give a .safetensors file name (the format advgui reopens by path)")
    if out.is_dir():
        raise DataError(f"--out {out}: is a folder; give a file name ending in .safetensors")
    if not 0 < args.val_fraction < 1:
        raise AttackError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    eps = args.eps
    if eps is None:
        eps = 0.0 if args.method == "clean" else 8 / 255
    cfg = TrainConfig(method=args.method, eps=eps, epochs=args.epochs, norm=args.norm, batch_size=args.batch_size,
                      lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay, schedule=args.schedule,
                      pgd_steps=args.steps, pgd_step_size=args.step_size, ramp_epochs=args.ramp_epochs,
                      augment=args.augment, from_scratch=args.from_scratch,
                      val_eps=args.val_eps if args.val_eps is not None else (eps if eps > 0 else 8 / 255),
                      val_steps=args.val_steps, val_max=args.val_max, on_overfit=args.on_overfit, seed=args.seed)
    cfg.validate()                      # parameter errors before loading anything
    try:                                # a read-only or full folder: now, not after training
        check_writable_folder(out.parent if str(out.parent) else Path("."))
    except FileProblem as e:
        raise DataError(f"--out {out}: {e}") from None
    clf = load_model_from_args(args)
    architecture_of(clf)                # fail now, not after training, if the weights could not be reopened
    data = load_training_set(args.data, clf)
    val = load_training_set(args.val, clf) if args.val else None
    for s in (data, val):
        if s is not None:
            for k in s.skipped:
                print(f"skipped {k}", file=sys.stderr)
    checks = training_checks(clf, data)
    for w in checks:
        print(f"advgui train: warning [{w.code}]: {w.message}", file=sys.stderr)
    val_eps = cfg.val_eps
    print(f"{args.method} training of {args.model} on {data.source} ({len(data)} images), ε {cfg.eps:.4g}, "
          f"{cfg.epochs} epochs (ε ramp over {cfg.effective_ramp_epochs}); validation at ε {val_eps:.4g}, "
          f"PGD-{cfg.val_steps}", file=sys.stderr)
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=None, unit="batch", file=sys.stderr, dynamic_ncols=True, desc="train")
    partial = progress_log_path(out)
    records = []

    def on_batch(info) -> None:
        if bar is not None:
            if bar.total is None:
                bar.reset(total=info.epochs * info.batches)
            bar.set_description_str(f"epoch {info.epoch}/{info.epochs}")
            bar.set_postfix_str(f"ε {info.eps:.3g} loss {info.loss:.3f}")
            bar.update(1)

    def on_epoch(rec) -> None:
        line = (f"epoch {rec.epoch:3d}/{cfg.epochs}  ε {rec.train_eps:.4g}  loss {rec.train_loss:.4f}  "
                f"train acc {_pct(rec.train_acc)}  |  val clean {_pct(rec.val_clean_acc)}  FGSM {_pct(rec.val_fgsm_acc)}  "
                f"PGD-{cfg.val_steps} {_pct(rec.val_pgd_acc)}  ({rec.seconds + rec.val_seconds:.0f} s)")
        if rec.overfit:
            line += "  CATASTROPHIC OVERFITTING"
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)
        records.append(rec)
        try:
            write_epoch_csv(records, partial)    # progress survives a crash; the final log comes with the weights
        except OSError:
            pass                                  # reported when the weights are saved

    def drop_partial() -> None:
        try:
            partial.unlink()
        except OSError:
            pass

    with SigintCancel() as stop:
        try:
            result = train_model(clf, data, cfg, val=val, val_fraction=args.val_fraction, on_batch=on_batch,
                                 on_epoch=on_epoch, cancel=stop.event, warnings=checks)
        except TrainingError:
            drop_partial()              # a diverged run saves nothing
            raise
        finally:
            if bar is not None:
                bar.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.overfit:
        print(f"warning: {result.overfit}", file=sys.stderr)
    if not result.history:
        drop_partial()
        print("advgui train: interrupted before the first epoch finished; nothing saved", file=sys.stderr)
        return 130
    target = interrupted_path(out) if result.cancelled else out
    paths = _save(result, target)
    if paths is None:
        return 1
    drop_partial()
    final = result.final
    assert final is not None
    csv_path, json_path = log_paths(paths["weights"])
    print(f"saved {paths['weights']} (epoch {final.epoch}: val clean {_pct(final.val_clean_acc).strip()}, "
          f"PGD {_pct(final.val_pgd_acc).strip()}); log {csv_path}, {json_path}")
    if result.cancelled:
        print(f"advgui train: interrupted; saved the weights as they were after the last finished batch to "
              f"{paths['weights']}, not to {out}" + (" (left as it was)" if out.exists() else ""), file=sys.stderr)
        return 130
    if args.compare:
        return _compare(args, clf, result, data, val, Path(paths["weights"]))
    return 0


def _compare(args: argparse.Namespace, clf, result, data, val, weights: Path) -> int:
    """``--compare``: both models' robustness on the same validation images (core.harden.compare_robustness)."""
    import json

    from ..core.fileio import atomic_write_text
    from ..core.harden import compare_robustness, eval_eps, model_name, subset_indices
    from ..core.training import split_holdout
    cfg = result.config
    if val is not None:
        vx, vy = val.images, val.labels
    else:           # the same stratified hold-out train_model validated on (same fraction, same seed)
        _, (vx, vy) = split_holdout(data.images, data.labels, args.val_fraction, cfg.seed)
    idx = subset_indices(len(vy), args.compare_max, cfg.seed)
    vx, vy = vx[idx], vy[idx]
    val_eps = cfg.val_eps if cfg.val_eps is not None else cfg.eps
    eps = eval_eps(val_eps)
    start = model_name(args.model)
    print(f"comparing {start} and the trained model on {len(vy)} validation images at ε "
          + ", ".join(f"{e:.3g}" for e in eps) + " (FGSM and PGD, worst case)…", file=sys.stderr)
    with SigintCancel() as stop:
        pair = compare_robustness(clf, result.classifier, vx, vy, eps=eps, steps=cfg.val_steps, seed=cfg.seed,
                                  names=(start, "trained"), cancel=stop.event)
    if pair is None:
        print("advgui train: comparison interrupted (the weights are saved)", file=sys.stderr)
        return 130
    w = max(len(start), 7)
    print(f"\n{'ε':>8}  {start:>{w}}  {'trained':>{w}}   (worst-case accuracy on {pair.n} validation images)")
    for k, e in enumerate(pair.eps):
        print(f"{e:8.4g}  {_pct(pair.start.worst[k]):>{w}}  {_pct(pair.trained.worst[k]):>{w}}")
    for mc in (pair.start, pair.trained):
        for warn in mc.warnings:
            print(f"advgui train: warning ({mc.name}): {warn}", file=sys.stderr)
    doc = {"format": "advgui-compare-1", "weights": str(weights), "start_model": args.model,
           "train_eps": cfg.eps, "val_eps": val_eps, **pair.to_dict()}
    path = weights.with_name(weights.name[: -len(".safetensors")] + ".compare.json")
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


def _save(result, target: Path):
    """Save, falling back to other places; with a terminal, ask for a path when every place failed. Returns the
    written paths, or None (the reason is printed) when nothing could be saved."""
    from ..core.training import TrainingError, save_training_safely
    try:
        paths, failures = save_training_safely(result, target)
    except TrainingError as e:
        print(f"advgui train: error: {e}", file=sys.stderr)
        paths, failures = _ask_for_path(result), []
        if paths is None:
            print("advgui train: the trained weights were not saved; free some space or choose a writable --out "
                  "and train again", file=sys.stderr)
            return None
    for f in failures:
        print(f"advgui train: could not write {f['path']}: {f['reason']}", file=sys.stderr)
    if Path(paths["weights"]) != Path(target):
        print(f"advgui train: saved the weights to {paths['weights']} instead of {target}", file=sys.stderr)
    return paths


def _ask_for_path(result):
    """The weights are still in memory: on a terminal, ask where to put them until a save works."""
    from ..core.training import TrainingError, save_training_safely
    if sys.stdin is None or not sys.stdin.isatty():
        return None
    while True:
        try:
            answer = input("Where should the trained weights be saved? (a .safetensors path; empty to discard "
                           "them): ").strip()
        except EOFError:
            return None
        if not answer:
            return None
        try:
            return save_training_safely(result, Path(answer).expanduser(), fallback_dirs=[])[0]
        except TrainingError as e:
            print(f"advgui train: error: {e}", file=sys.stderr)
