from protocol.crc import crc16


def test_check_value_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1


def test_empty_is_init() -> None:
    assert crc16(b"") == 0xFFFF
