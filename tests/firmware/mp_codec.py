# Runs ON MicroPython (not CPython): the firmware codec as a batch job for the tests.
#   micropython mp_codec.py FIRMWARE_DIR JOB.json  -> one JSON object on stdout
# job: {"encode": [[key_hex, type, unit, epoch, seq, [fields]]],
#       "decode": [[key_hex, unit, wire_hex]],
#       "cobs": [data_hex]}  -> "cobs": [[encoded_hex, decoded_again_hex]]
import binascii
import json
import sys

sys.path.insert(0, sys.argv[1])
import proto

# proto.Codec.reason indexes (SPEC.md 3); proto.py keeps only the numbers
REASONS = (
    "oversize",
    "corrupt",
    "truncated",
    "version",
    "unknown_type",
    "malformed",
    "other_unit",
    "forged",
    "replayed",
)

with open(sys.argv[2]) as f:
    job = json.load(f)


def unhex(s):
    return binascii.unhexlify(s)


def tohex(b):
    return binascii.hexlify(b).decode()


encoded = []
for key, mtype, unit, epoch, seq, fields in job.get("encode", []):
    enc = proto.Codec(unit, unhex(key))
    if mtype in (0x01, 0x03):  # ALARM, CHECKIN: the firmware passes press_ms in halves
        fields = fields[:-1] + [fields[-1] >> 16, fields[-1] & 0xFFFF]
    n = enc.frame(mtype, epoch, seq, *fields)
    encoded.append(tohex(enc.wire[:n]))

decoded = []
for key, unit, wire in job.get("decode", []):
    dec = proto.Codec(unit, unhex(key))
    buf = bytearray(unhex(wire))
    if buf and buf[-1] == 0:
        buf = buf[:-1]
    n = proto.decode_inplace(buf, len(buf))
    if n < 0:
        decoded.append([-1, "corrupt", []])
        continue
    t = dec.decode(buf, n)
    if t < 0:
        decoded.append([-1, REASONS[dec.reason], []])
    elif t == 0x81:  # ACK
        decoded.append([t, "", [dec.epoch, dec.seq, dec.ref_epoch, dec.ref_seq, dec.state]])
    else:
        decoded.append([t, "", [dec.epoch, dec.seq, dec.pattern, dec.duration_s]])

cobs = []
for data in job.get("cobs", []):
    src = unhex(data)
    n = len(src)
    dst = bytearray(n + n // 254 + 2)  # the size encode_into documents
    m = proto.encode_into(src, n, dst)
    back = bytearray(dst[: m - 1])
    k = proto.decode_inplace(back, len(back))
    cobs.append([tohex(dst[:m]), tohex(back[:k]) if k >= 0 else None])

print(json.dumps({"encoded": encoded, "decoded": decoded, "cobs": cobs}))
