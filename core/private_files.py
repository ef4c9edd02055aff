"""Files that hold secrets, written owner-only and never through a symlink.

The database holds HA1 hashes and carrier passwords; a capture holds Authorization headers
(digest answers an attacker can try passwords against offline); a CDR export holds who
called whom. Each is created mode 0600, whatever the umask, and opened with O_NOFOLLOW: in
a directory another user can write to, a symlink planted at the name would otherwise make
pbxtui write the secret, or truncate a file, wherever the link points.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Literal, overload

PRIVATE_MODE = 0o600


@overload
def open_private(path: Path, mode: Literal["w", "x"]) -> IO[str]: ...
@overload
def open_private(path: Path, mode: Literal["wb", "xb"]) -> IO[bytes]: ...
def open_private(path: Path, mode: str) -> IO[str] | IO[bytes]:
    """Open `path` for writing, owner-only: "w"/"wb" replace a file, "x"/"xb" refuse an
    existing one (FileExistsError). OSError (ELOOP) for a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_EXCL if mode.startswith("x") else os.O_TRUNC
    fd = os.open(path, flags, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # an existing file keeps its mode otherwise
        if mode.endswith("b"):
            return os.fdopen(fd, "wb")
        return os.fdopen(fd, "w", encoding="utf-8", newline="")
    except BaseException:
        os.close(fd)
        raise


def exposure(path: Path) -> str | None:
    """Why `path` (and the directory holding it) is readable by others, or None."""
    problems = []
    for checked, what in ((path, "file"), (path.parent, "directory")):
        try:
            mode = checked.stat().st_mode
        except OSError:
            continue
        if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
            problems.append(f"the {what} {checked} is mode {stat.S_IMODE(mode):04o}")
    if not problems:
        return None
    return (
        "; ".join(problems)
        + ": other users on this host can read password hashes and carrier credentials "
        + f"(chmod 600 {path}; chmod 700 {path.parent})"
    )
