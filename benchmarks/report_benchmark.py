"""Report and encrypted-export benchmark (issue 15 targets).

    python benchmarks/report_benchmark.py [--n 1000] [--repeats 2] [--data DIR]

1. Encrypted export throughput: FGSM (ε 0.1, the cheapest attack, so the writer's share is as large as it gets)
   on ``--n`` demo digits written by ExportWriter plain and encrypted (``passphrase=``), interleaved in one
   process, ``--repeats`` times each; prints images/s and the ratio encrypted/plain of the median wall times
   (target ≥ 0.9), the same for CPU time (this process plus its children: the key's scrypt runs in a helper
   process), which the other sessions' disk traffic does not swing, and the constructor's time.
2. The report of that ``--n``-image export: ``build_report`` with the default gallery (60 triplets) and with every
   image in the gallery; prints seconds and HTML size (targets: < 10 s, < 15 MB).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_benchmark import make_set  # noqa: E402


def cpu() -> float:
    import resource
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def export_once(out: Path, images, clf, attack, passphrase):
    from advgui.core.export import ExportWriter
    run = {"attack": attack.name, "params": attack.params(), "model": "demo", "images": str(images.root
           if hasattr(images, "root") else "set"), "seed": 0, "target": None}
    t0, c0 = time.perf_counter(), cpu()
    with ExportWriter(out, classifier=clf, image_set=images, run_info=run, passphrase=passphrase) as w:
        t_setup = time.perf_counter() - t0
        w.run(attack, batch_size=64)
    return time.perf_counter() - t0, t_setup, cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from advgui.core.attacks import make_attack
    from advgui.core.data import open_images
    from advgui.core.models import load_model
    from advgui.core.report import build_report
    tmp = Path(tempfile.mkdtemp(prefix="advgui-report-bench-"))
    data = a.data or tmp / "digits"
    if not data.exists() or not any(data.rglob("*.png")):
        make_set(data, a.n)
    clf = load_model("demo", device="cpu")
    images = open_images(str(data), clf.class_names)
    attack = make_attack("fgsm", eps=0.1)
    times: dict[str, list[float]] = {"plain": [], "encrypted": []}
    cpus: dict[str, list[float]] = {"plain": [], "encrypted": []}
    setup: list[float] = []
    keep = None
    for r in range(a.repeats):
        for mode in ("plain", "encrypted") if r % 2 == 0 else ("encrypted", "plain"):
            out = tmp / f"{mode}{r}"
            t, t_setup, c = export_once(out, images, clf, attack,
                                        "benchmark passphrase" if mode == "encrypted" else None)
            times[mode].append(t)
            cpus[mode].append(c)
            if mode == "encrypted":
                setup.append(t_setup)
            print(f"  {mode:9s} run {r}: {t:6.2f} s = {len(images) / t:6.1f} img/s, CPU {c:5.2f} s"
                  + (f" (constructor {t_setup:.2f} s)" if mode == "encrypted" else ""), flush=True)
            if mode == "plain" and keep is None:
                keep = out
            else:
                shutil.rmtree(out)
    p, e = statistics.median(times["plain"]), statistics.median(times["encrypted"])
    cp, ce = statistics.median(cpus["plain"]), statistics.median(cpus["encrypted"])
    print(f"export of {len(images)} images, median of {a.repeats}: plain {len(images) / p:.1f} img/s, encrypted "
          f"{len(images) / e:.1f} img/s; throughput ratio encrypted/plain {p / e:.3f} (target >= 0.9); "
          f"sum of all runs {sum(times['plain']) / sum(times['encrypted']):.3f}; CPU time plain {cp:.2f} s, "
          f"encrypted {ce:.2f} s (ratio plain/encrypted {cp / ce:.3f})")
    for gallery in (60, None):
        t0 = time.perf_counter()
        r = build_report([keep], tmp / "report.html", gallery=gallery)
        dt = time.perf_counter() - t0
        print(f"report of {len(images)} images, gallery {gallery or 'all'}: {dt:.2f} s (target < 10 s), "
              f"{r.bytes / 1e6:.2f} MB (target < 15 MB)")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
