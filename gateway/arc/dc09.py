"""SIA DC-09 frames to an alarm receiving centre: immutable values, encode/decode, no I/O.

A frame on the wire (ANSI/SIA DC-09)::

    LF  CRC(4 hex)  0LLL(4 hex)  "TOKEN" SEQ(4) Rrcvr Lpref #ACCT [DATA] _HH:MM:SS,MM-DD-YYYY  CR

CRC is CRC-16/ARC (reflected poly 0xA001, initial 0) and LLL the length, both over the
span from the first ``"`` to the end of the timestamp. An encrypted frame marks its token
with ``*`` and replaces everything after ``[`` with the hex of AES-CBC (zero IV) over
``PAD|DATA]TIMESTAMP``, where PAD (1-16 characters, none of ``|[]``) makes the plaintext a
multiple of 16 bytes. The data of an ADM-CID message is ``#ACCT|QEEE GG ZZZ`` (Contact ID
qualifier, event, group, zone); of a SIA-DCS message ``#ACCT|NriGG/CCZZZ``.

Replies are frames too: ACK (sequence and account of the message), NAK with the
receiver's timestamp (sequence 0000, account ``A0``: our clock is off), DUH (understood
the frame, not the message). pysiaalarm 3.2, the independent receiver our tests run,
sends an encrypted ACK's plaintext without the ``|`` after the pad; :func:`decode`
accepts both.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.core.errors import DC09Error

MAX_FRAME = 1024
"""Longest frame we build or read (ours are under 200 bytes): bounds the reply buffer."""
SEQ_MAX = 9999
"""Sequence numbers run 0001-9999 and wrap to 0001."""
KEY_LENGTHS = (16, 24, 32)
"""AES-128/192/256 key sizes in bytes."""

_IV = bytes(16)  # DC-09 uses a zero IV: the random pad makes equal messages differ
_PAD_ALPHABET = string.ascii_letters + string.digits
_TS_FORMAT = "%H:%M:%S,%m-%d-%Y"
_HEX = frozenset(string.hexdigits)
_BODY = re.compile(
    r'"(?P<star>\*?)(?P<token>[A-Z-]{3,8})"(?P<seq>\d{4})(?P<prefixes>[^\[]*)\[(?P<rest>.*)\Z',
    re.S,
)
_PREFIX = re.compile(r"([RLA#])([0-9A-Fa-f]*)")
_TAIL = re.compile(r"(?P<data>[^\]]*)\](?P<xdata>(?:\[[^\]]*\])*)(?:_(?P<ts>[0-9:,-]+))?\Z", re.S)


class Token(StrEnum):
    """The message and reply tokens the gateway uses."""

    ADM_CID = "ADM-CID"
    SIA_DCS = "SIA-DCS"
    NULL = "NULL"
    ACK = "ACK"
    NAK = "NAK"
    DUH = "DUH"


KeyForm = Literal["text", "hex", "auto"]


def parse_key(text: str, form: KeyForm = "auto", source: str = "key") -> bytes:
    """An AES key from a key file's text: ``text`` (16/24/32 characters) or ``hex``.

    ``auto`` takes 16/24 characters as text and 48/64 hex digits as hex, and refuses 32
    characters of hex digits: they are a 256-bit text key or a 128-bit hex key, and only
    the register can say which (``key_format``). Raises :class:`DC09Error` naming ``source``.
    """
    key = text.strip()
    if form == "auto":
        if len(key) == 32 and all(c in _HEX for c in key):
            raise DC09Error(
                f"{source}: 32 hex digits is a 128-bit hex key or a 256-bit text key: "
                "say which with key_format: hex or key_format: text"
            )
        form = "hex" if len(key) in (48, 64) else "text"
    if form == "hex":
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raise DC09Error(f"{source}: not hex digits") from None
        if len(raw) not in KEY_LENGTHS:
            raise DC09Error(f"{source}: {len(key)} hex digits, need 32, 48 or 64")
        return raw
    if not key.isascii() or not key.isprintable():
        raise DC09Error(f"{source}: a text key is printable ASCII")
    if len(key) not in KEY_LENGTHS:
        raise DC09Error(f"{source}: {len(key)} characters, need 16, 24 or 32")
    return key.encode("ascii")


def crc16(data: bytes) -> int:
    """CRC-16/ARC (reflected polynomial 0xA001, initial value 0) of ``data``."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def format_timestamp(at: float) -> str:
    """The DC-09 timestamp (``HH:MM:SS,MM-DD-YYYY``, UTC) of ``at`` seconds since the epoch."""
    return datetime.fromtimestamp(at, UTC).strftime(_TS_FORMAT)


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch from a DC-09 timestamp; raise :class:`DC09Error`."""
    try:
        return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise DC09Error(f"bad timestamp {text!r}") from None


def _check_hex_id(value: str, what: str, lo: int, hi: int) -> None:
    if not lo <= len(value) <= hi or not all(c in _HEX for c in value):
        raise DC09Error(f"{what} {value!r}: {lo}-{hi} hex digits")


def adm_cid(account: str, qualifier: int, code: int, group: int, zone: int) -> str:
    """The data of an ADM-CID message: ``#ACCT|QEEE GG ZZZ``."""
    if qualifier not in (1, 3, 6):
        raise DC09Error(f"Contact ID qualifier {qualifier}: 1 new, 3 restore, 6 status")
    if not 0 <= code <= 999 or not 0 <= group <= 99 or not 0 <= zone <= 999:
        raise DC09Error(f"Contact ID event {code}, group {group}, zone {zone} out of range")
    return f"#{account}|{qualifier}{code:03d} {group:02d} {zone:03d}"


def sia_dcs(account: str, sia_code: str, group: int, zone: int) -> str:
    """The data of a SIA-DCS (DC-04/DC-03) message: ``#ACCT|NriGG/CCZZZ``."""
    if len(sia_code) != 2 or not sia_code.isalpha() or not sia_code.isupper():
        raise DC09Error(f"SIA event code {sia_code!r}: two capital letters")
    if not 0 <= group <= 99 or not 0 <= zone <= 999:
        raise DC09Error(f"group {group} or zone {zone} out of range")
    return f"#{account}|Nri{group}/{sia_code}{zone:03d}"


@dataclass(frozen=True, slots=True)
class Frame:
    """One DC-09 frame, a message or a reply, as plain text fields.

    ``data`` is what stands between ``[`` and ``]`` (empty for NULL, ACK, NAK);
    ``timestamp`` is seconds since the epoch (None: the frame has none; an encrypted
    frame always has one). ``account`` is None for a NAK's ``A0``.
    """

    token: Token
    seq: int
    account: str | None
    line: str = "0"
    receiver: str | None = "0"
    data: str = ""
    timestamp: float | None = None
    encrypted: bool = False

    def __post_init__(self) -> None:
        """Refuse what cannot be put on the wire."""
        if not 0 <= self.seq <= SEQ_MAX:
            raise DC09Error(f"sequence {self.seq}: 0000-9999")
        if self.account is not None:
            _check_hex_id(self.account, "account", 3, 16)
        _check_hex_id(self.line, "line", 1, 6)
        if self.receiver is not None:
            _check_hex_id(self.receiver, "receiver", 1, 6)
        if "]" in self.data or "[" in self.data:
            raise DC09Error("data must not hold '[' or ']'")

    def encode(self, key: bytes | None = None, pad: str | None = None) -> bytes:
        """The frame's bytes, LF to CR; AES-encrypted with ``key`` when given.

        ``pad`` (tests only) fixes the random pad; it must be of the right length.
        """
        head = f'"{"*" if key else ""}{self.token.value}"{self.seq:04d}'
        if self.receiver is not None:
            head += f"R{self.receiver}"
        head += f"L{self.line}"
        if self.account is not None:
            head += f"#{self.account}"
        else:
            head += "A0"
        ts = "" if self.timestamp is None else "_" + format_timestamp(self.timestamp)
        if key is None:
            body = f"{head}[{self.data}]{ts}"
        else:
            if self.timestamp is None:
                raise DC09Error("an encrypted frame needs a timestamp")
            body = f"{head}[{_encrypt(key, f'{self.data}]{ts}', pad)}"
        raw = body.encode("ascii")
        if len(raw) > 0xFFF or len(raw) + 10 > MAX_FRAME:
            raise DC09Error(f"frame of {len(raw)} bytes is too long")
        return b"\n%04X%04X%s\r" % (crc16(raw), len(raw), raw)


def _encrypt(key: bytes, text: str, pad: str | None) -> str:
    size = len(text) + 1  # the '|' after the pad
    want = 16 - size % 16  # 1..16 pad characters
    if pad is None:
        pad = "".join(secrets.choice(_PAD_ALPHABET) for _ in range(want))
    elif len(pad) != want or any(c in "|[]" for c in pad):
        raise DC09Error(f"pad must be {want} characters without '|', '[' or ']'")
    plain = f"{pad}|{text}".encode("ascii")
    enc = Cipher(algorithms.AES(key), modes.CBC(_IV)).encryptor()
    return (enc.update(plain) + enc.finalize()).hex().upper()


def _decrypt(key: bytes, hextext: str) -> str:
    try:
        raw = bytes.fromhex(hextext)
    except ValueError:
        raise DC09Error("encrypted part is not hex") from None
    if not raw or len(raw) % 16:
        raise DC09Error(f"encrypted part of {len(raw)} bytes is not whole AES blocks")
    dec = Cipher(algorithms.AES(key), modes.CBC(_IV)).decryptor()
    plain = dec.update(raw) + dec.finalize()
    try:
        text = plain.decode("ascii")
    except UnicodeDecodeError:
        raise DC09Error("decrypts to non-ASCII: wrong key?") from None
    if "|" in text:
        pad, text = text.split("|", 1)
    else:  # pysiaalarm: pad straight before "]" (an ACK has no data)
        pad, text = text[: text.find("]")], text[text.find("]") :]
    if "]" not in text or any(c in "[]" for c in pad) or not pad.isprintable():
        raise DC09Error("decrypts to no DC-09 content: wrong key?")
    return text


def decode(frame: bytes, key: bytes | None = None) -> Frame:
    """Parse one frame (LF ... CR; either may be missing) and check its length and CRC.

    An encrypted frame needs ``key``. Raises :class:`DC09Error` on anything else; never
    another exception, whatever the bytes.
    """
    if len(frame) > MAX_FRAME:
        raise DC09Error(f"frame of {len(frame)} bytes is over {MAX_FRAME}")
    try:
        text = frame.decode("ascii")
    except UnicodeDecodeError:
        raise DC09Error("not ASCII") from None
    text = text.strip("\n\r\x00 ")
    if len(text) < 8 or not all(c in _HEX for c in text[:8]):
        raise DC09Error("no CRC and length")
    body = text[8:]
    crc, length = int(text[:4], 16), int(text[4:8], 16)
    if length != len(body):
        raise DC09Error(f"length says {length}, frame has {len(body)}")
    if crc != crc16(body.encode("ascii")):
        raise DC09Error("CRC mismatch")
    m = _BODY.match(body)
    if m is None:
        raise DC09Error("no DC-09 header")
    try:
        token = Token(m["token"])
    except ValueError:
        raise DC09Error(f"unknown token {m['token']!r}") from None
    fields: dict[str, str] = {}
    prefixes = m["prefixes"]
    pos = 0
    for pm in _PREFIX.finditer(prefixes):
        if pm.start() != pos or pm[1] in fields:
            break
        fields[pm[1]] = pm[2]
        pos = pm.end()
    if pos != len(prefixes):
        raise DC09Error(f"bad receiver/line/account prefixes {prefixes!r}")
    rest = m["rest"]
    encrypted = bool(m["star"])
    if encrypted:
        if key is None:
            raise DC09Error("encrypted frame and no key")
        rest = _decrypt(key, rest)
    t = _TAIL.match(rest)
    if t is None:
        raise DC09Error("no ']' closing the data")
    ts = parse_timestamp(t["ts"]) if t["ts"] else None
    account = fields.get("#")
    return Frame(
        token=token,
        seq=int(m["seq"]),
        account=account.upper() if account else None,
        line=(fields.get("L") or "0").upper(),
        receiver=fields["R"].upper() if fields.get("R") else None,
        data=t["data"],
        timestamp=ts,
        encrypted=encrypted,
    )


def next_seq(seq: int) -> int:
    """The sequence number after ``seq``: 0001-9999, wrapping to 0001."""
    return 1 if seq >= SEQ_MAX else seq + 1
