"""The ``advgui`` command. With no subcommand it opens the desktop window.

    advgui                      open the window (on the built-in demo)
    advgui attack ...           attack an image set and export the adversarial set
    advgui eval ...             robustness curves: accuracy against ε for several attacks
    advgui train ...            adversarial training (PGD, fast FGSM) or plain training
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Optional, Sequence

from . import __version__
from .core.errors import UserError

EPILOG = """\
Run `advgui COMMAND --help` for the options of each command. Examples:
  advgui attack --model demo --images demo --attack pgd --eps 8/255 --out out/pgd
  advgui attack --model torchvision:resnet18 --weights resnet18.pth --images photos/ --attack fgsm --eps 2/255
  advgui eval --model demo --images demo --attacks fgsm,pgd --eps 0,0.05,0.1,0.2
"""


class CliError(UserError):
    """A user mistake on the command line: printed as one line, exit code 2."""

    code = "cli"


def add_window_options(p: argparse.ArgumentParser) -> None:
    """The window's own options (the same as ``advgui.gui.app``'s; kept here, without Qt, so that a mistyped
    option is refused before anything imports Qt: a headless machine must not abort in Qt over a typo)."""
    p.add_argument("--autorun", nargs="?", const="run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--reset-settings", action="store_true", help="forget the remembered model, images and layout")


def _window_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="advgui", description="Open the desktop window.", add_help=False)
    add_window_options(p)
    return p


def _check_window_args(argv: Sequence[str]) -> None:
    """Exit 2 with one line naming the unknown options (and what was probably meant) unless every argument
    is one of the window's options."""
    _, rest = _window_parser().parse_known_args(list(argv))
    if not rest:
        return
    import difflib
    known = ["--help", "--version", "--debug", "--autorun", "--reset-settings"]
    hints = []
    for a in rest:
        m = difflib.get_close_matches(a.split("=")[0], known, n=1, cutoff=0.75) if a.startswith("-") else []
        if m:
            hints.append(f"did you mean {m[0]}?")
    commands = [a for a in rest if a in _command_names()]
    if commands:
        hints.append(f"options of a command come after its name: advgui {commands[0]} "
                     + " ".join(a for a in argv if a != commands[0]))
    msg = f"advgui: error: unrecognized arguments: {' '.join(rest)}"
    if hints:
        msg += " (" + "; ".join(hints) + ")"
    print(msg + "\nRun 'advgui --help' for the commands and options.", file=sys.stderr)
    raise SystemExit(2)


def _command_names() -> list[str]:
    from . import commands
    return ["gui", *(m.name for m in pkgutil.iter_modules(commands.__path__) if m.name != "common")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advgui",
        description="Explore adversarial attacks on PyTorch image classifiers. "
                    "Without a command, opens the desktop window.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"advgui {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    gui = sub.add_parser("gui", help="open the desktop window (the default)",
                         description="Open the desktop window.")
    add_window_options(gui)
    gui.set_defaults(func=None)
    from . import commands
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "register"):
            mod.register(sub)
    for name, p in sub.choices.items():
        if name != "gui" and not any("--debug" in a.option_strings for a in p._actions):
            # SUPPRESS: an unset subcommand flag must not overwrite `advgui --debug COMMAND`
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show full tracebacks on errors")
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    return (UserError,)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the window opens for `advgui` alone, `advgui gui [window options]` and `advgui [window options]`;
    # anything else is parsed strictly, so a typo is an error here and never reaches Qt
    window_args: Optional[list[str]] = None
    if not argv:
        window_args = []
    elif argv[0] == "gui" and not any(a in ("-h", "--help") for a in argv[1:]):
        _check_window_args(argv[1:])
        window_args = argv[1:]
    elif argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version", "--debug"):
        _check_window_args(argv)
        window_args = argv
    if window_args is not None:
        # the window: no torch import here, so it paints at once
        from .gui.app import main as gui_main
        return gui_main(window_args)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "gui"):
        from .gui.app import main as gui_main
        rest = argv[argv.index("gui") + 1:] if "gui" in argv else []
        return gui_main(rest)
    debug = getattr(args, "debug", False)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("advgui: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if debug:
            raise
        print(f"advgui {args.command}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            raise
        print(f"advgui {args.command}: error: out of memory; try a smaller --batch-size", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - last resort: one line unless --debug
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "out of memory" in msg.lower():
            print(f"advgui {args.command}: error: out of memory; try a smaller --batch-size", file=sys.stderr)
        else:
            print(f"advgui {args.command}: error: {type(e).__name__}: {msg} (run with --debug for details)",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
