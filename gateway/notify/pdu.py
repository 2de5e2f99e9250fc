"""SMS PDUs (3GPP TS 23.040) for a GSM modem in PDU mode (``AT+CMGF=0``).

Every message is sent in UCS2 (DCS 0x08): Chinese and Latin text alike, 70 characters in
one SMS, 67 per part of a longer one (a 6-byte concatenation header, 8-bit reference).
SMS-SUBMIT asks for a status report (TP-SRR), so the network tells when the phone got
it: the modem hands it over as ``+CDS``, an SMS-STATUS-REPORT decoded here.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.errors import PduError

SINGLE_UCS2 = 70
PART_UCS2 = 67
MAX_PARTS = 8  # a ladder message is short: past 8 parts it is cut


@dataclass(frozen=True, slots=True)
class Submit:
    """One SMS-SUBMIT: ``hex`` for after AT+CMGS's prompt, ``tpdu_len`` for AT+CMGS=."""

    hex: str
    tpdu_len: int


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What the network said of message reference ``mr``.

    ``status`` is TP-ST: below 0x20 delivered; 0x20..0x3F still trying; 0x40.. given up.
    """

    mr: int
    recipient: str
    status: int

    @property
    def delivered(self) -> bool:
        """The phone has it."""
        return self.status < 0x20

    @property
    def final(self) -> bool:
        """Nothing further will come for this message (delivered or given up)."""
        return self.status < 0x20 or self.status >= 0x40


def normalise_number(phone: str) -> str:
    """``+86 138 0000 0100`` -> ``+8613800000100``; ValueError if it is not a number."""
    digits = "".join(c for c in phone if c not in " -().")
    body = digits[1:] if digits.startswith("+") else digits
    if not body.isdigit() or not 3 <= len(body) <= 20:
        raise ValueError(f"{phone!r} is not a phone number")
    return digits


def _address(number: str) -> bytes:
    intl = number.startswith("+")
    digits = number.lstrip("+")
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes([len(digits), 0x91 if intl else 0x81]) + bytes.fromhex(swapped)


def _semi_octets(data: bytes) -> str:
    out = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in data)
    return out.rstrip("F")


def encode(number: str, text: str, ref: int) -> list[Submit]:
    """The SMS-SUBMIT PDUs that carry ``text`` to ``number`` (``ref``: concatenation ref)."""
    ucs2 = text.encode("utf-16-be")
    units = [ucs2[i : i + 2] for i in range(0, len(ucs2), 2)]
    if len(units) <= SINGLE_UCS2:
        chunks = [b"".join(units)]
    else:
        # never split a surrogate pair across two parts
        chunks, cur = [], b""
        for u in units:
            if len(cur) // 2 >= PART_UCS2 and not (0xDC <= u[0] <= 0xDF):
                chunks.append(cur)
                cur = b""
            cur += u
        chunks.append(cur)
        chunks = chunks[:MAX_PARTS]
    dest = _address(number)
    out: list[Submit] = []
    for i, chunk in enumerate(chunks):
        concat = len(chunks) > 1
        # SMS-SUBMIT, relative validity period, status report requested, UDHI if parts
        first = 0x01 | 0x10 | 0x20 | (0x40 if concat else 0)
        udh = bytes([5, 0x00, 3, ref & 0xFF, len(chunks), i + 1]) if concat else b""
        ud = udh + chunk
        tpdu = bytes([first, 0x00]) + dest + bytes([0x00, 0x08, 0xAA, len(ud)]) + ud
        # a leading 00: the SMSC stored on the SIM
        out.append(Submit("00" + tpdu.hex().upper(), len(tpdu)))
    return out


def decode_status_report(pdu_hex: str) -> StatusReport:
    """An SMS-STATUS-REPORT (``+CDS``, with its SMSC prefix); :class:`PduError` if not."""
    try:
        data = bytes.fromhex(pdu_hex.strip())
        smsc_len = data[0]
        p = 1 + smsc_len
        first = data[p]
        if first & 0x03 != 0x02:
            raise PduError(f"not a status report (TP-MTI {first & 0x03})")
        mr = data[p + 1]
        n_digits = data[p + 2]
        ton = data[p + 3]
        n_bytes = (n_digits + 1) // 2
        digits = _semi_octets(data[p + 4 : p + 4 + n_bytes])
        recipient = ("+" if ton == 0x91 else "") + digits[:n_digits]
        q = p + 4 + n_bytes + 7 + 7  # service centre time stamp, discharge time
        status = data[q]
    except (IndexError, ValueError) as exc:
        if isinstance(exc, PduError):
            raise
        raise PduError(f"bad status report PDU: {exc}") from None
    return StatusReport(mr, recipient, status)


def status_report(mr: int, number: str, status: int) -> str:
    """An SMS-STATUS-REPORT as a modem hands it over (for tests and the fake modem)."""
    stamp = bytes.fromhex("62101291000000")  # 2026-01-21 19:00:00 +00
    tpdu = bytes([0x06, mr & 0xFF]) + _address(number) + stamp + stamp + bytes([status])
    return "00" + tpdu.hex().upper()
