"""Cluster benchmark (issue 16): throughput of `--cluster local:1` and `local:2` against a plain run, and the
measured per-image costs behind the paper estimate for ImageNet validation on 8 and 64 GPUs.

    python benchmarks/cluster_benchmark.py [--images 1000] [--steps 20] [--repeats 2] [--batch-size 50]
                                           [--no-estimate] [--data DIR]

Part 1, throughput, interleaved in one process (plain, local:1, local:2 per repeat): PGD (ε 0.1) on the
`demo-robust` digits model over ``--images`` PNG digits in class folders, two ways: exported with the
ExportWriter (the whole product path: decode, attack, re-checks, PNG/npz encoding, atomic fsynced files, journal,
manifest; there the workers encode while the driver writes, so the cluster overlaps work a plain run does in
series), and the attack alone (decode, attack, re-checks: the cluster's own cost, nothing to overlap). Every
torch computation gets one thread: the plain run's, and each worker's (``--worker-threads 1``). The workers are
started before the clock runs (their start-up is measured and printed separately, as is Ray's own); both pools
live in one local Ray instance (each worker half a logical CPU, so they fit side by side; idle workers cost
nothing). The merged manifests are checked equal to the plain run's. Printed: images/s of each, the overhead of
local:1 against plain (target <= 15%), and the scaling efficiency of local:2 against local:1 (target >= 0.8 where
there are cores for both: this machine has 2 cores shared with other agents; `uptime` is printed too).

Part 2, per-image costs measured here (CPU) for the estimate: a ResNet-50 opened from a local weights file (model
loading), a worker's start (Ray actor + torch + model), decoding and resizing an ImageNet-sized JPEG to 224x224
(what the driver does per image), reading the files (bytes/s), a worker encoding an exported image at 224x224
(PNG + PNG + npz) and the driver writing it (three atomic fsynced files + journal line). Then the estimate of the
standard suite on the 50,000 ImageNet validation images with 8 and 64 GPUs, from these costs and the suite's
passes per image (its stage budgets and the robust fractions of a typical robust ResNet-50), with the GPU
throughput stated as an assumption (no GPU here).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
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


def export(out: Path, clf, data: Path, attack, batch_size: int, pool=None) -> float:
    from advgui.core import cluster as cl
    from advgui.core.data import open_images
    from advgui.core.export import ExportWriter
    images = open_images(str(data), clf.class_names)
    run = {"attack": attack.name, "params": attack.params(), "model": "demo-robust", "weights": None,
           "images": str(data), "seed": 0, "target": None}
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    with ExportWriter(out, classifier=clf, image_set=images, run_info=run) as w:
        if pool is None:
            res = w.run(attack, batch_size=batch_size, seed=0)
        else:
            res = cl.export_on_cluster(w, pool, attack, batch_size=batch_size, seed=0)
    dt = time.perf_counter() - t0
    assert res.complete and res.images == len(images), res
    return dt


def attack_only(clf, data: Path, attack, batch_size: int, pool=None) -> tuple[float, tuple]:
    """The attack over the set without an export (decode, attack, re-checks): the cluster's own cost shows here,
    with no file writing to overlap with."""
    from advgui.core import cluster as cl
    from advgui.core.data import open_images
    from advgui.core.runner import SetSummary, attack_batches
    images = open_images(str(data), clf.class_names)
    t0 = time.perf_counter()
    if pool is None:
        summary = SetSummary()
        for b in attack_batches(clf, images, attack, batch_size=batch_size, seed=0):
            summary.add(b.result)
    else:
        stream = cl.iter_attack(pool, clf, images, attack, batch_size=batch_size, seed=0, keep_images=False)
        try:
            while True:
                next(stream)
        except StopIteration as fin:
            summary = fin.value.summary
    dt = time.perf_counter() - t0
    return dt, (summary.n, summary.adv_correct, summary.adv8_correct, summary.success, sorted(summary.linf))


def rows(out: Path) -> list:
    return json.loads((out / "manifest.json").read_text())["images"]


def throughput(args, work: Path) -> None:
    from advgui.core import cluster as cl
    from advgui.core.attacks import make_attack
    from advgui.core.models import load_model
    torch.set_num_threads(1)
    data = Path(args.data) if args.data else make_set(work / "set", args.images)
    clf = load_model("demo-robust", device="cpu")
    attack = make_attack("pgd", eps=0.1, steps=args.steps)
    t0 = time.perf_counter()
    info = cl.connect("local:2", own=True)
    t_ray = time.perf_counter() - t0
    import ray
    kw = cl.model_kwargs("demo-robust", device="cpu")
    pools = {}
    starts = {}
    for n in (1, 2):
        spec = dataclasses.replace(cl.plan_pool(info, kw, workers=n, threads=1), cpus=0.5)
        t0 = time.perf_counter()
        pool = cl.WorkerPool(ray, spec, kw, info)
        pool.ready(cl.model_fingerprint(clf))
        starts[n] = time.perf_counter() - t0
        pools[n] = pool
    print(f"Ray start (local, 2 CPUs): {t_ray:.1f} s; workers ready: 1 worker {starts[1]:.1f} s, "
          f"2 workers {starts[2]:.1f} s (Ray actor, torch import, model)")
    names = ("plain", "local:1", "local:2")
    times: dict[str, dict[str, list[float]]] = {"export": {k: [] for k in names}, "attack": {k: [] for k in names}}
    ref = ref_sum = None
    for rep in range(args.repeats):
        for name in names:
            pool = None if name == "plain" else pools[int(name[-1])]
            out = work / f"out-{name.replace(':', '')}"
            dt = export(out, clf, data, attack, args.batch_size, pool)
            times["export"][name].append(dt)
            r = rows(out)
            ref = r if ref is None else ref
            assert r == ref, f"{name}: the manifest differs from the plain run's"
            dt2, sums = attack_only(clf, data, attack, args.batch_size, pool)
            times["attack"][name].append(dt2)
            ref_sum = sums if ref_sum is None else ref_sum
            assert sums == ref_sum, f"{name}: the summary differs from the plain run's"
            print(f"  repeat {rep + 1}: {name:8s} export {dt:7.2f} s ({args.images / dt:6.1f} img/s), attack only "
                  f"{dt2:7.2f} s ({args.images / dt2:6.1f} img/s)", flush=True)
    for p in pools.values():
        p.kill()
    cl.release()
    for what, tt in times.items():
        med = {k: statistics.median(v) for k, v in tt.items()}
        over = med["local:1"] / med["plain"] - 1
        eff = med["local:1"] / (2 * med["local:2"])
        print(f"\n{args.images} images, PGD-{args.steps}, batch {args.batch_size}, {what}; median of {args.repeats}:")
        for k, v in med.items():
            print(f"  {k:8s} {v:7.2f} s  {args.images / v:7.1f} img/s")
        print(f"  overhead of local:1 against plain: {100 * over:+.1f}% (target <= 15%)")
        print(f"  scaling efficiency local:2 / (2 x local:1): {eff:.2f} (target >= 0.8 where there are cores for both)")
        print(f"  with start-up (Ray {t_ray:.1f} s + workers): local:1 {med['local:1'] + t_ray + starts[1]:.1f} s, "
              f"local:2 {med['local:2'] + t_ray + starts[2]:.1f} s, against plain {med['plain']:.1f} s")
        if med["plain"] > med["local:2"]:
            saved = (med["plain"] - med["local:2"]) / args.images
            print(f"  the start-up of local:2 pays off from about {(t_ray + starts[2]) / saved:.0f} images")
    print("\nmanifests and summaries: identical to the plain run's (predictions, success, norms, every column)")


# -- part 2: per-image costs and the estimate -------------------------------------------------------------------

def timeit(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def per_image_costs(work: Path) -> dict:
    import numpy as np
    import torchvision
    from PIL import Image
    from safetensors.torch import save_file

    from advgui.core.attacks import make_attack
    from advgui.core.data import decode, preprocess_pil
    from advgui.core.export import ExportWriter, encode_images
    from advgui.core.models import load_model
    torch.set_num_threads(1)
    c: dict[str, float] = {}
    # model loading: ResNet-50 from a local safetensors file (random weights: nothing is downloaded)
    wpath = work / "r50.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet50().state_dict().items()}, str(wpath))
    t0 = time.perf_counter()
    r50 = load_model("torchvision:resnet50", weights=str(wpath), device="cpu")
    c["model_load_s"] = time.perf_counter() - t0
    c["weights_mb"] = wpath.stat().st_size / 1e6
    # a worker's start: a fresh Python process that imports torch + advgui and opens the same model
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(1); from advgui.core.models import "
                    f"load_model; load_model('torchvision:resnet50', weights={str(wpath)!r}, device='cpu')"],
                   check=True)
    c["worker_start_s"] = time.perf_counter() - t0
    # ImageNet-sized JPEGs (500x375, quality 90, as the validation set's typical file) -> 224x224
    g = np.random.default_rng(0)      # a photo-like picture: smooth shapes plus fine grain (JPEG ~100-150 kB)
    smooth = np.asarray(Image.fromarray(g.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375),
                                                                                               Image.BICUBIC))
    photo = Image.fromarray(np.clip(smooth + g.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8))
    jdir = work / "jpeg"
    jdir.mkdir()
    for i in range(200):
        photo.rotate(i % 7).save(jdir / f"{i}.jpg", quality=90)
    files = sorted(jdir.iterdir())
    c["jpeg_kb"] = statistics.mean(f.stat().st_size for f in files) / 1e3
    pre = r50.preprocess
    t0 = time.perf_counter()
    for f in files:
        preprocess_pil(decode(f), pre)
    c["decode_ms"] = (time.perf_counter() - t0) / len(files) * 1e3
    t0 = time.perf_counter()
    total = sum(len(f.read_bytes()) for f in files)
    c["read_mb_s"] = total / (time.perf_counter() - t0) / 1e6
    # the export of one 224x224 image: worker-side encoding, driver-side writing
    x = torch.stack([preprocess_pil(decode(f), pre) for f in files[:16]]).float() / 255
    res = make_attack("fgsm", eps=4 / 255).run(r50, x, torch.zeros(16, dtype=torch.long), seed=0)
    t0 = time.perf_counter()
    enc = encode_images(res)
    c["encode_ms"] = (time.perf_counter() - t0) / 16 * 1e3
    c["export_kb"] = statistics.mean(len(e.clean_png) + len(e.adv_png) + len(e.adv_npz) for e in enc) / 1e3
    from advgui.core.data import ImageItem, ImageSet
    from advgui.core.runner import BatchResult
    iset = ImageSet(root=jdir, items=[ImageItem(f, f.name, 0, "folder") for f in files[:16]], labelled=True)
    out = work / "merge"
    with ExportWriter(out, classifier=r50, image_set=iset, run_info={"attack": "fgsm", "params": {}, "model": "r50",
                                                                    "images": str(jdir), "seed": 0}) as w:
        t0 = time.perf_counter()
        w.write_batch(BatchResult(list(range(16)), ["folder"] * 16, res), encoded=enc)
        c["merge_ms"] = (time.perf_counter() - t0) / 16 * 1e3
    # ResNet-50 forward+backward per image on this CPU (one thread), for scale
    xb = torch.rand(4, 3, 224, 224, requires_grad=True)

    def fb():
        r50(xb).sum().backward()
    c["r50_fwdbwd_cpu_ms"] = timeit(fb, 2) / 4 * 1e3
    return c


# The standard suite's passes per image (advgui.core.suite.SUITES["standard"]; stop on success): APGD-CE 100
# steps on every correctly classified image, APGD-T 9 targets x 100 steps and the top-3 pass 3 x 100 on the images
# still robust, Square 5000 queries (forward only) on those still robust. With a robust ImageNet ResNet-50
# (RobustBench L-inf 4/255 entries: about 64% clean, 38% robust) and no early stop counted for the robust images:
CLEAN, ROBUST = 0.64, 0.38
FWDBWD_PER_IMAGE = CLEAN * 100 + ROBUST * (900 + 300)        # gradient steps (forward + backward)
FWD_PER_IMAGE = ROBUST * 5000                                  # Square queries
# Assumed GPU throughput for ResNet-50 at 224x224 in fp32/TF32 on an A100-class GPU (no GPU here to measure):
GPU_FWD_S = 2000.0        # images/s, forward only
GPU_FWDBWD_S = 700.0      # images/s, forward + backward to the input


def estimate(c: dict) -> None:
    n = 50_000
    gpu_s = FWDBWD_PER_IMAGE / GPU_FWDBWD_S + FWD_PER_IMAGE / GPU_FWD_S      # seconds of one GPU per image
    print("\nMeasured per-image costs (this CPU, one thread; load noted below):")
    for k, v in c.items():
        print(f"  {k:20s} {v:10.2f}")
    print(f"\nStandard suite, ImageNet validation ({n} images), ResNet-50, robust model "
          f"({CLEAN:.0%} clean, {ROBUST:.0%} robust):")
    print(f"  passes per image: {FWDBWD_PER_IMAGE:.0f} forward+backward, {FWD_PER_IMAGE:.0f} forward; "
          f"{gpu_s:.2f} GPU-seconds per image at the assumed {GPU_FWDBWD_S:.0f} / {GPU_FWD_S:.0f} img/s")
    decode_all = n * c["decode_ms"] / 1e3                     # the driver decodes the whole set first (eval)
    read_all = n * c["jpeg_kb"] / 1e3 / c["read_mb_s"]
    for g in (8, 64):
        compute = n * gpu_s / g
        start = c["worker_start_s"] + 5.0                     # + ~5 s for Ray to place the actors
        total = decode_all + start + compute
        print(f"  {g:2d} GPUs: compute {compute / 3600:5.2f} h + driver decode {decode_all / 60:4.1f} min "
              f"(reading {read_all:.0f} s of it) + worker start {start:.0f} s = {total / 3600:5.2f} h")
    rate_driver = 1e3 / c["decode_ms"]
    print(f"  the driver decodes {rate_driver:.0f} img/s on one core; the GPUs consume {64 / gpu_s:.0f} img/s at 64: "
          "the suite is compute bound; for a cheap attack exported (FGSM: 1 forward+backward, ~"
          f"{1 / GPU_FWDBWD_S * 1e3:.1f} ms/img on a GPU) the driver's decode ({c['decode_ms']:.1f} ms) and merge "
          f"({c['merge_ms']:.1f} ms) bound it at any GPU count above "
          f"{max(1, round((1 / GPU_FWDBWD_S * 1e3 + c['encode_ms']) / (c['decode_ms'] + c['merge_ms'])))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--data", help="an ImageFolder of digits to use instead of writing one")
    ap.add_argument("--no-estimate", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    args = ap.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    work = Path(tempfile.mkdtemp(prefix="advgui-cluster-bench-"))
    try:
        if not args.no_throughput:
            throughput(args, work)
        if not args.no_estimate:
            estimate(per_image_costs(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
