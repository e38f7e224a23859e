"""Export writer benchmark: does the cost per batch stay constant as the export grows?

    python benchmarks/export_benchmark.py [--n 10000] [--batch-size 64] [--data DIR] [--repeats 1]

Builds an image set of ``--n`` PNG files (the 1797 demo digits of advgui.core.data.digits_dataset, repeated,
in class folders) and runs FGSM (ε 0.1, the cheapest attack, so the export's share is as large as it gets) on
the demo model three ways, interleaved in one process:

- attack:    decode + attack + re-checks over the set, nothing written (the floor every export pays);
- ours:      the same with ExportWriter (files + journal; manifest at start and end);
- reference: the same writer, but the whole manifest (JSON + CSV) rewritten after every batch, as the writer
             did before the journal (what made the export quadratic).

It prints, for ours and the reference: total time, the time of the first and of the last 1000 images (their
ratio shows whether the cost per batch grows), the bookkeeping time (journal and manifest writes) as a share of
the attack alone (the target: <= 10% at 10,000 images) in wall time and in CPU time (the wall time of the few
fsyncs of manifest.json depends on what else the machine writes: one fsync flushes the whole file system's
journal), and the time spent writing the image files themselves.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch


def make_set(root: Path, n: int) -> Path:
    from PIL import Image

    from advgui.core.data import digits_dataset
    x, y = digits_dataset("all")
    for i in range(n):
        k = i % len(y)
        d = root / str(int(y[k]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[k, 0].numpy()).save(d / f"d{i:05d}.png")
    return root


class Timers:
    """Accumulates the time spent in the wrapped functions."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def wrap(self, owner, name: str, key: str) -> None:
        fn = getattr(owner, name)

        def timed(*a, **k):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.t[key] = self.t.get(key, 0.0) + time.perf_counter() - t0
                self.t[key + " cpu"] = self.t.get(key + " cpu", 0.0) + time.process_time() - c0
        setattr(owner, name, timed)
        self.restore = getattr(self, "restore", []) + [(owner, name, fn)]

    def undo(self) -> None:
        for owner, name, fn in reversed(getattr(self, "restore", [])):
            setattr(owner, name, fn)
        self.restore = []


def run_attack_only(clf, images, attack, batch_size) -> dict:
    from advgui.core.runner import attack_batches
    t0, c0 = time.perf_counter(), time.process_time()
    marks = []
    n = 0
    for b in attack_batches(clf, images, attack, batch_size=batch_size, seed=0, observer=lambda i: False):
        n += len(b.indices)
        marks.append((n, time.perf_counter() - t0))
    return {"total": time.perf_counter() - t0, "cpu": time.process_time() - c0, "marks": marks}


def run_export(clf, images, attack, batch_size, out: Path, reference: bool) -> dict:
    from advgui.core import export
    from advgui.core.export import ExportWriter

    class Reference(ExportWriter):
        def write_batch(self, batch):            # the old writer: the whole manifest after every batch
            super().write_batch(batch)
            self._write_manifest(complete=False)

    timers = Timers()
    timers.wrap(export, "atomic_write_bytes", "image files")
    timers.wrap(ExportWriter, "_journal", "journal")
    timers.wrap(ExportWriter, "_journal_row", "journal")
    timers.wrap(ExportWriter, "_write_manifest", "manifest")
    try:
        marks = []
        t0 = time.perf_counter()
        cls = Reference if reference else ExportWriter
        w = cls(out, classifier=clf, image_set=images,
                run_info={"attack": attack.name, "params": attack.params(), "model": "demo", "images": "bench"})
        w.run(attack, batch_size=batch_size, seed=0,
              progress=lambda p: marks.append((p.done, time.perf_counter() - t0)))
        total = time.perf_counter() - t0
    finally:
        timers.undo()
    t = timers.t
    return {"total": total, "marks": marks, **t, "bookkeeping": t.get("journal", 0.0) + t.get("manifest", 0.0),
            "bookkeeping cpu": t.get("journal cpu", 0.0) + t.get("manifest cpu", 0.0)}


def block(marks, first: bool, size: int = 1000) -> float:
    """Seconds for the first (or last) ``size`` images, from the (done, seconds) marks after each batch."""
    if first:
        end = next((t for n, t in marks if n >= size), marks[-1][1])
        return end
    n_last, t_last = marks[-1]
    start = max((t for n, t in marks if n <= n_last - size), default=0.0)
    return t_last - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--data", type=Path, help="reuse (or create) the image set here")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from advgui.core.attacks import make_attack
    from advgui.core.data import open_images
    from advgui.core.models import load_model

    tmp = Path(tempfile.mkdtemp(prefix="advgui-export-bench-"))
    data = args.data or tmp / "set"
    if not data.exists() or not any(data.rglob("*.png")):
        t = time.perf_counter()
        make_set(data, args.n)
        print(f"made {args.n} images in {time.perf_counter() - t:.1f} s")
    clf = load_model("demo", device="cpu")
    attack = make_attack("fgsm", eps=0.1)
    res: dict[str, list[dict]] = {"attack": [], "ours": [], "reference": []}
    try:
        for r in range(args.repeats):
            order = ["attack", "ours", "reference"] if r % 2 == 0 else ["reference", "ours", "attack"]
            for kind in order:
                images = open_images(data, clf.class_names)
                if kind == "attack":
                    res[kind].append(run_attack_only(clf, images, attack, args.batch_size))
                else:
                    out = tmp / f"out-{kind}-{r}"
                    res[kind].append(run_export(clf, images, attack, args.batch_size, out, kind == "reference"))
                    shutil.rmtree(out)
                print(f"  repeat {r + 1} {kind:<9} {res[kind][-1]['total']:7.2f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(kind: str, key: str) -> float:
        vals = sorted(x.get(key, 0.0) for x in res[kind])
        return vals[len(vals) // 2]

    def med_block(kind: str, first: bool) -> float:
        vals = sorted(block(x["marks"], first) for x in res[kind])
        return vals[len(vals) // 2]

    a = med("attack", "total")
    a_cpu = med("attack", "cpu")
    print(f"\nFGSM on {args.n} demo digits, batch {args.batch_size}, {args.threads} thread(s), "
          f"medians of {args.repeats} repeat(s)")
    print(f"attack alone (decode + attack + re-checks): {a:.2f} s ({a_cpu:.2f} s CPU); first 1000 images "
          f"{med_block('attack', True):.2f} s, last 1000 {med_block('attack', False):.2f} s")
    for kind in ("ours", "reference"):
        tot, book, files = med(kind, "total"), med(kind, "bookkeeping"), med(kind, "image files")
        f1, f2 = med_block(kind, True), med_block(kind, False)
        print(f"{kind:<9}: total {tot:.2f} s = {tot / a:.2f}× the attack alone; first 1000 images {f1:.2f} s, "
              f"last 1000 {f2:.2f} s (last/first {f2 / f1:.2f}); bookkeeping {book:.2f} s = {100 * book / a:.1f}% "
              f"of the attack alone (journal {med(kind, 'journal'):.2f} s, manifest writes "
              f"{med(kind, 'manifest'):.2f} s); its CPU time {med(kind, 'bookkeeping cpu'):.2f} s = "
              f"{100 * med(kind, 'bookkeeping cpu') / a_cpu:.1f}% of the attack's CPU time; image files (atomic "
              f"writes, fsync included) {files:.2f} s")
    print(f"ours / reference total: {med('ours', 'total') / med('reference', 'total'):.2f}")


if __name__ == "__main__":
    main()
