# The unit's configuration: unit.json and unit.key, written by `campusguard deploy`
# (or gateway.vboard.prepare_unit_dir for a virtual fleet). Times in boards.yaml units
# (heartbeat_s, ...) with optional *_ms overrides for tests and benches.
import json

CONFIG_FILE = "unit.json"
KEY_FILE = "unit.key"

KINDS = {"panic": 0, "silent": 2, "medical": 3, "fire": 4, "other": 5}


def _hex(text):
    text = text.strip()
    if len(text) != 64:
        raise ValueError("unit.key: need 64 hex digits")
    out = bytearray(32)
    for i in range(32):
        out[i] = int(text[2 * i : 2 * i + 2], 16)
    return bytes(out)


class UnitConfig:
    def __init__(self, d, key):
        self.unit = d.get("unit", "?")
        self.addr = int(d["addr"])
        if not 1 <= self.addr <= 65534:
            raise ValueError("addr out of range")
        self.key = key
        self.role = d.get("role", "shop")
        kind = d.get("kind", "panic")
        if kind not in KINDS:
            raise ValueError("unknown kind " + kind)
        self.kind = KINDS[kind]
        self.pins = d.get("pins", {})
        self.baud = int(d.get("baud", 115200))

        def ms(name, unit_name, factor, default):
            if name in d:
                return int(d[name])
            return int(d.get(unit_name, default)) * factor

        self.heartbeat_ms = ms("heartbeat_ms", "heartbeat_s", 1000, 60)
        self.long_press_ms = int(d.get("long_press_ms", 3000))
        self.cancel_window_ms = ms("cancel_window_ms", "cancel_window_s", 1000, 30)
        self.incident_window_ms = ms("incident_window_ms", "incident_window_s", 1000, 120)
        self.test_interval_ms = ms("test_interval_ms", "test_interval_h", 3600000, 24)
        self.debounce_ms = int(d.get("debounce_ms", 5))
        self.stuck_ms = int(d.get("stuck_ms", 30000))
        self.cancel_presses = int(d.get("cancel_presses", 5))
        self.cancel_gap_ms = int(d.get("cancel_gap_ms", 700))
        self.retry_first_ms = int(d.get("retry_first_ms", 200))
        self.retry_cap_ms = int(d.get("retry_cap_ms", 30000))
        self.wdt_ms = int(d.get("wdt_ms", 8000))
        self.low_battery_mv = int(d.get("low_battery_mv", 3400))
        self.battery_ok_mv = int(d.get("battery_ok_mv", 3550))
        self.battery_poll_ms = int(d.get("battery_poll_ms", 5000))
        self.battery_divider_x1000 = int(d.get("battery_divider_x1000", 2000))
        self.link_lost_ms = int(d.get("link_lost_ms", 3 * self.heartbeat_ms))
        self.tamper_debounce_ms = int(d.get("tamper_debounce_ms", 20))
        self.mains_debounce_ms = int(d.get("mains_debounce_ms", 5000))
        # the first heartbeat goes out at a random moment within boot_spread_ms
        self.boot_spread_ms = int(d.get("boot_spread_ms", 2000))
        # safe mode: after safe_after boots in a row that crashed before healthy_ms
        self.healthy_ms = ms("healthy_ms", "healthy_s", 1000, 60)
        self.safe_after = int(d.get("safe_after", 3))
        # test hook: crash the app this long after boot, unless in safe mode (0: never)
        self.test_crash_ms = int(d.get("test_crash_ms", 0))


def load(root):
    """Read unit.json and unit.key from the unit's root folder; ValueError/OSError if
    either is missing or wrong."""
    root = root if root.endswith("/") else root + "/"
    with open(root + CONFIG_FILE) as f:
        d = json.load(f)
    with open(root + KEY_FILE) as f:
        key = _hex(f.read())
    return UnitConfig(d, key)
