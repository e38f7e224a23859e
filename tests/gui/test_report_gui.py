"""The window: "Export report…" in the Batch tab after an export (HTML, or PDF with its HTML), and the Open-model
dialog asking for the passphrase of an encrypted model file."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from .conftest import set_attack

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")


def _export(qtbot, w, folder):
    with qtbot.waitSignal(w.s.batch.export_finished, timeout=120_000):
        w.s.batch.export(str(folder))


def test_export_report_from_the_batch_tab(qtbot, window, tmp_path):
    from advgui.core.report import read_report_data
    from advgui.gui.report_button import HTML_FILTER, PDF_FILTER
    w = window
    tab = w.tab["Batch"]
    button = tab.report
    assert not button.button.isEnabled() and "Export the adversarial set first" in button.button.toolTip()
    set_attack(w, "fgsm", eps=32 / 255)
    _export(qtbot, w, tmp_path / "export")
    assert button.button.isEnabled()
    answers = [(str(tmp_path / "r.html"), HTML_FILTER), (str(tmp_path / "r2.pdf"), PDF_FILTER)]
    button.choose_file = lambda: answers.pop(0)
    with qtbot.waitSignal(w.s.report.finished, timeout=60_000) as done:
        qtbot.mouseClick(button.button, Qt.MouseButton.LeftButton)
    assert done.args[0].html == tmp_path / "r.html"
    assert not button.progress.isHidden() and "report written" in button.progress.format()
    man = json.loads((tmp_path / "export" / "manifest.json").read_text())
    head = {m["key"]: m["value"] for m in read_report_data(tmp_path / "r.html")["runs"][0]["headline"]}
    assert head["success_rate"] == man["summary"]["success_rate"]
    with qtbot.waitSignal(w.s.report.finished, timeout=60_000):          # the PDF, with its HTML beside it
        qtbot.mouseClick(button.button, Qt.MouseButton.LeftButton)
    assert (tmp_path / "r2.pdf").read_bytes()[:5] == b"%PDF-" and (tmp_path / "r2.html").is_file()


def test_open_model_dialog_asks_for_the_passphrase_of_an_encrypted_file(qtbot, window, tmp_path):
    pytest.importorskip("pyrage")
    from advgui.core import crypto
    from advgui.core.models import resource_path
    w = window
    enc = tmp_path / "robust.safetensors.enc"
    crypto.encrypt_file(resource_path("demo_digits_robust.safetensors"), enc, "s3cret")
    dlg = w.model_panel.open_dialog(path=str(enc))
    open_btn = dlg.buttons.button(QDialogButtonBox.StandardButton.Open)
    assert dlg.form.isRowVisible(dlg.passphrase) and not dlg.form.isRowVisible(dlg.arch)
    assert "encrypted" in dlg.kind.text() and not open_btn.isEnabled()
    assert dlg.passphrase.echoMode() == dlg.passphrase.EchoMode.Password
    qtbot.keyClicks(dlg.passphrase, "s3cret")
    assert open_btn.isEnabled()
    with qtbot.waitSignal(w.s.model_changed, timeout=60_000) as m:
        qtbot.mouseClick(open_btn, Qt.MouseButton.LeftButton)
    assert m.args[0].request.spec == str(enc)
    w.s.settings.flush()
    assert "s3cret" not in json.dumps(w.s.settings.get_dict("model"))


def test_a_remembered_encrypted_model_asks_for_its_passphrase_after_a_restart(qtbot, make_window, tmp_path):
    # the passphrase is never remembered: at the next start the window says so and offers the dialog
    pytest.importorskip("pyrage")
    from advgui.core import crypto
    from advgui.core.models import resource_path
    from advgui.gui.model_dialog import ModelDialog
    from advgui.session import SettingsStore
    enc = tmp_path / "robust.safetensors.enc"
    crypto.encrypt_file(resource_path("demo_digits_robust.safetensors"), enc, "s3cret")
    st = SettingsStore()
    st.set("model", {"spec": str(enc)})
    st.flush()
    w = make_window(SettingsStore())
    qtbot.waitUntil(lambda: w.banner.isVisible() and "is encrypted" in w.banner.text, timeout=30_000)
    assert w.s.model.summary["spec"] == "demo"                 # the demo stands in meanwhile
    w.banner.click("Enter the passphrase…")
    dlg = w.model_panel.findChildren(ModelDialog)[-1]
    assert dlg.isVisible() and dlg.file.text() == str(enc) and dlg.form.isRowVisible(dlg.passphrase)
    dlg.reject()
