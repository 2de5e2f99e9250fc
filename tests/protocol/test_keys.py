"""Unit key files: format, permissions, no overwrite (protocol/keys.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.keys import TEST_KEY, key_path, parse_key, read_key, write_new_key


@pytest.fixture
def no_umask() -> Iterator[None]:
    # with umask 0 the modes on disk are exactly the ones the code asks for
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_new_key_file_is_0600_in_a_0700_directory(tmp_path: Path, no_umask: None) -> None:
    keydir = tmp_path / "etc" / "keys"
    path = write_new_key(keydir, "gate-1")
    assert path == keydir / "gate-1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keydir.stat().st_mode) == 0o700
    key = read_key(keydir, "gate-1")
    assert len(key) == 32
    assert path.read_text() == key.hex() + "\n"


def test_two_new_keys_differ_and_none_is_overwritten(tmp_path: Path) -> None:
    a = read_key(write_new_key(tmp_path, "a").parent, "a")
    b = read_key(write_new_key(tmp_path, "b").parent, "b")
    assert a != b and TEST_KEY not in (a, b)
    with pytest.raises(FileExistsError):
        write_new_key(tmp_path, "a")
    assert read_key(tmp_path, "a") == a


def test_key_path_is_the_unit_id_with_key_suffix(tmp_path: Path) -> None:
    assert key_path(tmp_path, "0101") == tmp_path / "0101.key"
    assert key_path(str(tmp_path), "x") == tmp_path / "x.key"


def test_parse_key_accepts_64_hex_digits_with_whitespace() -> None:
    assert parse_key("  " + TEST_KEY.hex().upper() + "\n") == TEST_KEY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zz" * 32, "k.key: not hex"),
        ("00" * 31, "k.key: 31 bytes, need 32"),
        ("00" * 33, "k.key: 33 bytes, need 32"),
        ("", "k.key: 0 bytes, need 32"),
    ],
)
def test_parse_key_refuses_what_is_not_a_key(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_key(text, "k.key")
    assert str(e.value) == message  # names the file: the operator has to find it


def test_read_key_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "u.key").write_text("abc")
    with pytest.raises(ValueError, match=str(tmp_path / "u.key")):
        read_key(tmp_path, "u")
    with pytest.raises(FileNotFoundError):
        read_key(tmp_path, "missing")


def test_the_golden_vectors_key() -> None:
    assert TEST_KEY == bytes(range(32))
