"""Numbered schema migrations; each module has VERSION and `up(cursor)`, run once each in its own transaction."""

import importlib
import pkgutil


def all_migrations():
    """Return the migration modules sorted by VERSION."""
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if info.name.startswith("m")
    ]
    return sorted(modules, key=lambda module: module.VERSION)
