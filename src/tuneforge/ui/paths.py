"""Which files the page may read: the project folder and the folders the user named (`--runs`,
`--allow`). Every path a request names is resolved (symlinks and `..` included) and refused
unless it lies under one of them."""

from __future__ import annotations

from pathlib import Path


class PathRefused(Exception):
    pass


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or Path(value).exists()


def resolve_inside(value: str | Path, roots: list[Path], base: Path) -> Path:
    """``value`` (relative to ``base``) resolved; PathRefused when it is outside every root."""
    path = (base / Path(value).expanduser()).resolve()
    if not any(path == root or root in path.parents for root in roots):
        raise PathRefused(f"{value} is outside the folders this page may read ({', '.join(map(str, roots))})")
    return path


def outside_roots(value: str, roots: list[Path], base: Path) -> bool:
    """True for a local path outside the roots; hub ids and embedded names are not paths."""
    if not _looks_like_path(value):
        return False
    try:
        resolve_inside(value, roots, base)
    except PathRefused:
        return True
    return False


def list_files(folder: str, roots: list[Path], base: Path, *, limit: int = 500) -> dict:
    """The folder's entries for the file picker (data files and model folders)."""
    path = resolve_inside(folder or ".", roots, base)
    entries = []
    for child in sorted(path.iterdir(), key=lambda p: (not p.is_dir(), p.name))[:limit]:
        if child.name.startswith("."):
            continue
        rel = child.relative_to(base) if base in child.parents else child
        entries.append({"name": child.name, "path": str(rel), "dir": child.is_dir()})
    return {"folder": str(path), "entries": entries}
