"""``advgui report``: one self-contained HTML file (and optionally a PDF) from attack exports, ``eval`` runs and
standard-suite runs, for people who will never install advgui.

Each run folder is recognised by what it holds:

- an attack export (``manifest.json``, or ``manifest.json.enc`` with its passphrase): the run's model and
  parameters, clean / adversarial / 8-bit accuracy and success rate with 95% Wilson intervals, the accuracy an
  attacker with a smaller L∞ budget would leave, a gallery of original / adversarial / difference thumbnails
  with predictions and confidences;
- an ``advgui eval`` run (``robustness.json``, format ``advgui-robustness-1``): accuracy against ε per attack
  and the worst case, the worst case at the largest ε with its interval;
- a standard-suite run (``robustness.json`` format ``advgui-suite-1`` + ``card.json``): the model card, robust
  accuracy with its interval, the robust accuracy after each stage, per-stage counts and times.

Every run also shows its sanity flags and the parameters, versions and command that reproduce its numbers.
The HTML comes from a Jinja2 template (autoescaped: class and file names are text, never markup); images are
inlined as ``data:`` URIs, so the file opens offline in any browser; the numbers are also embedded as JSON
(``<script id="advgui-report-data">``, format ``advgui-report-1``, docs/report.md). Plots come from
matplotlib's Agg backend. Jinja2 and matplotlib are the 'report' extra, imported only here.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .errors import UserError
from .fileio import FileProblem, atomic_write_text, check_regular_file, read_small_file
from .plots import MissingExtra

REPORT_FORMAT = "advgui-report-1"
REPORT_PIP = "pip install 'advgui[report]'"
DEFAULT_GALLERY = 60
THUMB = 96                      # thumbnails: at most this many pixels a side (small images stay as they are)
_MAX_JSON = 1 << 30


class ReportError(UserError):
    """A run folder cannot be reported on; ``code``: ``not-a-run`` (details ``path``, ``found``), ``no-runs``."""

    code = "report"


def _require() -> Any:
    try:
        import jinja2
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise MissingExtra(f"advgui report needs the 'report' extra: {REPORT_PIP} ({e.name} is not installed)",
                           extra="report") from None
    return jinja2


# -- numbers -------------------------------------------------------------------------------------------------

def wilson(k: int, n: int) -> Optional[list[float]]:
    from .sanity import wilson_interval
    return list(wilson_interval(int(k), int(n))) if n else None


def pct(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * float(v):.{digits}f}%"


def _ci_text(ci: Optional[Sequence[float]]) -> str:
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%" if ci else ""


def _metric(key: str, label: str, value: Any, n: int, *, ci: Any = "wilson", count: Optional[int] = None,
            note: str = "") -> dict[str, Any]:
    """A headline number: its value (a fraction), its text, and its 95% interval over ``n`` images."""
    if ci == "wilson":
        ci = wilson(round(value * n) if count is None else count, n) if value is not None else None
    return {"key": key, "label": label, "value": value, "text": pct(value), "n": n, "ci": ci,
            "ci_text": _ci_text(ci), "note": note}


def _eps_text(e: Any) -> str:
    from .eps import format_eps
    try:
        return format_eps(float(e)) if e is not None else "none"
    except (TypeError, ValueError):
        return str(e)


def _flat(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested parameters as (dotted key, text) rows."""
    if isinstance(d, dict):
        return [row for k, v in d.items() for row in _flat(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), d if isinstance(d, str) else json.dumps(d))]


def _uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# -- reading runs --------------------------------------------------------------------------------------------

@dataclass
class Run:
    kind: str                     # "export", "eval" or "suite"
    path: Path
    doc: dict[str, Any]           # manifest.json or robustness.json
    card: Optional[dict[str, Any]] = None
    files: Any = None             # export.Files: how to read an export's images (plain or encrypted)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(read_small_file(path, what, max_bytes=_MAX_JSON))
    except (FileProblem, ValueError) as e:
        raise ReportError(f"{path}: unreadable {what} ({str(e).splitlines()[0][:120]})", code="not-a-run",
                          path=str(path), found=[]) from None


def open_run(path: str | os.PathLike, passphrase: Optional[str] = None) -> Run:
    """Recognise a run folder (or its manifest.json / robustness.json) and read it."""
    p = Path(path).expanduser()
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise ReportError(f"{p}: no such folder", code="not-a-run", path=str(p), found=[])
    if (p / "manifest.json").is_file() or (p / "manifest.json.enc").is_file():
        from .export import FORMAT, MANIFEST_JSON, SIGNATURE, folder_files
        files = folder_files(p, passphrase)
        try:
            doc = json.loads(files.read(p, MANIFEST_JSON, "manifest", max_bytes=_MAX_JSON))
        except (FileProblem, ValueError) as e:
            raise ReportError(f"{p / MANIFEST_JSON}: unreadable manifest ({str(e).splitlines()[0][:120]})",
                              code="not-a-run", path=str(p), found=[]) from None
        if not isinstance(doc, dict) or doc.get("written_by") != SIGNATURE or doc.get("format") != FORMAT:
            raise ReportError(f"{p / MANIFEST_JSON}: not an advgui export manifest ({FORMAT})", code="not-a-run",
                              path=str(p), found=["manifest.json"])
        if not doc.get("complete"):
            _fold_journal(p, doc, files)
        return Run("export", p, doc, files=files)
    if (p / "robustness.json").is_file():
        doc = _read_json(p / "robustness.json", "robustness.json")
        fmt = doc.get("format") if isinstance(doc, dict) else None
        if fmt == "advgui-suite-1":
            card = _read_json(p / "card.json", "card.json") if (p / "card.json").is_file() else None
            return Run("suite", p, doc, card if isinstance(card, dict) else None)
        if fmt == "advgui-robustness-1":
            return Run("eval", p, doc)
        raise ReportError(f"{p / 'robustness.json'}: unknown format {fmt!r}", code="not-a-run", path=str(p),
                          found=["robustness.json"])
    found = sorted(x.name for x in p.iterdir())[:8]
    raise ReportError(f"{p}: not an advgui run (no manifest.json or robustness.json; found "
                      f"{', '.join(found) or 'nothing'})", code="not-a-run", path=str(p), found=found)


def _fold_journal(p: Path, doc: dict[str, Any], files: Any) -> None:
    """An unfinished export: its complete rows are the manifest's plus the journal's (as a resume reads them)."""
    from .export import _read_state, _row_complete, summarize_rows
    st = _read_state(p, files)
    rows = [r for r in st.rows.values() if _row_complete(p, r, files)]
    doc["images"] = rows
    doc["summary"] = summarize_rows(rows)


# -- per kind: what the template shows ----------------------------------------------------------------------

def _common(run: Run, title: str, subtitle: str) -> dict[str, Any]:
    return {"kind": run.kind, "path": str(run.path), "title": title, "subtitle": subtitle, "card": [],
            "headline": [], "plots": [], "table": None, "gallery": [], "gallery_note": "", "flags": [],
            "params": [], "versions": [], "command": ""}


def _flags(items: Any) -> list[dict[str, Any]]:
    out = []
    for w in items or []:
        if isinstance(w, dict):
            out.append({"code": str(w.get("code")), "message": str(w.get("message")),
                        "attack": w.get("attack")})
    return out


def _export_context(run: Run, gallery: Optional[int], progress: Callable[[str, int, int], None]) -> dict[str, Any]:
    from .report_plots import budget_curve
    d = run.doc
    r = d.get("run") or {}
    m = d.get("model") or {}
    rows = [x for x in d.get("images") or [] if isinstance(x, dict)]
    n = len(rows)
    s = d.get("summary") or {}
    params = r.get("params") or {}
    eps = params.get("eps")
    ctx = _common(run, f"Attack export: {r.get('attack')} on {m.get('spec') or r.get('model')}",
                  f"{n} images, ε {_eps_text(eps)} ({params.get('norm', 'linf')})"
                  + ("" if d.get("complete") else " — unfinished run (complete images only)"))
    ctx["card"] = [("model", m.get("spec")), ("source", m.get("source")), ("classes", len(m.get("classes") or [])),
                   ("input", f"{m.get('channels')}×{'×'.join(str(v) for v in m.get('input_size') or [])}"),
                   ("normalisation", f"mean {m.get('mean')}, std {m.get('std')}"), ("labels", d.get("labels")),
                   ("images", r.get("images")), ("device", r.get("device"))]
    correct = sum(x.get("clean_pred") == x.get("true_label") for x in rows)
    adv_ok = sum(x.get("adv_pred") == x.get("true_label") for x in rows)
    adv8_ok = sum(x.get("adv8_pred") == x.get("true_label") for x in rows)
    succ = sum(bool(x.get("success")) for x in rows)
    succ8 = sum(bool(x.get("success8")) for x in rows)
    ctx["headline"] = [
        _metric("clean_accuracy", "clean accuracy", s.get("clean_accuracy"), n, count=correct),
        _metric("adv_accuracy", "adversarial accuracy", s.get("adv_accuracy"), n, count=adv_ok),
        _metric("adv8_accuracy", "adversarial accuracy, 8-bit PNGs", s.get("adv8_accuracy"), n, count=adv8_ok),
        _metric("success_rate", "attack success rate" if r.get("target") is None else "target hit rate",
                s.get("success_rate"), n, count=succ),
        _metric("success_rate8", "success rate after 8-bit rounding", s.get("success_rate8"), n, count=succ8),
    ]
    med, med2 = s.get("median_linf_successful"), s.get("median_l2_successful")
    ctx["table"] = {
        "columns": ["attack", "norm", "ε", "steps", "images", "clean acc.", "adv. acc.", "success", "median L∞",
                    "median L2", "seconds"],
        "rows": [[r.get("attack"), params.get("norm", ""), _eps_text(eps), params.get("steps", params.get("queries", "")),
                  n, pct(s.get("clean_accuracy")), pct(s.get("adv_accuracy")), pct(s.get("success_rate")),
                  "" if med is None else f"{med:.4f} ({255 * med:.1f}/255)", "" if med2 is None else f"{med2:.3f}",
                  s.get("seconds_this_session", "")]]}
    if rows:
        ctx["plots"].append({"title": "Accuracy within an L∞ budget, and perturbation sizes", "uri": _uri(budget_curve(
            [x.get("linf") for x in rows], [bool(x.get("success")) for x in rows],
            [x.get("clean_pred") == x.get("true_label") for x in rows], eps if isinstance(eps, (int, float)) else None,
            [x.get("l2") for x in rows], title=f"{r.get('attack')}: {n} images"))})
    ctx["gallery"], ctx["gallery_note"] = _gallery(run, rows, eps, gallery, progress)
    ctx["flags"] = _flags(d.get("warnings"))
    ctx["params"] = _flat({"attack": r.get("attack"), "params": params, "seed": r.get("seed"),
                           "target": r.get("target"), "batch_size": r.get("batch_size"), "model": r.get("model"),
                           "weights": r.get("weights"), "run_id": d.get("run_id"), "started": d.get("started"),
                           "updated": d.get("updated")})
    ctx["versions"] = sorted((d.get("versions") or {}).items())
    cmd = ["advgui", "attack", "--model", str(r.get("model")), "--images", str(r.get("images")),
           "--attack", str(r.get("attack"))]
    if r.get("weights"):
        cmd += ["--weights", str(r["weights"])]
    for k, v in params.items():
        if v is None or k in ("stop_on_success",):
            continue
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    if r.get("target") is not None:
        cmd += ["--target", str(r["target"])]
    cmd += ["--seed", str(r.get("seed")), "--out", "DIR"]
    ctx["command"] = " ".join(shlex.quote(c) for c in cmd)
    ctx["numbers"] = {"images": n, "summary": s}
    return ctx


def _gallery(run: Run, rows: list[dict[str, Any]], eps: Any, limit: Optional[int],
             progress: Callable[[str, int, int], None]) -> tuple[list[dict[str, Any]], str]:
    """Thumbnail triplets: the fooled images first (in the set's order), then the others, up to ``limit``."""
    import numpy as np
    from PIL import Image
    picked = [x for x in rows if x.get("success")] + [x for x in rows if not x.get("success")]
    if limit is not None:
        picked = picked[:max(0, int(limit))]
    note = (f"{len(picked)} of {len(rows)} images (the fooled ones first)" if len(picked) < len(rows)
            else f"all {len(rows)} images")
    scale = float(eps) if isinstance(eps, (int, float)) and eps > 0 else None
    if scale is None:
        scale = max([float(x.get("linf8") or 0) for x in picked] + [1 / 255])
    from matplotlib import colormaps
    cmap = colormaps["RdBu_r"]
    out = []
    for k, x in enumerate(picked):
        try:
            clean = _read_image(run, x["clean_png"])
            adv = _read_image(run, x["adv_png"])
        except (OSError, ValueError, KeyError):
            continue           # a row without its files (should not happen in a complete export): left out
        diff = (adv.astype(np.float32) - clean.astype(np.float32)) / 255.0
        d = diff.mean(axis=2) if diff.ndim == 3 else diff
        rgb = (cmap(np.clip(0.5 + 0.5 * d / scale, 0, 1))[..., :3] * 255).round().astype(np.uint8)
        item = {"name": x.get("source_rel") or x.get("clean_png"), "true": x.get("true_label_name"),
                "clean_pred": x.get("clean_pred_name"), "clean_conf": pct(x.get("clean_conf")),
                "adv_pred": x.get("adv8_pred_name"), "adv_conf": pct(x.get("adv8_conf")),
                "success": bool(x.get("success8")),
                "linf": "" if x.get("linf8") is None else f"{255 * x['linf8']:.1f}/255",
                "clean": _thumb(Image.fromarray(clean.squeeze())), "adv": _thumb(Image.fromarray(adv.squeeze())),
                "diff": _thumb(Image.fromarray(rgb)), "size": _display_size(clean.shape)}
        out.append(item)
        if k % 20 == 0:
            progress("gallery", k + 1, len(picked))
    return out, note + f"; difference scaled to ±{255 * scale:.1f}/255 (blue: darker, red: brighter)"


def _read_image(run: Run, rel: str) -> Any:
    import numpy as np
    from PIL import Image

    from .export import _safe_rel
    if _safe_rel(rel) is None:
        raise ValueError(rel)
    data = run.files.read(run.path, rel, "image", max_bytes=64 << 20)
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def _thumb(im: Any) -> str:
    w, h = im.size
    if max(w, h) > THUMB:
        im = im.copy()
        im.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    if im.mode == "RGB" and max(w, h) > 64:       # photos: JPEG keeps a 96 px thumbnail at a few KB
        im.save(buf, format="JPEG", quality=88)
        return _uri(buf.getvalue(), "image/jpeg")
    im.save(buf, format="PNG", optimize=False)
    return _uri(buf.getvalue())


def _display_size(shape: Sequence[int]) -> int:
    side = max(shape[0], shape[1])
    return THUMB if side >= THUMB else max(side, min(THUMB, side * (THUMB // side)))


def _eval_context(run: Run) -> dict[str, Any]:
    from .report_plots import accuracy_curves
    d = run.doc
    eps = [float(e) for e in d.get("eps") or []]
    n = int(d.get("n") or 0)
    attacks = d.get("attacks") or {}
    worst = (d.get("worst") or {}).get("accuracy") or []
    worst8 = (d.get("worst") or {}).get("accuracy_8bit") or []
    ctx = _common(run, f"Robustness curves: {d.get('model')}", f"{n} images, {d.get('norm')}, ε "
                  + ", ".join(_eps_text(e) for e in eps) + (" — cancelled" if d.get("cancelled") else ""))
    ctx["card"] = [("model", d.get("model")), ("images", d.get("images")), ("labels", d.get("label_source"))]
    k = len(eps) - 1
    ctx["headline"] = [_metric("clean_accuracy", "clean accuracy", d.get("clean_accuracy"), n)]
    if k >= 0 and worst:
        ctx["headline"].append(_metric("worst_accuracy", f"worst-case accuracy at ε {_eps_text(eps[k])}",
                                       worst[k], n))
        if worst8:
            ctx["headline"].append(_metric("worst_accuracy_8bit", f"worst case, 8-bit, at ε {_eps_text(eps[k])}",
                                           worst8[k], n))
    ctx["plots"].append({"title": "Accuracy against ε", "uri": _uri(accuracy_curves(
        eps, [(a, c.get("accuracy") or []) for a, c in attacks.items()], worst,
        title=f"Accuracy vs ε ({d.get('norm')}): {d.get('model')}, {n} images", norm=str(d.get("norm")),
        n_warnings=len(d.get("warnings") or [])))})
    rows = []
    for a, c in list(attacks.items()) + [("worst case", {"accuracy": worst, "accuracy_8bit": worst8})]:
        for j, e in enumerate(eps):
            acc = (c.get("accuracy") or [None] * len(eps))[j]
            acc8 = (c.get("accuracy_8bit") or [None] * len(eps))[j]
            ci = wilson(round(acc * n), n) if acc is not None else None
            rows.append([a, _eps_text(e), pct(acc), _ci_text(ci), pct(acc8),
                         "" if a == "worst case" else f"{(c.get('seconds') or [0] * len(eps))[j]:.2f}"])
    ctx["table"] = {"columns": ["attack", "ε", "accuracy", "95% interval", "8-bit", "seconds"], "rows": rows}
    ctx["flags"] = _flags(d.get("warnings"))
    ctx["params"] = _flat({"norm": d.get("norm"), "eps": eps, "settings": d.get("settings"),
                           "attacks": {a: c.get("params") for a, c in attacks.items()}})
    ctx["versions"] = sorted((d.get("versions") or {}).items())
    st = d.get("settings") or {}
    cmd = ["advgui", "eval", "--model", str(d.get("model")), "--images", str(d.get("images")),
           "--attacks", ",".join(attacks), "--eps", ",".join(f"{e:g}" for e in eps), "--norm", str(d.get("norm")),
           "--steps", str(st.get("steps")), "--restarts", str(st.get("restarts")), "--seed", str(st.get("seed")),
           "--out", "DIR"]
    ctx["command"] = " ".join(shlex.quote(c) for c in cmd)
    ctx["numbers"] = {"n": n, "eps": eps, "clean_accuracy": d.get("clean_accuracy"), "worst": worst,
                      "attacks": {a: c.get("accuracy") for a, c in attacks.items()}}
    return ctx


def _suite_context(run: Run) -> dict[str, Any]:
    from .report_plots import suite_stages
    d = run.doc
    su = d.get("suite") or {}
    n = int(su.get("n") or 0)
    stages = [x for x in d.get("stages") or [] if isinstance(x, dict)]
    ctx = _common(run, f"Standard evaluation: {d.get('model')}",
                  f"{su.get('name')} suite, {n} images, {su.get('norm')} ε {su.get('eps_text') or su.get('eps')}"
                  + ("" if su.get("complete") else " — incomplete" + (" (cancelled)" if su.get("cancelled") else "")))
    card = run.card or {}
    ctx["card"] = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in card.items()] or \
        [("model", d.get("model")), ("images", d.get("images"))]
    ctx["headline"] = [
        _metric("robust_accuracy", f"robust accuracy at ε {su.get('eps_text')}", su.get("robust_accuracy"), n,
                ci=su.get("ci95")),
        _metric("clean_accuracy", "clean accuracy", su.get("clean_accuracy"), n),
        _metric("robust_accuracy_8bit", "robust accuracy, 8-bit (upper bound)", su.get("robust_accuracy_8bit"), n),
    ]
    ctx["plots"].append({"title": "Robust accuracy after each stage", "uri": _uri(suite_stages(
        [x.get("label") or x.get("attack") for x in stages], [x.get("robust_accuracy") for x in stages],
        [x.get("ci95") for x in stages], su.get("clean_accuracy"),
        title=f"{d.get('model')}: {su.get('name')} suite, ε {su.get('eps_text')}"))})
    ctx["table"] = {"columns": ["stage", "attack", "attacked", "fooled", "fooled 8-bit", "robust accuracy",
                                "95% interval", "seconds", "forward", "backward", "queries", "status"],
                    "rows": [[x.get("label"), x.get("attack"), x.get("attacked"), x.get("fooled"),
                              x.get("fooled_8bit"), pct(x.get("robust_accuracy")), _ci_text(x.get("ci95")),
                              x.get("seconds"), x.get("forward_images"), x.get("backward_images"), x.get("queries"),
                              x.get("status")] for x in stages]}
    ctx["flags"] = _flags(d.get("warnings"))
    ctx["params"] = _flat({"suite": {k: su.get(k) for k in ("name", "eps", "eps_255", "norm", "seed", "stages")},
                           "settings": d.get("settings"),
                           "stages": {x.get("label") or x.get("attack"): x.get("params") for x in stages}})
    ctx["versions"] = sorted((d.get("versions") or {}).items())
    cmd = ["advgui", "eval", "--model", str(d.get("model")), "--images", str(d.get("images")), "--suite",
           str(su.get("name")), "--eps", f"{su.get('eps'):g}" if isinstance(su.get("eps"), (int, float)) else "?",
           "--norm", str(su.get("norm")), "--seed", str(su.get("seed")), "--out", "DIR"]
    ctx["command"] = " ".join(shlex.quote(c) for c in cmd)
    ctx["numbers"] = {"suite": su, "stages": [{k: x.get(k) for k in ("attack", "robust_accuracy", "ci95", "fooled")}
                                              for x in stages]}
    return ctx


# -- building ------------------------------------------------------------------------------------------------

@dataclass
class ReportProgress:
    stage: str              # "reading", "plots", "gallery", "writing", "pdf"
    done: int
    total: int
    run: int = 0            # index of the run being read
    runs: int = 0

    @property
    def fraction(self) -> float:
        per = 1.0 / max(1, self.runs)
        inner = self.done / self.total if self.total else 1.0
        return min(1.0, per * (self.run + inner)) if self.stage not in ("writing", "pdf") else 1.0


@dataclass
class ReportResult:
    html: Path
    pdf: Optional[Path]
    runs: list[dict[str, Any]]            # kind and path per run
    bytes: int
    seconds: float
    data: dict[str, Any] = field(repr=False, default_factory=dict)


def build_report(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *, pdf: Optional[str | os.PathLike] = None,
                 pdf_writer: Optional[Callable[[str, Path], Path]] = None,
                 gallery: Optional[int] = DEFAULT_GALLERY, title: Optional[str] = None,
                 passphrase: Optional[str] = None, progress: Optional[Callable[[ReportProgress], Any]] = None,
                 cancel: Any = None) -> ReportResult:
    """Write one self-contained HTML report (and with ``pdf`` a PDF) for the run folders in ``runs``.

    ``gallery``: triplets per export (None: all). ``pdf_writer(html, path)``: renders the PDF (the core never
    imports Qt: the CLI and the window pass ``advgui.gui.pdf.html_to_pdf``). ``passphrase``: for encrypted
    exports. ``progress`` gets a :class:`ReportProgress`; ``cancel`` (Event or callable) stops between steps
    with ReportError ``cancelled``. Raises ReportError ``no-runs`` / ``not-a-run``, MissingExtra
    ``missing_extra`` without the 'report' extra."""
    from .evaluate import is_cancelled
    t0 = time.perf_counter()
    jinja2 = _require()
    if not runs:
        raise ReportError("no run folders given", code="no-runs")
    if pdf and pdf_writer is None:
        raise ReportError(f"{pdf}: no PDF writer was given", code="bad-output", path=str(pdf))
    for p in (Path(out), Path(pdf) if pdf else None):
        if p is not None and p.is_dir():
            raise ReportError(f"{p}: is a folder; give a file name", code="bad-output", path=str(p))
    contexts = []
    total = len(runs)
    for i, path in enumerate(runs):
        def step(stage: str, done: int, n: int, i: int = i) -> None:
            if is_cancelled(cancel):
                raise ReportError("the report was cancelled", code="cancelled")
            if progress is not None:
                progress(ReportProgress(stage, done, n, i, total))
        step("reading", 0, 1)
        run = open_run(path, passphrase)
        if run.kind == "export":
            ctx = _export_context(run, gallery, step)
        elif run.kind == "eval":
            ctx = _eval_context(run)
        else:
            ctx = _suite_context(run)
        ctx["id"] = f"run{i + 1}"
        contexts.append(ctx)
        step("plots", 1, 1)
    from .. import __version__
    data = {"format": REPORT_FORMAT, "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "advgui": __version__,
            "runs": [{"id": c["id"], "kind": c["kind"], "path": c["path"], "title": c["title"],
                      "headline": [{k: m[k] for k in ("key", "label", "value", "n", "ci")} for m in c["headline"]],
                      "flags": c["flags"], "numbers": c.get("numbers", {})} for c in contexts]}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    page_title = title or (contexts[0]["title"] if len(contexts) == 1 else f"advgui report: {len(contexts)} runs")
    html = env.get_template("report.html.j2").render(title=page_title, runs=contexts, data=data, pdf=False,
                                                     generated=data["generated"], version=__version__)
    if progress is not None:
        progress(ReportProgress("writing", 1, 1, total, total))
    out_path = atomic_write_text(Path(out).expanduser(), html)
    pdf_path = None
    if pdf:
        if progress is not None:
            progress(ReportProgress("pdf", 0, 1, total, total))
        simple = env.get_template("report.html.j2").render(title=page_title, runs=contexts, data=data, pdf=True,
                                                           generated=data["generated"], version=__version__)
        pdf_path = pdf_writer(simple, Path(pdf).expanduser())
    return ReportResult(out_path, pdf_path, [{"kind": c["kind"], "path": c["path"]} for c in contexts],
                        out_path.stat().st_size, time.perf_counter() - t0, data)


def read_report_data(path: str | os.PathLike) -> dict[str, Any]:
    """The numbers embedded in a report (``<script id="advgui-report-data">``), for tests and tools."""
    text = str(read_small_file(check_regular_file(path, "report"), "report", max_bytes=1 << 30))
    start = text.index('<script type="application/json" id="advgui-report-data">')
    start = text.index(">", start) + 1
    end = text.index("</script>", start)
    return json.loads(text[start:end])
