"""Journal upkeep figures: what pruning costs the event loop, and what a backup takes.

python bench/journal.py [--json] [--days N] [--per-day N]

A journal is filled with N days of frames and delivered outbox rows (each alarm-sized,
with a phone number) at --per-day each, then pruned as the gateway does it (batches of
PRUNE_BATCH rows, one transaction each, secure_delete on, the WAL checkpointed between
batches as the gateway's checkpointer does every second): the time of one batch is the
longest pruning can keep the gateway's loop from an alarm (the gateway pauses 50 ms
between batches). Then `campusguard
backup` copies the journal (SQLite's backup API) while it is open in WAL mode.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.journal.store import PRUNE_BATCH, Store  # noqa: E402

DAY = 86400.0
PAYLOAD = json.dumps({"owner": "Ms. Wang", "phone": "+86 138 0000 0001", "pad": "x" * 400})


def fill(store: Store, now: float, days: int, per_day: int) -> None:
    for d in range(days):  # oldest first, as a journal grows
        at = now - (days - d) * DAY
        with store.transaction() as c:
            c.executemany(
                "INSERT INTO frames(at, link, unit, addr, epoch, seq, type, body)"
                " VALUES (?, 'bus-a', 'shop-a', 257, ?, ?, 'HEARTBEAT', '{\"battery_mv\": 3700}')",
                [(at, d, i) for i in range(per_day)],
            )
            c.executemany(
                "INSERT INTO outbox(created_at, topic, payload, sent_at) VALUES (?, 't', ?, ?)",
                [(at, PAYLOAD, at + 0.01) for _ in range(per_day)],
            )
        store.checkpoint()


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--per-day", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cg-bench-journal-") as tmp:
        db = Path(tmp) / "gateway.db"
        store = Store(db)
        now = time.time()
        fill(store, now, args.days, args.per_day)
        size_mb = db.stat().st_size / 1e6
        t0 = time.perf_counter()
        cmd = [str(Path(sys.executable).with_name("campusguard")), "backup", "--db", str(db)]
        res = subprocess.run(
            [*cmd, "--to", str(Path(tmp) / "copy.db")],
            capture_output=True,
            text=True,
            check=True,
        )
        backup_s = time.perf_counter() - t0
        batches: list[float] = []
        gone = 0
        before = now - 90 * DAY
        t1 = time.perf_counter()
        while True:
            b0 = time.perf_counter()
            n = store.prune(before)
            batches.append(time.perf_counter() - b0)
            if not n:
                break
            gone += n
            store.checkpoint()  # the gateway's checkpointer runs every second, in a thread
        prune_s = time.perf_counter() - t1
        store.close()
    out = {
        "journal_mb": round(size_mb, 1),
        "rows_pruned": gone,
        "prune_batch_rows": PRUNE_BATCH,
        "prune_batch_ms": {
            "p50": pct(batches, 0.5),
            "p99": pct(batches, 0.99),
            "max": round(max(batches) * 1000, 2),
        },
        "prune_total_s_without_pauses": round(prune_s, 2),
        "backup_s": round(backup_s, 2),
        "backup_says": res.stdout.strip(),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
