"""session.report: the report of the latest export (Batch) or of any run folder (other views), as a job with
progress; a PDF written by the writer the view passes, on the consumer's thread; the model's passphrase is
never remembered."""
from __future__ import annotations

import json
import threading

import pytest

from .conftest import pump

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")


def test_report_of_the_latest_export_with_progress_and_pdf_on_this_thread(ready_session, tmp_path):
    from advgui.core.report import read_report_data
    s = ready_session
    assert s.report.latest_runs() == []
    warned = []
    s.message.connect(lambda m: warned.append(m))
    assert not s.report.export_latest(str(tmp_path / "none.html"))          # nothing exported yet
    assert warned and warned[-1].kind == "warning"
    s.attack.select("fgsm")
    s.attack.set_value("eps", 32 / 255)
    done = []
    s.batch.export_finished.connect(done.append)
    s.batch.export(str(tmp_path / "export"))
    pump(s, lambda: done)
    assert s.report.latest_runs() == [str(tmp_path / "export")]
    progress, finished, pdf_threads = [], [], []

    def pdf_writer(html, path):
        pdf_threads.append(threading.current_thread())
        assert "<table" in html and "advgui-report-data" not in html      # the PDF variant of the template
        path.write_bytes(b"%PDF-stand-in")
        return path
    s.report.progress.connect(progress.append)
    s.report.finished.connect(finished.append)
    assert s.report.export_latest(str(tmp_path / "r.html"), str(tmp_path / "r.pdf"), pdf_writer)
    pump(s, lambda: finished)
    r = finished[0]
    assert r.html == tmp_path / "r.html" and (tmp_path / "r.pdf").read_bytes() == b"%PDF-stand-in"
    assert pdf_threads == [threading.current_thread()]                     # drawn where events are delivered
    assert progress and progress[-1].fraction == 1.0
    man = json.loads((tmp_path / "export" / "manifest.json").read_text())
    head = {m["key"]: m["value"] for m in read_report_data(r.html)["runs"][0]["headline"]}
    assert head["adv_accuracy"] == man["summary"]["adv_accuracy"]


def test_report_of_a_bad_folder_fails_with_a_message(ready_session, tmp_path):
    s = ready_session
    failed = []
    s.report.failed.connect(failed.append)
    (tmp_path / "empty").mkdir()
    assert s.report.export([str(tmp_path / "empty")], str(tmp_path / "r.html"))
    pump(s, lambda: failed)
    assert failed[0].code == "not-a-run" and not (tmp_path / "r.html").exists()


def test_model_passphrase_is_not_remembered(ready_session, tmp_path, store):
    pytest.importorskip("pyrage")
    from advgui.core import crypto
    from advgui.core.models import resource_path
    from advgui.session import ModelRequest
    s = ready_session
    enc = tmp_path / "demo.safetensors.enc"
    crypto.encrypt_file(resource_path("demo_digits.safetensors"), enc, "pw")
    changed, failed = [], []
    s.model_changed.connect(changed.append)
    s.model_failed.connect(failed.append)
    s.load_model(ModelRequest(spec=str(enc)))                  # no passphrase: the window is told to ask
    pump(s, lambda: failed)
    assert failed[0].code == "passphrase-needed"
    s.load_model(ModelRequest(spec=str(enc), passphrase="pw"))
    pump(s, lambda: changed)
    assert changed[-1].request.passphrase == "pw" and "pw" not in repr(changed[-1].request)
    store.flush()
    assert "pw" not in json.dumps(store.get_dict("model")) and store.get_dict("model")["spec"] == str(enc)
