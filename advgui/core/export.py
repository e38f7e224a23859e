"""Adversarial-set writer: clean/ and adv/ PNGs, exact float tensors, manifest.csv + manifest.json.

- Every file is written atomically (temporary name in the same folder, then rename), so an interrupted
  run never leaves a half-written file under its real name.
- The manifest is rewritten (atomically) after every batch and only ever lists complete files, so
  ``resume=True`` continues where an interrupted run stopped without redoing finished images.
- Written adversarial PNGs are decoded again and compared with the 8-bit tensor that was classified
  (lossless round trip), so the manifest's 8-bit predictions are the predictions of the files on disk.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import time
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .data import ImageSet, Skipped
from .fileio import atomic_write_bytes, atomic_write_text
from .models import Classifier
from .runner import BatchResult, SetSummary
from .errors import UserError

MANIFEST_JSON = "manifest.json"
MANIFEST_CSV = "manifest.csv"
OUR_ENTRIES = ("clean", "adv", "adv_float", MANIFEST_JSON, MANIFEST_CSV)
FORMAT = "advgui-export-1"

CSV_FIELDS = ["source", "source_rel", "clean_png", "adv_png", "adv_float", "true_label", "true_label_name", "label_source",
              "target", "clean_pred", "clean_pred_name", "clean_conf", "adv_pred", "adv_pred_name", "adv_conf",
              "success", "adv8_pred", "adv8_pred_name", "adv8_conf", "success8", "linf", "l2", "linf8", "l2_8",
              "l0", "first_success_step"]


class ExportError(UserError):
    """The output folder cannot be used as asked; the message says why."""

    code = "export"


def versions() -> dict[str, str]:
    from .. import __version__
    try:
        import torchvision
        tv = torchvision.__version__
    except ImportError:  # a minimal bundle may ship without torchvision
        tv = None
    return {"advgui": __version__, "torch": torch.__version__, "torchvision": tv,
            "numpy": np.__version__, "python": platform.python_version()}


def png_bytes(img: torch.Tensor) -> bytes:
    """(C, H, W) uint8 tensor to lossless PNG bytes."""
    arr = img.permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        pil = Image.fromarray(arr[:, :, 0])
    else:
        pil = Image.fromarray(arr)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def read_png(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


# -- output names -----------------------------------------------------------------------------------------

def output_names(rels: Sequence[str]) -> dict[str, str]:
    """Map each source's relative path to a unique ``.png`` name mirroring it.

    ``a/cat.jpg`` becomes ``a/cat.png``; when two sources differ only by extension (``cat.jpg`` and
    ``cat.png``) both keep their extension in the name (``cat.jpg.png``, ``cat.png.png``).
    """
    stems = Counter(str(PurePosixPath(r).with_suffix("")).lower() for r in rels)
    out = {}
    for r in rels:
        p = PurePosixPath(r)
        if stems[str(p.with_suffix("")).lower()] > 1:
            out[r] = str(p.parent / (p.name + ".png")) if str(p.parent) != "." else p.name + ".png"
        else:
            out[r] = str(p.with_suffix(".png"))
    return out


# -- the writer ------------------------------------------------------------------------------------------

class ExportWriter:
    """Writes an adversarial set batch by batch. See the module docstring for the guarantees."""

    def __init__(self, out_dir: str | os.PathLike, *, classifier: Classifier, image_set: ImageSet,
                 run_info: dict[str, Any], overwrite: bool = False, resume: bool = False,
                 verify: bool = True,
                 row_extras: Optional[Callable[[BatchResult], list[dict[str, Any]]]] = None) -> None:
        # row_extras: more columns per image of a batch (e.g. detector scores), appended after CSV_FIELDS
        self.row_extras = row_extras
        self.out = Path(out_dir).expanduser()
        self.clf = classifier
        self.images = image_set
        self.run_info = dict(run_info)
        self.verify = verify
        self.names = output_names([it.rel for it in image_set.items])
        self.rows: list[dict[str, Any]] = []
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if self.out.exists() and not self.out.is_dir():
            raise ExportError(f"{self.out}: exists and is not a folder")
        existing = [p for p in self.out.iterdir()] if self.out.exists() else []
        if existing and resume:
            self._load_previous()
        elif existing and overwrite:
            for name in OUR_ENTRIES:
                p = self.out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif existing:
            raise ExportError(f"{self.out}: the folder is not empty; pass --resume to continue an interrupted "
                              "export there, or --overwrite to replace it")
        self.out.mkdir(parents=True, exist_ok=True)

    # resume ---------------------------------------------------------------------------------------------
    def _load_previous(self) -> None:
        path = self.out / MANIFEST_JSON
        if not path.exists():
            raise ExportError(f"{self.out}: nothing to resume (no {MANIFEST_JSON}); use --overwrite to start over")
        try:
            prev = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ExportError(f"{path}: unreadable manifest ({e}); use --overwrite to start over") from None
        if prev.get("format") != FORMAT:
            raise ExportError(f"{path}: not an advgui export manifest")
        old, new = prev.get("run", {}), self.run_info
        for key in ("attack", "params", "model", "seed", "target", "images"):
            if old.get(key) != new.get(key):
                raise ExportError(f"{self.out}: cannot resume: the earlier run used a different {key} "
                                  f"({old.get(key)!r} vs {new.get(key)!r}); use --overwrite or another folder")
        for row in prev.get("images", []):
            if all((self.out / row[k]).exists() for k in ("clean_png", "adv_png", "adv_float")):
                self.rows.append(row)
        self.started = prev.get("started", self.started)

    @property
    def done_sources(self) -> set[str]:
        return {r["source"] for r in self.rows}

    def pending_indices(self) -> list[int]:
        done = self.done_sources
        return [i for i, it in enumerate(self.images.items) if str(it.path) not in done]

    # writing --------------------------------------------------------------------------------------------
    def write_batch(self, batch: BatchResult) -> None:
        r = batch.result
        names = self.clf.class_names
        clean8 = (r.clean * 255).round().to(torch.uint8)
        extras = self.row_extras(batch) if self.row_extras is not None else None
        for k, i in enumerate(batch.indices):
            item = self.images.items[i]
            name = self.names[item.rel]
            clean_rel = f"clean/{name}"
            adv_rel = f"adv/{name}"
            float_rel = f"adv_float/{name[:-4]}.npz"
            atomic_write_bytes(self.out / clean_rel, png_bytes(clean8[k]))
            atomic_write_bytes(self.out / adv_rel, png_bytes(r.adv8[k]))
            atomic_write_bytes(self.out / float_rel, npz_bytes(adv=r.adv[k].numpy().astype(np.float32),
                                                                 clean=clean8[k].numpy()))
            if self.verify and not torch.equal(read_png(self.out / adv_rel), r.adv8[k]):
                raise ExportError(f"{self.out / adv_rel}: the written PNG does not decode to the classified image")
            lab = int(r.labels[k])
            tgt = None if r.target is None else int(r.target[k])
            row = {
                "source": str(item.path), "source_rel": item.rel, "clean_png": clean_rel, "adv_png": adv_rel, "adv_float": float_rel,
                "true_label": lab, "true_label_name": names[lab], "label_source": batch.label_sources[k],
                "target": tgt,
                "clean_pred": int(r.clean_pred[k]), "clean_pred_name": names[int(r.clean_pred[k])],
                "clean_conf": round(float(r.clean_conf[k]), 6),
                "adv_pred": int(r.adv_pred[k]), "adv_pred_name": names[int(r.adv_pred[k])],
                "adv_conf": round(float(r.adv_conf[k]), 6), "success": bool(r.success[k]),
                "adv8_pred": int(r.adv8_pred[k]), "adv8_pred_name": names[int(r.adv8_pred[k])],
                "adv8_conf": round(float(r.adv8_conf[k]), 6), "success8": bool(r.success8[k]),
                "linf": float(r.linf[k]), "l2": float(r.l2[k]), "linf8": float(r.linf8[k]),
                "l2_8": float(r.l2_8[k]), "l0": int(r.l0[k]), "first_success_step": int(r.first_success_step[k]),
            }
            if extras is not None:
                row.update(extras[k])
            self.rows = [x for x in self.rows if x["source"] != row["source"]] + [row]
        self._write_manifest(complete=False)

    def finish(self, summary: Optional[SetSummary] = None, skipped: Iterable[Skipped] = ()) -> Path:
        self._write_manifest(complete=True, summary=summary, skipped=list(skipped))
        return self.out / MANIFEST_JSON

    def _ordered_rows(self) -> list[dict[str, Any]]:
        order = {str(it.path): n for n, it in enumerate(self.images.items)}
        return sorted(self.rows, key=lambda r: order.get(r["source"], len(order)))

    def _write_manifest(self, complete: bool, summary: Optional[SetSummary] = None,
                        skipped: Sequence[Skipped] = ()) -> None:
        rows = self._ordered_rows()
        skipped = list(skipped) or list(self.images.skipped)
        doc = {
            "format": FORMAT, "complete": complete, "started": self.started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": self.run_info, "versions": versions(),
            "model": {"spec": self.clf.spec, "source": self.clf.source, "classes": self.clf.class_names,
                      "input_size": list(self.clf.input_size), "channels": self.clf.channels,
                      "mean": list(self.clf.mean), "std": list(self.clf.std)},
            "labels": ("true labels from ImageFolder class folders" if self.images.labelled else
                       "no class folders matched the model's classes: the clean prediction is used as the label, "
                       "so success means the prediction changed"),
            "summary": summarize_rows(rows, summary),
            "skipped": [{"source": str(s.path), "reason": s.reason} for s in skipped],
            "images": rows,
        }
        buf = io.StringIO()
        extra = list(dict.fromkeys(k for row in rows for k in row if k not in CSV_FIELDS))
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS + extra, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow(row)
        atomic_write_text(self.out / MANIFEST_CSV, buf.getvalue())
        atomic_write_text(self.out / MANIFEST_JSON, json.dumps(doc, indent=1, default=_json_default))


def summarize_rows(rows: Sequence[dict[str, Any]], timing: Optional[SetSummary] = None) -> dict[str, Any]:
    """Set-level numbers from manifest rows (so a resumed export summarises all its images)."""
    n = len(rows)

    def rate(key: str, pred: bool = False) -> Optional[float]:
        if not n:
            return None
        if pred:
            return sum(r[key] == r["true_label"] for r in rows) / n
        return sum(bool(r[key]) for r in rows) / n

    ok = [r for r in rows if r["success"]]
    out = {"images": n, "clean_accuracy": rate("clean_pred", True), "adv_accuracy": rate("adv_pred", True),
           "adv8_accuracy": rate("adv8_pred", True), "success_rate": rate("success"),
           "success_rate8": rate("success8"),
           "median_linf_successful": float(np.median([r["linf"] for r in ok])) if ok else None,
           "median_l2_successful": float(np.median([r["l2"] for r in ok])) if ok else None}
    if timing is not None:
        out["seconds_this_session"] = round(timing.elapsed, 3)
        out["forward_passes_this_session"] = timing.n_forward
        out["backward_passes_this_session"] = timing.n_backward
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
