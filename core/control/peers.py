"""Where the control socket lives and who may use it.

The socket is a file next to the database (`pbxtui.db` → `pbxtui.db.ctl`), or in
`$RUNTIME_DIRECTORY` when systemd made one for the service (RuntimeDirectory=), so every
process that opens the same database finds the same service. It is never a network socket.

Who may connect is decided by the kernel's word, not by anything the peer says: SO_PEERCRED
gives the uid and gid of the process at the other end (Linux unix(7)). The service's own
user and root always may; members of one configured group may too, and then the socket is
made group-accessible (0660) instead of owner-only (0600).
"""

from __future__ import annotations

import grp
import hashlib
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

SOCKET_SUFFIX = ".ctl"
# A Unix socket path must fit in sun_path: 108 bytes on Linux, including the NUL.
MAX_SOCKET_PATH = 107
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The uids and gid allowed on the socket: `owner_uid` and root always, `group_gid` if set."""

    owner_uid: int
    group_gid: int | None = None

    @classmethod
    def for_group(cls, group: str | None) -> AccessPolicy:
        """This process's uid, plus the named group (ValueError if the system has no such
        group: a typo must not silently lock every console out)."""
        gid = None
        if group:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ValueError(f"control socket group {group!r} does not exist") from None
        return cls(os.geteuid(), gid)

    def allows(self, peer: PeerCredentials) -> bool:
        if peer.uid in (0, self.owner_uid):
            return True
        if self.group_gid is None:
            return False
        if peer.gid == self.group_gid:
            return True
        # A supplementary member: the group's member list (a peer's supplementary groups
        # are not in SO_PEERCRED).
        try:
            from pwd import getpwuid

            name = getpwuid(peer.uid).pw_name
            return name in grp.getgrgid(self.group_gid).gr_mem
        except KeyError:
            return False

    @property
    def socket_mode(self) -> int:
        return 0o660 if self.group_gid is not None else 0o600


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The kernel's record of who is at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


def socket_path(db_path: Path, runtime_directory: str | None = None) -> Path:
    """The control socket of the service that runs on `db_path`.

    Under systemd the runtime directory is used, named after the database so two services on
    two databases never share a socket; a path too long for sun_path is shortened to a hash.
    """
    db_path = db_path.expanduser().resolve()
    if runtime_directory is None:
        runtime_directory = os.environ.get("RUNTIME_DIRECTORY") or ""
    if runtime_directory:
        # RuntimeDirectory= may list several, separated by colons; the first is ours.
        folder = Path(runtime_directory.split(":")[0])
        digest = hashlib.sha256(str(db_path).encode()).hexdigest()[:12]
        path = folder / f"{db_path.stem}-{digest}{SOCKET_SUFFIX}"
    else:
        path = db_path.with_name(db_path.name + SOCKET_SUFFIX)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        digest = hashlib.sha256(str(db_path).encode()).hexdigest()[:16]
        folder = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
        path = folder / f"pbxtui-{digest}{SOCKET_SUFFIX}"
    return path


SYSTEMD_RUNTIME_DIRECTORY = "/run/pbxtui"  # RuntimeDirectory=pbxtui in the unit


def candidate_paths(db_path: Path) -> list[Path]:
    """Where a client looks for the service of `db_path`: under systemd's runtime directory
    (the unit's, or this process's own when it runs under systemd too), then next to it."""
    paths = []
    for runtime in (os.environ.get("RUNTIME_DIRECTORY"), SYSTEMD_RUNTIME_DIRECTORY, ""):
        path = socket_path(db_path, runtime)
        if path not in paths:
            paths.append(path)
    return paths
