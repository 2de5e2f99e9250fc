"""Operators: argon2 password hashes, roles, login throttling, expiring sessions, CSRF.

Roles: ``viewer`` reads; ``operator`` also takes, works and acknowledges alarms;
``supervisor`` also manages accounts and is told about re-alerts. A session is a random
cookie (only its SHA-256 is stored) that ends after :data:`IDLE_S` without use or
:data:`MAX_AGE_S` after login. Each session has its own CSRF token, which every POST
must carry (form field ``csrf`` or header ``X-CSRF-Token``). After
:data:`FREE_FAILURES` failed logins of a user or from an address within
:data:`FAILURE_WINDOW_S`, further attempts are refused for a delay that doubles with
each failure (up to :data:`MAX_LOCK_S`), whatever the password.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.core.errors import LoginRefused
from gateway.dutyroom.web.db import Account, DutyDb

ROLES = ("viewer", "operator", "supervisor")
IDLE_S = 30 * 60.0
MAX_AGE_S = 12 * 3600.0
FREE_FAILURES = 5
FAILURE_WINDOW_S = 15 * 60.0
MAX_LOCK_S = 15 * 60.0


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist: the answer takes as long.

    Made once per process when the first :class:`Auth` is (not at import: every
    ``campusguard`` command that imports the web duty room would pay ~0.3 s of argon2),
    so even the first unknown user's answer takes no longer than a known one's.
    """
    return PasswordHasher().hash("not a password anyone has")


def may(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action`` (``read``, ``act`` or ``manage``)."""
    rank = ROLES.index(role) if role in ROLES else -1
    need = {"read": 0, "act": 1, "manage": 2}[action]
    return rank >= need


def token_hash(token: str) -> str:
    """What the database keeps of a session cookie."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Who:
    """The operator behind a request."""

    name: str
    display: str
    role: str
    csrf: str
    token_hash: str


class Auth:
    """Accounts, logins and sessions over :class:`DutyDb`, on an injectable clock."""

    def __init__(self, db: DutyDb, now: Callable[[], float]) -> None:
        """``now`` is the wall clock (seconds since the epoch)."""
        self.db = db
        self.now = now
        self.hasher = PasswordHasher()
        _dummy_hash()

    def add_account(self, name: str, display: str, role: str, password: str) -> None:
        """Create or replace an account (ValueError on a bad name, role or password)."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
        if not name or len(name) > 64 or not name.replace("-", "").replace(".", "").isalnum():
            raise ValueError(f"account name {name!r}: letters, digits, '-' and '.', at most 64")
        if len(password) < 10:
            raise ValueError("a password has at least 10 characters")
        display = display.strip()[:100] or name
        self.db.put_account(name, display, role, self.hasher.hash(password), self.now())

    def _locked_for(self, key: str, now: float) -> float:
        fails = self.db.failures_since(key, now - FAILURE_WINDOW_S)
        if len(fails) < FREE_FAILURES:
            return 0.0
        delay = min(MAX_LOCK_S, 2.0 ** (len(fails) - FREE_FAILURES + 1))
        return max(0.0, fails[-1] + delay - now)

    def login(self, name: str, password: str, addr: str) -> tuple[str, Who]:
        """A new session's cookie and who it is; :class:`LoginRefused` otherwise."""
        now = self.now()
        keys = (f"user:{name[:64]}", f"addr:{addr}")
        wait = max(self._locked_for(k, now) for k in keys)
        if wait > 0:
            raise LoginRefused("throttled", wait)
        account = self.db.account(name)
        ok = False
        try:
            ok = self.hasher.verify(account.hash if account else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or account is None or account.disabled:
            for k in keys:
                self.db.failure(k, now, now - FAILURE_WINDOW_S - MAX_LOCK_S)
            raise LoginRefused("bad_credentials")
        if self.hasher.check_needs_rehash(account.hash):
            self.db.set_hash(name, self.hasher.hash(password))
        self.db.clear_failures(keys[0])
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        self.db.add_session(token_hash(token), name, csrf, now)
        return token, Who(name, account.display, account.role, csrf, token_hash(token))

    def session(self, token: str | None) -> Who | None:
        """Who holds the cookie ``token``, if its session is alive (and then it is used)."""
        if not token or len(token) > 200:
            return None
        th = token_hash(token)
        s = self.db.session(th)
        if s is None:
            return None
        now = self.now()
        account = self.db.account(s.name)
        if (
            account is None
            or account.disabled
            or now - s.seen_at > IDLE_S
            or now - s.created_at > MAX_AGE_S
        ):
            self.db.drop_session(th)
            return None
        if now - s.seen_at > 1.0:
            self.db.touch_session(th, now)
        return Who(account.name, account.display, account.role, s.csrf, th)

    def logout(self, who: Who) -> None:
        """End the session."""
        self.db.drop_session(who.token_hash)

    @staticmethod
    def csrf_ok(who: Who, sent: str | None) -> bool:
        """Whether a POST carries its session's CSRF token."""
        return bool(sent) and hmac.compare_digest(who.csrf, sent or "")


def display_of(account: Account) -> str:
    """The name an ack carries."""
    return account.display or account.name
