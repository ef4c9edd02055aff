"""Which core modules run as C and which from source.

setup.py compiles the per-message modules with mypyc when the package is installed. A compiled
module shadows its source (Python's import system tries extension modules first), so a source
file edited after the build would silently not run: `stale_modules` finds such files, and the
test suite refuses to start while there are any.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

CORE = Path(__file__).resolve().parent


def _extension_of(source: Path) -> Path | None:
    for suffix in EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def _compiled_pairs() -> list[tuple[Path, Path]]:
    """(source, its compiled extension) for every compiled module under core/."""
    pairs = []
    for source in sorted(CORE.rglob("*.py")):
        extension = _extension_of(source)
        if extension is not None:
            pairs.append((source, extension))
    return pairs


def compiled_modules() -> list[Path]:
    """Sources under core/ with a compiled extension beside them."""
    return [source for source, _extension in _compiled_pairs()]


def stale_modules() -> list[Path]:
    """Sources changed after the last build (their old compiled code still runs).

    Measured against the newest extension file: mypyc puts the code of every module in one
    shared library beside the package (`<hash>__mypyc...so`) and leaves each module's own
    extension a small shim, which a rebuild does not touch when only the code changed.
    """
    pairs = _compiled_pairs()
    if not pairs:
        return []
    extensions = [path for path in CORE.parent.glob("*__mypyc*") if path.is_file()]
    extensions += [extension for _source, extension in pairs]
    built_at = max(path.stat().st_mtime for path in extensions)
    return [source for source, _extension in pairs if source.stat().st_mtime > built_at]


def describe() -> str:
    """One phrase for the start-up log: how the SIP core runs."""
    count = len(compiled_modules())
    if count:
        return f"{count} core modules compiled (mypyc)"
    return "pure Python (the compiled core, about twice as fast, needs gcc and python3-dev)"
