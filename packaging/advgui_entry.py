"""Entry point for frozen builds (PyInstaller): the same as the ``advgui`` console script."""
import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from advgui.cli import main
    sys.exit(main())
