"""Issue 8, small ones: a mistyped option is an error that never reaches Qt; non-finite numbers and huge seeds
are one-line errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from advgui.cli import main

NO_QT = textwrap.dedent("""
    import sys
    sys.modules["PySide6"] = None        # importing Qt now fails loudly: the test sees it
    from advgui.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("argv,hint", [
    (["--verison"], "did you mean --version"),
    (["--model", "demo", "attack", "--images", "demo"], "options of a command come after its name"),
    (["gui", "--bogus"], "--bogus"),
    (["--debug", "--verison"], "--verison"),
])
def test_unknown_options_are_errors_and_never_open_the_window(argv, hint):
    r = subprocess.run([sys.executable, "-c", NO_QT, *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "unrecognized arguments" in r.stderr and hint in r.stderr
    assert "PySide6" not in r.stderr and "Traceback" not in r.stderr


def test_the_window_still_opens_for_its_own_options(monkeypatch):
    import types
    calls = []
    fake = types.ModuleType("advgui.gui.app")
    fake.main = lambda argv: calls.append(list(argv)) or 0
    monkeypatch.setitem(sys.modules, "advgui.gui.app", fake)
    assert main([]) == 0 and main(["gui"]) == 0 and main(["--reset-settings"]) == 0
    assert main(["gui", "--reset-settings"]) == 0
    assert calls == [[], [], ["--reset-settings"], ["--reset-settings"]]


@pytest.mark.parametrize("args,message", [
    (["attack", "--images", "demo", "--attack", "mifgsm", "--decay", "nan"], "'nan' is not a finite number"),
    (["attack", "--images", "demo", "--attack", "cw", "--lr", "inf"], "'inf' is not a finite number"),
    (["attack", "--images", "demo", "--attack", "deepfool", "--overshoot=-inf"], "not a finite number"),
    (["attack", "--images", "demo", "--eps", "nan"], "not a finite number"),
    (["attack", "--images", "demo", "--seed", "9" * 71], "out of range"),
    (["attack", "--images", "demo", "--seed", "-1"], "out of range"),
    (["eval", "--model", "demo", "--images", "demo", "--seed", "1" * 71], "out of range"),
    (["train", "--model", "demo", "--data", "demo-digits", "--out", "x.safetensors", "--lr", "nan"],
     "not a finite number"),
    (["train", "--model", "demo", "--data", "demo-digits", "--out", "x.safetensors", "--seed", "7" * 71],
     "out of range"),
])
def test_non_finite_numbers_and_huge_seeds_are_one_line_errors(args, message, capsys):
    try:
        rc = main(args)                  # errors found after parsing return 2
    except SystemExit as e:              # argparse's own: exit 2
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if "error" in ln]) == 1
