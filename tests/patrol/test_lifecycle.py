"""The gateway journals its own start, stop and broker outages (gateway/service/lifecycle.py), on
a fixed clock and a real journal: a clean stop, a crash (no stop: the last sign of life),
an outage, and a broker never reached after the start."""

from __future__ import annotations

from pathlib import Path

from gateway.core.clock import ManualClock
from gateway.service.lifecycle import BROKER_GRACE_S, Lifecycle
from tests.patrol.helpers import PatrolOutlet, open_journal, register

T0 = 1_790_000_000.0


class Broker:
    up = False

    def __call__(self) -> bool:
        return self.up


def run(db: Path, clock: ManualClock, broker: Broker) -> tuple[Lifecycle, PatrolOutlet]:
    conn = open_journal(db)
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    outlet = PatrolOutlet(conn)
    life = Lifecycle(register(), outlet, conn, clock, connected=broker)
    life.start()
    return life, outlet


def test_clean_stop_crash_and_outages_are_journalled_with_exact_times(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    clock, broker = ManualClock(T0), Broker()
    life, out = run(db, clock, broker)
    first = out.of("gateway_start")[0]
    assert first["unit"] == "gw-test" and first["detail"] == {}  # a new journal: no history
    broker.up = True
    clock.set(T0 + 1)
    life.tick(clock.now())
    broker.up = False
    clock.set(T0 + 100)
    life.tick(clock.now())
    broker.up = True
    clock.set(T0 + 130.5)
    life.tick(clock.now())
    assert [(e["kind"], e["at"]) for e in out.events[1:]] == [
        ("broker_lost", T0 + 100),
        ("broker_back", T0 + 130.5),
    ]
    assert out.of("broker_back")[0]["detail"]["outage_s"] == 30.5
    clock.set(T0 + 3600)
    life.stop()
    assert out.of("gateway_stop")[0]["detail"]["run_s"] == 3600.0
    # started again 20 minutes after a clean stop
    clock.set(T0 + 3600 + 1200)
    life, out = run(db, clock, broker)
    start = out.of("gateway_start")[0]["detail"]
    assert start == {"down_since": T0 + 3600, "down_s": 1200.0, "clean": True}
    # this run dies without a stop; its last sign of life is a status snapshot at +1800
    out.conn.execute(  # type: ignore[union-attr]
        "INSERT INTO meta(key, value) VALUES ('status', ?)", (f'{{"written_at": {T0 + 6600}}}',)
    )
    clock.set(T0 + 9000)
    life, out = run(db, clock, broker)
    assert out.of("gateway_start")[0]["detail"] == {
        "down_since": T0 + 6600,
        "down_s": 2400.0,
        "clean": False,
    }


def test_a_broker_never_reached_is_an_outage_from_the_start(tmp_path: Path) -> None:
    clock, broker = ManualClock(T0), Broker()
    life, out = run(tmp_path / "gw.db", clock, broker)
    clock.set(T0 + BROKER_GRACE_S - 1)
    life.tick(clock.now())
    assert out.of("broker_lost") == []
    clock.set(T0 + BROKER_GRACE_S)
    life.tick(clock.now())
    assert [e["at"] for e in out.of("broker_lost")] == [T0]
    broker.up = True
    clock.set(T0 + 75)
    life.tick(clock.now())
    assert out.of("broker_back")[0]["detail"]["outage_s"] == 75.0
