"""Users by name for the SIP hot path, and the two questions the route asks of them.

Compiled with the SIP core (setup.py): every REGISTER's digest check looks its user's HA1 up
and asks whether the user is "TLS only", and every call looks the callee (and the caller) up.
As interpreted functions called from compiled code these were six calls of 1,000 to 3,000
instructions each per REGISTER; compiled, they are C calls and dict look-ups.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from core.account import User


class UserDirectory:
    """Users by name, in memory, for the SIP hot path (which never awaits the database).

    The directory is rebuilt wholesale from the store (`replace_all`) at start and whenever
    another process changed the database; single-user edits from the console use `put` and
    `remove`. Readers get plain dict look-ups.
    """

    def __init__(self, users: Iterable[User] = ()) -> None:
        self._users_by_name: dict[str, User] = {user.username: user for user in users}

    def get(self, username: str) -> User | None:
        return self._users_by_name.get(username)

    def replace_all(self, users: Iterable[User]) -> None:
        # Build first, then swap: a reader never sees a half-filled directory.
        self._users_by_name = {user.username: user for user in users}

    def put(self, user: User) -> None:
        self._users_by_name[user.username] = user

    def remove(self, username: str) -> None:
        self._users_by_name.pop(username, None)

    def __len__(self) -> int:
        return len(self._users_by_name)

    def __contains__(self, username: object) -> bool:
        return username in self._users_by_name

    def __iter__(self) -> Iterator[User]:
        return iter(list(self._users_by_name.values()))


class Credentials:
    """What digest authentication and the "TLS only" rule read of a user, for one realm.

    The assembly (core/assembly.py) hands `ha1` to the authenticator and `requires_tls` to
    the route. Both read the directory at each call, so a `replace_all` is seen at once. The
    realm is fixed for the life of the core, like the authenticator's own: it is the SIP
    domain, which a reload does not change (pbxtui/service.py: it needs a restart).
    """

    def __init__(self, users: UserDirectory, realm: str) -> None:
        self.users = users
        self.realm = realm

    def ha1(self, username: str) -> tuple[str, str] | None:
        """(HA1 MD5, HA1 SHA-256) of an enabled user of this realm, else None: a disabled
        user, or one whose hashes were made for another realm, cannot authenticate."""
        user = self.users.get(username)
        if user is None or not user.enabled or user.realm != self.realm:
            return None
        return user.ha1_md5, user.ha1_sha256

    def requires_tls(self, username: str) -> bool:
        """Whether the user is "TLS only" (an unknown user is not)."""
        user = self.users.get(username)
        return user is not None and user.tls_only
