"""Every module imports on a fresh install, the layers keep their import rules, and every third-party import
is declared in pyproject.toml (a newcomer's install once failed on an undeclared ``superqt``)."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest

import advgui

ROOT = Path(__file__).resolve().parents[1]
PKG = Path(advgui.__file__).resolve().parent
QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "superqt", "qtpy", "shiboken6")


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(advgui.__path__, "advgui."))


@pytest.mark.parametrize("name", all_modules())
def test_every_module_imports(name):
    """Optional feature families import their extra lazily, so every module imports on the core install."""
    importlib.import_module(name)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    return _norm(re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0])


def test_every_third_party_import_is_declared():
    meta = _pyproject()["project"]
    reqs = list(meta["dependencies"]) + [r for extra in meta.get("optional-dependencies", {}).values() for r in extra]
    declared = {_req_name(r) for r in reqs}
    # what a declared distribution itself requires is installed with it (shiboken6 under PySide6)
    todo = list(declared)
    while todo:
        try:
            sub = requires(todo.pop()) or []
        except PackageNotFoundError:
            continue
        for r in sub:
            if "extra ==" not in r and _req_name(r) not in declared:
                declared.add(_req_name(r))
                todo.append(_req_name(r))
    dists = packages_distributions()
    undeclared = {}
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top in sys.stdlib_module_names or top == "advgui":
                    continue
                if not any(_norm(d) in declared for d in dists.get(top, [top])):
                    undeclared.setdefault(top, f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not undeclared, f"imported but declared in no dependency or extra of pyproject.toml: {undeclared}"


def test_every_package_is_listed_for_wheels():
    """An editable install finds sub-packages anyway; a wheel (pip install ., PyInstaller) only ships the
    listed ones."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {"advgui" + "".join("." + p for p in d.relative_to(PKG).parts)
               for d in [PKG, *PKG.rglob("*")] if d.is_dir() and (d / "__init__.py").exists()}
    assert on_disk - listed == set(), "add these packages to [tool.setuptools] packages"


LAYERS_WITHOUT_QT = [p for p in ("advgui.core", "advgui.session", "advgui.commands")
                     if (PKG / p.split(".")[1]).is_dir()]


@pytest.mark.parametrize("package", LAYERS_WITHOUT_QT)
def test_layer_imports_without_qt(package):
    """The engine, the application session and the CLI work where Qt is not installed at all."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {QT_MODULES!r}:\n"
        "            raise ImportError('Qt blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pkgutil, importlib\n"
        f"pkg = importlib.import_module({package!r})\n"
        f"mods = [m.name for m in pkgutil.walk_packages(pkg.__path__, {package + '.'!r})]\n"
        "for m in mods: importlib.import_module(m)\n"
        "import advgui.cli\n"
        "print(len(mods))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 1
