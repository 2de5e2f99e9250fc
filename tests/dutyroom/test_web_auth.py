"""Operators' accounts, throttled logins and expiring sessions, on an injected clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.errors import LoginRefused
from gateway.dutyroom.web.auth import (
    FREE_FAILURES,
    IDLE_S,
    MAX_AGE_S,
    Auth,
    may,
)
from gateway.dutyroom.web.db import DutyDb
from tests.support.dutyroom import Clock


@pytest.fixture
def auth(tmp_path: Path) -> Auth:
    a = Auth(DutyDb(tmp_path / "d.db"), Clock())
    a.add_account("li", "Officer Li", "operator", "correct horse battery")
    return a


def test_passwords_are_argon2_hashes_and_the_database_is_private(
    auth: Auth, tmp_path: Path
) -> None:
    account = auth.db.account("li")
    assert account is not None and account.hash.startswith("$argon2id$")
    assert "correct horse" not in account.hash
    assert (tmp_path / "d.db").stat().st_mode & 0o077 == 0


def test_login_and_session_cookie_is_stored_hashed(auth: Auth) -> None:
    token, who = auth.login("li", "correct horse battery", "10.0.0.1")
    assert who.display == "Officer Li" and who.role == "operator"
    assert auth.db.session(token) is None  # only its hash is kept
    again = auth.session(token)
    assert again is not None and again.csrf == who.csrf
    assert not Auth.csrf_ok(who, None) and not Auth.csrf_ok(who, "x" + who.csrf)
    assert Auth.csrf_ok(who, who.csrf)


def test_wrong_passwords_are_throttled_even_with_the_right_one_then(auth: Auth) -> None:
    clock = auth.now
    assert isinstance(clock, Clock)
    for _ in range(FREE_FAILURES):
        with pytest.raises(LoginRefused, match="bad_credentials"):
            auth.login("li", "guess", "10.0.0.9")
    with pytest.raises(LoginRefused) as refused:
        auth.login("li", "correct horse battery", "10.0.0.9")
    assert refused.value.reason == "throttled" and refused.value.retry_after > 0
    clock.t += refused.value.retry_after + 0.01
    token, _ = auth.login("li", "correct horse battery", "10.0.0.9")
    assert auth.session(token) is not None


def test_unknown_user_fails_like_a_wrong_password(auth: Auth) -> None:
    with pytest.raises(LoginRefused, match="bad_credentials"):
        auth.login("nobody", "correct horse battery", "10.0.0.1")


def test_sessions_expire_when_idle_and_after_their_maximum_age(auth: Auth) -> None:
    clock = auth.now
    assert isinstance(clock, Clock)
    token, _ = auth.login("li", "correct horse battery", "10.0.0.1")
    clock.t += IDLE_S - 1
    assert auth.session(token) is not None  # used: idle time starts again
    clock.t += IDLE_S + 1
    assert auth.session(token) is None
    token, _ = auth.login("li", "correct horse battery", "10.0.0.1")
    for _ in range(int(MAX_AGE_S // (IDLE_S / 2)) + 1):
        clock.t += IDLE_S / 2
        alive = auth.session(token)
    assert alive is None


def test_roles() -> None:
    assert may("viewer", "read") and not may("viewer", "act")
    assert may("operator", "act") and not may("operator", "manage")
    assert may("supervisor", "manage")
    assert not may("intruder", "read")


def test_bad_accounts_are_refused(auth: Auth) -> None:
    with pytest.raises(ValueError, match="role"):
        auth.add_account("x", "X", "admin", "long enough password")
    with pytest.raises(ValueError, match="10 characters"):
        auth.add_account("x", "X", "viewer", "short")
    with pytest.raises(ValueError, match="account name"):
        auth.add_account("x y<", "X", "viewer", "long enough password")
