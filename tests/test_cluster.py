"""Runs on a Ray cluster (issue 16): the merged export equals the single-process one, resume across cluster and
single process, a killed worker, sharded evaluations, the command line. One local Ray instance with 2 CPUs
serves every test (the ``ray_cluster`` fixture in conftest.py); its two workers are kept between tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from advgui.core import cluster as cl
from advgui.core.cluster import ClusterError, parse_address

BATCH = 8


# -- without Ray -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, workers", [("local:3", "local", 3), ("auto", "auto", None),
                                                  ("ray://head:10001", "client", None), ("10.0.0.5:6379", "head", None)])
def test_addresses(text, kind, workers):
    a = parse_address(text)
    assert (a.kind, a.workers) == (kind, workers)


@pytest.mark.parametrize("text", ["", "local:0", "local:x", "ray://", "cluster", "http://x/y:1"])
def test_bad_address_is_one_line_with_a_code(text):
    with pytest.raises(ClusterError) as e:
        parse_address(text)
    assert e.value.code == "bad-cluster-address" and "\n" not in str(e.value) and "local:N" in str(e.value)


def test_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # import ray -> ImportError
    with pytest.raises(ClusterError) as e:
        cl.connect("local:1")
    assert e.value.code == "cluster-missing" and "pip install 'advgui[cluster]'" in str(e.value)


def test_plan_uses_gpus_when_present_and_shares_cores_locally():
    kw = cl.model_kwargs("demo")
    gpu = cl.plan_pool(cl.ClusterInfo("ray://h:1", "client", 64, 8, 2, False), kw)
    assert (gpu.workers, gpu.gpus) == (8, 1.0)
    cpu_only = cl.plan_pool(cl.ClusterInfo("ray://h:1", "client", 64, 8, 2, False), {**kw, "device": "cpu"})
    assert (cpu_only.workers, cpu_only.gpus, cpu_only.threads) == (64, 0.0, 1)
    local = cl.plan_pool(cl.ClusterInfo("local:2", "local", 2, 0, 1, True, 2), kw, threads=1)
    assert (local.workers, local.threads, local.cpus) == (2, 1, 1.0)


# -- helpers ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def setup(ray_cluster):
    from advgui.core.attacks import make_attack
    from advgui.core.models import load_model
    clf = load_model("demo", device="cpu")
    pool = cl.open_pool("local:2", cl.model_kwargs("demo", device="cpu"), threads=1, reference=clf)
    return clf, pool, make_attack("pgd", eps=0.1, steps=5)


def _export(out, clf, attack, pool=None, resume=False, stop_after=None, on_progress=None, on_event=None):
    """Export the demo set in batches of 8, in this process (``pool`` None) or on the cluster; ``stop_after``
    cancels after that many batches."""
    from advgui.core.data import open_images
    from advgui.core.export import ExportWriter
    images = open_images("demo", clf.class_names)
    run = {"attack": attack.name, "params": attack.params(), "model": "demo", "weights": None, "images": "demo",
           "seed": 0, "target": None}
    stop = threading.Event()
    seen = []

    def progress(p):
        seen.append(p)
        if on_progress:
            on_progress(p)
        if stop_after is not None and len(seen) >= stop_after:
            stop.set()

    w = ExportWriter(out, classifier=clf, image_set=images, run_info=run, resume=resume)
    with w:
        if pool is None:
            return w.run(attack, batch_size=BATCH, seed=0, progress=progress, cancel=stop)
        return cl.export_on_cluster(w, pool, attack, batch_size=BATCH, seed=0, progress=progress, on_event=on_event,
                                    cancel=stop)


def _rows(out):
    doc = json.loads((out / "manifest.json").read_text())
    return doc, doc["images"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, setup):
    clf, _pool, attack = setup
    out = tmp_path_factory.mktemp("ref") / "single"
    res = _export(out, clf, attack)
    assert res.complete
    return out, _rows(out)[1]


# -- merge and identical results ----------------------------------------------------------------------------------

def test_cluster_export_equals_single_process(setup, reference, tmp_path):
    clf, pool, attack = setup
    ref_dir, ref_rows = reference
    batches = []
    res = _export(tmp_path / "c", clf, attack, pool=pool, on_progress=batches.append)
    doc, rows = _rows(tmp_path / "c")
    assert res.complete and doc["complete"] and not (tmp_path / "c" / "journal.jsonl").exists()
    assert [r["source"] for r in rows] == [r["source"] for r in ref_rows]        # each image once, in set order
    assert len({r["source"] for r in rows}) == 50
    assert rows == ref_rows                                    # predictions, success, norms: every column equal
    for name in ("clean", "adv", "adv_float"):                 # the files too, byte for byte
        for r in rows[:10]:
            rel = r["clean_png" if name == "clean" else "adv_png" if name == "adv" else "adv_float"]
            assert (tmp_path / "c" / rel).read_bytes() == (ref_dir / rel).read_bytes()
    assert (tmp_path / "c" / "manifest.csv").read_text() == (ref_dir / "manifest.csv").read_text()
    assert sum(p.batch for p in batches) == 50 and batches[-1].done == 50


def test_resume_switches_between_cluster_and_single_process(setup, reference, tmp_path):
    clf, pool, attack = setup
    _ref_dir, ref_rows = reference
    # interrupted on the cluster, finished in this process
    first = _export(tmp_path / "a", clf, attack, pool=pool, stop_after=2)
    doc, rows = _rows(tmp_path / "a")
    assert first.cancelled and not doc["complete"] and 0 < len(rows) < 50
    assert all(all((tmp_path / "a" / r[k]).is_file() for k in ("clean_png", "adv_png", "adv_float")) for r in rows)
    done = _export(tmp_path / "a", clf, attack, resume=True)
    assert done.complete and done.from_earlier == len(rows) and _rows(tmp_path / "a")[1] == ref_rows
    # interrupted in this process, finished on the cluster
    first = _export(tmp_path / "b", clf, attack, stop_after=2)
    assert first.cancelled
    done = _export(tmp_path / "b", clf, attack, pool=pool, resume=True)
    assert done.complete and done.written_now == 50 - first.images and _rows(tmp_path / "b")[1] == ref_rows


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_run_completes(setup, reference, tmp_path):
    clf, pool, attack = setup
    _ref_dir, ref_rows = reference
    victim = int(pool.infos[0]["pid"])
    lost = []

    def kill_once(p):
        if len(lost) == 0 and p.done >= BATCH:
            lost.append("killed")
            os.kill(victim, signal.SIGKILL)

    events = []
    res = _export(tmp_path / "k", clf, attack, pool=pool, on_progress=kill_once, on_event=events.append)
    assert lost and res.complete
    assert any(e.retried for e in events), "no batch was sent again after the kill"
    assert _rows(tmp_path / "k")[1] == ref_rows
    assert victim not in pool.pids()                         # Ray restarted the worker in a new process
    pool.infos = pool.ready()                                # and it has the model again


# -- evaluations ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits32():
    from advgui.core.data import digits_dataset
    x, y = digits_dataset("test")
    return x[:32], y[:32]


def test_sharded_curves_equal_single_process(setup, digits32):
    from advgui.core.evaluate import evaluate_robustness
    clf, pool, _attack = setup
    x, y = digits32
    kw = dict(norm="linf", steps=5, batch_size=BATCH, seed=0)
    single = evaluate_robustness(clf, x, y, ["fgsm", "pgd"], [0, 0.05, 0.1], **kw)
    seen = []
    merged = cl.evaluate_on_cluster(pool, clf, x, y, ["fgsm", "pgd"], [0, 0.05, 0.1], progress=seen.append, **kw)
    a, b = single.to_dict(), merged.to_dict()
    for d in (a, b):
        d.pop("elapsed"), d.pop("settings")
        for c in d["attacks"].values():
            c.pop("seconds")
    assert a == b
    for name in ("fgsm", "pgd"):
        assert np.array_equal(single.curves[name].robust, merged.curves[name].robust)
    assert seen[-1].done == 32 and seen[-1].shards_done == seen[-1].shards > 1


def test_sharded_suite_equals_single_process(setup, digits32):
    from advgui.core.attacks import make_attack
    from advgui.core.suite import run_suite
    clf, pool, _attack = setup
    x, y = digits32[0][:16], digits32[1][:16]        # two shards
    stages = [make_attack("apgd", eps=0.1, steps=4, stop_on_success=True),
              make_attack("square", eps=0.1, queries=20, stop_on_success=True)]
    kw = dict(eps=0.1, batch_size=BATCH, seed=0, attacks=stages, paths=[f"d{i}" for i in range(16)])
    single = run_suite(clf, x, y, keep_adv=False, **kw)
    merged = cl.suite_on_cluster(pool, clf, x, y, **kw)
    a, b = single.to_dict(), merged.to_dict()
    assert a["per_image"] == b["per_image"]
    assert a["warnings"] == b["warnings"] and a["checks"]["gradient_health"] == b["checks"]["gradient_health"]
    for sa, sb in zip(a["stages"], b["stages"]):
        for key in ("attacked", "fooled", "fooled_8bit", "robust", "forward_images", "backward_images", "queries",
                    "status"):
            assert sa[key] == sb[key], key
    assert [(p["probe"], p["fooled"], p["attacked"]) for p in a["checks"]["probes"]] == \
        [(p["probe"], p["fooled"], p["attacked"]) for p in b["checks"]["probes"]]
    assert b["suite"]["robust_accuracy"] == a["suite"]["robust_accuracy"]
    assert a["checks"]["probes"] and 0 < sum(r["robust"] for r in a["per_image"]) < 16   # probes ran: not vacuous


def test_cancel_stops_the_workers_and_keeps_finished_shards(setup, digits32):
    clf, pool, _attack = setup
    x, y = digits32
    stop = threading.Event()
    report = cl.evaluate_on_cluster(pool, clf, x, y, ["pgd"], [0, 0.1], steps=5, batch_size=BATCH,
                                    progress=lambda p: stop.set(), cancel=stop)
    assert report.cancelled and 0 < report.n < 32


# -- the command line -----------------------------------------------------------------------------------------

def test_cli_attack_on_the_cluster(setup, reference, tmp_path, capsys):
    from advgui.cli import main
    _ref_dir, ref_rows = reference
    code = main(["attack", "--model", "demo", "--device", "cpu", "--images", "demo", "--attack", "pgd", "--eps", "0.1",
                 "--steps", "5", "--batch-size", str(BATCH), "--out", str(tmp_path / "o"), "--cluster", "local:2",
                 "--worker-threads", "1", "--quiet"])
    assert code == 0
    doc, rows = _rows(tmp_path / "o")
    assert rows == ref_rows and doc["run"]["cluster"] == "local:2" and doc["complete"]
    assert "wrote" in capsys.readouterr().out


def test_cli_cluster_option_errors(tmp_path, capsys):
    from advgui.cli import main
    assert main(["attack", "--images", "demo", "--workers", "2"]) == 2
    assert "--workers/--worker-threads need --cluster" in capsys.readouterr().err
    assert main(["eval", "--model", "demo", "--images", "demo", "--cluster", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "not a cluster address" in err and len(err.strip().splitlines()) == 1


def _children(pid: int) -> list[str]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(d)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the process table from /proc")
def test_ctrl_c_cancels_a_cluster_run_cleanly(tmp_path):
    """A separate process with its own local Ray: the first Ctrl-C stops the workers' batches, exits 130, leaves
    a resumable folder and no Ray process behind."""
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "advgui.cli", "attack", "--model", "demo", "--device", "cpu", "--images", "demo",
           "--attack", "pgd", "--eps", "0.1", "--steps", "100000", "--batch-size", "8", "--out", str(out),
           "--cluster", "local:1"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in p.stderr:                       # wait until the workers are up and attacking
        lines.append(line)
        if "ready in" in line:
            break
    ray_procs = _children(p.pid)
    assert ray_procs, "the local Ray instance runs as children of the command"
    p.send_signal(signal.SIGINT)
    try:
        _out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, "".join(lines) + err
    assert "Continue with the same command and --resume" in err
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["complete"] is False and not (out / ".advgui-export.lock").exists()
    alive = [pid for pid in ray_procs if os.path.exists(f"/proc/{pid}") and
             "zombie" not in open(f"/proc/{pid}/status").read().lower()]
    assert not alive, f"Ray processes left behind: {alive}"


# -- what the workers check before any work (last: the second test replaces the shared workers) ---------------

def test_workers_with_other_weights_are_refused(setup):
    _clf, pool, _attack = setup
    with pytest.raises(ClusterError) as e:
        pool.ready(fingerprint="0" * 64)
    assert e.value.code == "model-differs" and "same on every node" in str(e.value)


def test_a_model_a_worker_cannot_open_is_one_line_naming_the_node(ray_cluster, tmp_path):
    from advgui.core.models import load_model
    with pytest.raises(ClusterError) as e:
        cl.open_pool("local:1", cl.model_kwargs("torchvision:resnet18", weights=str(tmp_path / "gone.pth")),
                     reference=load_model("demo", device="cpu"))
    assert e.value.code == "cluster-worker-failed" and "gone.pth" in str(e.value)
    assert e.value.details["host"] and "\n" not in str(e.value)
