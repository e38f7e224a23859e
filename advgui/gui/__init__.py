"""The desktop window. This package is the only one in advgui that imports Qt.

It draws and forwards: models, images and attacks come from :mod:`advgui.core`, run in worker threads,
and reach the widgets as plain numpy values. Entry point: :func:`advgui.gui.app.main`.
"""
