"""Subcommands of the advgui CLI: each module exposes register(subparsers)."""
