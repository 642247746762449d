"""Filesystem helpers shared by checkpoints, model conversion and the data cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "TUNEFORGE_CACHE"


def cache_root() -> Path:
    """Where converted models and tokenisation caches live (``$TUNEFORGE_CACHE``)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "tuneforge")).expanduser()


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final`` in one rename.

    A crash or interrupt while writing leaves ``final`` as it was (and no partial
    folder under its name); the temporary folder is removed either way.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
