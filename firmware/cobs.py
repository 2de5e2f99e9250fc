# Consistent Overhead Byte Stuffing (SPEC.md 1.1), into caller-owned buffers.


def encode_into(src, n, dst):
    """COBS-encode src[0:n] into dst and append the 0x00 delimiter.

    Returns the number of bytes written (n + 2 for frames under 254 bytes). dst must hold
    n + n // 254 + 2 bytes. Allocates nothing.
    """
    code_pos = 0
    code = 1
    o = 1
    for i in range(n):
        b = src[i]
        if b == 0:
            dst[code_pos] = code
            code_pos = o
            o += 1
            code = 1
        else:
            dst[o] = b
            o += 1
            code += 1
            if code == 0xFF and i + 1 < n:
                dst[code_pos] = code
                code_pos = o
                o += 1
                code = 1
    dst[code_pos] = code
    dst[o] = 0
    return o + 1


def decode_inplace(buf, n):
    """Decode one COBS frame held in buf[0:n] (delimiter removed) in place.

    Returns the decoded length, or -1 if the frame is broken (a zero byte inside, or a
    code byte pointing past the end). Allocates nothing.
    """
    i = 0
    o = 0
    while i < n:
        code = buf[i]
        if code == 0:
            return -1
        end = i + code
        if end > n:
            return -1
        i += 1
        while i < end:
            buf[o] = buf[i]
            o += 1
            i += 1
        if code != 0xFF and i < n:
            buf[o] = 0
            o += 1
    return o
