"""Folders only their owner may read: created 0700 level by level.

`Path.mkdir(parents=True, mode=0o700)` gives the mode to the last level only ("any missing
parents … are created with the default permissions without taking mode into account", pathlib
docs), so every missing level is made here with the mode at its creation: no moment where
another user could list one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


def create_private_dirs(path: Path) -> Path:
    """Create `path` and each missing parent with mode 0700 (narrowed further by the umask); an
    existing level is left as it is."""
    missing = []
    level = path
    while not level.exists():
        missing.append(level)
        level = level.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
    return path
