"""Who may act on a training run or a saved model on a shared server.

A server with visitors (a --share link, a Space, a school network) serves a class: each person
may cancel, save, discard, resume, rename or delete only what they started; an admin login may
act on everything, and so may the server's own command line. On a server only its owner can
reach (127.0.0.1), every visitor is that owner.

Runs and models keep their owner as a hash of the person's key (their login, or the browser's
own key), so a downloaded model or a run history reveals nothing that would let someone act as
its owner.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from core import atomic

OWNERS_FILE = ".owners.json"  # in the models folder: saved model -> owner id


@dataclass(frozen=True)
class Person:
    """Who asks. `key` "" is the server's own command line (or a test of core): unrestricted."""

    key: str = ""
    admin: bool = False

    @property
    def id(self) -> str:
        """What runs and models record of their owner ("" for the command line)."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:16] if self.key else ""

    @property
    def unrestricted(self) -> bool:
        return self.admin or not self.key

    def may_act_on(self, owner: str | None) -> bool:
        return self.unrestricted or (bool(owner) and owner == self.id)


COMMAND_LINE = Person()


def refuse_unless_owner(person: Person, owner: str | None, thing: str, action: str) -> None:
    """Raise WorkbenchError unless `person` may act on `thing` (owned by `owner`), e.g. "The run of
    'x' is someone else's: only the person it belongs to, or the server's admin, can cancel it." """
    from core.errors import WorkbenchError

    if not person.may_act_on(owner):
        raise WorkbenchError(f"{thing} is someone else's: only the person it belongs to, or the server's admin, "
                             f"can {action} it.")


class ModelOwners:
    """Which person saved each model of the models folder (OWNERS_FILE). Models not in it (copied
    in by hand, saved before owners were kept) belong to the server's admin."""

    _lock = threading.Lock()  # one file per folder, written by request threads and the job's thread

    def __init__(self, models_dir: str | Path) -> None:
        self.path = Path(models_dir) / OWNERS_FILE

    def owner_of(self, name: str) -> str | None:
        return self._read().get(name)

    def claim(self, name: str, owner: str) -> None:
        if owner:
            self._change(lambda owners: owners.__setitem__(name, owner))

    def renamed(self, old: str, new: str) -> None:
        self._change(lambda owners: owners.__setitem__(new, owners.pop(old)) if old in owners else None)

    def forget(self, name: str) -> None:
        self._change(lambda owners: owners.pop(name, None))

    def _read(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _change(self, change) -> None:
        with self._lock:
            owners = self._read()
            change(owners)
            atomic.write_text(self.path, json.dumps(owners, indent=1, sort_keys=True))


class Visitors:
    """Which browser each page session belongs to. A page sends its browser's own key (kept in
    the browser's storage, so it outlives a reload or a closed tab) when it loads; requests of
    that session then act as that browser. API clients are their session."""

    MAX_SESSIONS = 10_000  # the oldest sessions are forgotten beyond this

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember(self, session: str, browser_key: str) -> None:
        with self._lock:
            self._keys.pop(session, None)
            self._keys[session] = browser_key
            while len(self._keys) > self.MAX_SESSIONS:
                self._keys.pop(next(iter(self._keys)))

    def person(self, session: str | None, login: str | None, shared: bool, admins: frozenset[str],
               by_login: bool, hf_login: str | None = None, hf_admins: frozenset[str] = frozenset()) -> Person:
        """Who a request comes from. On a server nobody else reaches (`shared` False) everyone is
        its owner; else an admin login, a personal login (`by_login`: the server has several),
        the Hugging Face login (on a Space; `hf_admins` act on everything), the browser, or the
        API client's session."""
        with self._lock:
            browser = self._keys.get(session or "")
        if login and (login in admins or by_login):
            key = f"login:{login}"
        elif hf_login:  # the same person on every browser and device they sign in from
            key = f"hf:{hf_login}"
        elif browser:
            key = f"browser:{browser}"
        elif session:
            key = f"session:{session}"
        else:  # a bare REST call: one anonymous person, never the command line's rights
            key = "anonymous"
        admin = (bool(login) and login in admins) or (bool(hf_login) and hf_login in hf_admins)
        return Person(key, admin=not shared or admin)


def browser_secret(models_dir: str | Path) -> str:
    """The key that encrypts what pages keep in the browser's storage: kept in the models folder,
    so that a restarted server still reads its visitors' keys."""
    import secrets

    path = Path(models_dir) / ".browser-secret"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        secret = secrets.token_urlsafe(24)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secret, encoding="utf-8")
        except OSError:
            pass  # a read-only folder: the keys last as long as this server
        return secret
