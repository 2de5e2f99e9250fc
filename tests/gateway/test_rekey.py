"""A unit still carrying its old key after ``keygen --force``: a forgery event, with the hint
that a re-keyed unit must be deployed again."""

from __future__ import annotations

from gateway.cli.main import main as cli
from protocol import Alarm, AlarmKind
from tests.gateway.conftest import Police, Site, running_gateway
from tests.support.mosquitto import Mosquitto
from tests.support.timing import until


async def test_mac_failure_after_keygen_force_hints_at_deploying_again(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=4)  # deployed with the key it has now
    args = ["shop-a", "--config", str(site.config_path), "--keydir", str(site.keydir)]
    assert cli(["keygen", *args, "--force"]) == 0  # re-keyed on the Pi, not deployed yet
    stranger = site.unit("shop-b", epoch=4)
    stranger.addr = 999  # not in the register
    async with running_gateway(site, broker) as gw:
        site.port.write(unit.wire(unit.make(Alarm(AlarmKind.PANIC, 1, 1))))
        site.port.write(stranger.wire(stranger.make(Alarm(AlarmKind.PANIC, 1, 1))))
        await until(lambda: sum(gw.receiver.rejects().values()) >= 2)
        await police.wait_for(lambda: len(police.events("forgery")) == 2, timeout=5)
    by_unit = {e.get("unit"): e for e in police.events("forgery")}
    detail = by_unit["shop-a"]["detail"]
    assert detail["forged"] == 1  # still a forgery event: it may be one
    assert detail["hint"] == (
        "if this unit was re-keyed, deploy it again (campusguard deploy shop-a)"
    )
    assert "hint" not in by_unit[None]["detail"]  # nothing to deploy for an unknown address
    assert not police.alarms()
