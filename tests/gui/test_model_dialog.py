"""Bring your own model without the command line: the Open-model dialog recognises the file, asks only for
what is missing, shows what will load, and never downloads or runs code without asking."""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox


@pytest.fixture(scope="module")
def resnet_pth(tmp_path_factory):
    import torchvision
    p = tmp_path_factory.mktemp("m") / "my_resnet.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=7).state_dict(), p)
    return p


def _open_button(dlg):
    return dlg.buttons.button(QDialogButtonBox.StandardButton.Open)


def test_state_dict_asks_for_the_architecture_with_a_guess(qtbot, window, resnet_pth):
    w = window
    dlg = w.model_panel.open_dialog(path=str(resnet_pth))
    assert dlg.form.isRowVisible(dlg.arch) and dlg.arch.currentText() == "resnet18"
    assert not dlg.form.isRowVisible(dlg.trust) and not dlg.form.isRowVisible(dlg.download)
    assert "Will load: torchvision:resnet18 + my_resnet.pth" in dlg.preview.text() and "7 classes" in dlg.preview.text()
    with qtbot.waitSignal(w.s.model_changed, timeout=120_000) as m:
        qtbot.mouseClick(_open_button(dlg), Qt.MouseButton.LeftButton)
    assert m.args[0].summary["classes"] == 7 and m.args[0].request.weights == str(resnet_pth)
    assert "torchvision" in w.model_panel.summary.text()


def test_torchscript_needs_the_trust_box(qtbot, window, tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10]

    p = tmp_path / "scripted.pt"
    torch.jit.script(Net()).save(str(p))
    dlg = window.model_panel.open_dialog(path=str(p))
    assert dlg.form.isRowVisible(dlg.trust) and "runs code" in dlg.trust_note.text()
    assert not _open_button(dlg).isEnabled()            # nothing runs until the box is ticked
    dlg.trust.setChecked(True)
    assert _open_button(dlg).isEnabled() and dlg.request().trust_code
    dlg.reject()


def test_choosing_an_architecture_never_downloads_by_itself(qtbot, window, monkeypatch):
    w = window
    started = []
    monkeypatch.setattr(w.s, "load_model", lambda req: started.append(req))
    combo = w.model_panel.quick
    combo.setCurrentIndex(combo.findData("torchvision:resnet18"))
    combo.activated.emit(combo.currentIndex())
    from advgui.gui.model_dialog import ModelDialog
    dlg = w.model_panel.findChildren(ModelDialog)[-1]
    assert started == [] and dlg.isVisible()
    assert dlg.form.isRowVisible(dlg.download) and not dlg.download.isChecked()
    assert not _open_button(dlg).isEnabled() and "download" in dlg.preview.text()
    dlg.download.setChecked(True)
    qtbot.mouseClick(_open_button(dlg), Qt.MouseButton.LeftButton)
    assert started and started[0].spec == "torchvision:resnet18" and started[0].allow_download


def test_code_refused_on_load_offers_the_dialog_not_a_flag(qtbot, window, tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10]

    p = tmp_path / "scripted.pt"
    torch.jit.script(Net()).save(str(p))
    from advgui.session import ModelRequest
    w = window
    with qtbot.waitSignal(w.s.model_failed, timeout=30_000):
        w.s.load_model(ModelRequest(spec=str(p)))
    assert "--trust" not in w.banner.text and "runs code" in w.banner.text
    w.banner.click("Open it anyway…")
    from advgui.gui.model_dialog import ModelDialog
    dlg = w.model_panel.findChildren(ModelDialog)[-1]
    assert dlg.isVisible() and dlg.file.text() == str(p) and dlg.form.isRowVisible(dlg.trust)
    dlg.reject()
