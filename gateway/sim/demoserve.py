"""``campusguard demo --serve``: the demo's school kept running, with the web duty room.

A private Mosquitto (locked down), the virtual fleet with its gateway (on the demo's
accelerated clock, so the guard's missed check-ins climb their ladder while you watch),
and ``campusguard dutyroom`` in front of them over HTTPS, with its certificate from a
private CA made for the run. It prints the address, the CA to trust and a login made for
this run only (its password is printed once and lives in the run's temporary folder),
then runs until Ctrl-C. Nobody acknowledges automatically: that is the operator's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import tempfile
from pathlib import Path
from typing import TextIO

from gateway.dutyroom.web.server import DutyRoomServer, Options, server_certificate
from gateway.security.brokerconfig import Accounts
from gateway.security.envelope import Signer
from gateway.security.signkeys import dutyroom_kid, provision_one_room
from gateway.sim.demo import DemoOptions, demo_firmware, demo_plan
from gateway.sim.fleet import DUTYROOM, Fleet
from gateway.sim.localbroker import LocalBroker

DEMO_ACCOUNT = "demo"
PRESS_EVERY_S = 15.0


async def _press_now_and_then(fleet: Fleet, presses: int, out: TextIO) -> None:
    """Press the units in turn (a long hold, a duress, every fifth time)."""
    units = [u for u in fleet.units.values() if not u.id.startswith("guard")]
    for n in range(presses):
        await asyncio.sleep(PRESS_EVERY_S)
        unit = units[n % len(units)]
        if n % 5 == 4:
            print(f"  {unit.id}: held (duress)", file=out, flush=True)
            await unit.hold(unit.spec.long_press_ms / 1000 + 0.5)
        else:
            print(f"  {unit.id}: pressed", file=out, flush=True)
            await unit.press()


async def serve(args: DemoOptions, out: TextIO) -> int:
    """Run the school and the duty room until SIGINT/SIGTERM; the exit status."""
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = Path(args.keep)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cg-serve-")))
        speed = float(args.speed)
        plan = demo_plan(args.units, args.links, guard_post=True)
        accounts = Accounts(
            prefix=args.prefix,
            gateways={plan.gateway_id: [plan.site]},
            dutyrooms={DUTYROOM: [plan.site]},
        )
        broker = stack.enter_context(LocalBroker(workdir / "mqtt", accounts=accounts))
        keydir = workdir / "fleet" / "keys"
        provision_one_room(keydir, plan.gateway_id, DUTYROOM)
        fleet = Fleet(
            workdir / "fleet",
            plan,
            broker_url=broker.settings(f"gateway-{plan.gateway_id}"),
            prefix=args.prefix,
            firmware=demo_firmware(plan, speed),
            clock_speed=speed,
            concurrency=16,
            keydir=keydir,
        )
        host, port = args.listen.rpartition(":")[::2]
        web = workdir / "web"
        cert = server_certificate(web / "ca", web, sorted({host, "localhost", "127.0.0.1"}))
        options = Options(
            brokers=[broker.settings(f"dutyroom-{DUTYROOM}")],
            db=web / "dutyroom.db",
            keydir=keydir,
            signer=Signer.load(keydir, dutyroom_kid(DUTYROOM)),
            tls_cert=cert.cert,
            tls_key=cert.key,
            host=host,
            port=int(port),
            prefix=args.prefix,
            realert_s=60.0 * speed,  # a real minute
            gateway_clock=fleet.clock.now,  # the board on the gateway's accelerated time
        )
        print(
            f"starting {args.units} virtual units on {args.links} links, the gateway (clock"
            f" x{speed:g}) and the web duty room",
            file=out,
        )
        async with fleet:
            await fleet.wait_connected()
            server = DutyRoomServer(options)
            password = secrets.token_urlsafe(12)
            server.add_account(DEMO_ACCOUNT, "Demo Supervisor 演示主管", "supervisor", password)
            async with server:
                print(
                    f"\nduty room: {server.url}\n"
                    f"  its certificate's CA (this run's): {web / 'ca' / 'ca.pem'}\n"
                    f"  login for this run only: {DEMO_ACCOUNT} / {password}\n"
                    f"  a unit is pressed every {PRESS_EVERY_S:g} s ({args.presses} presses);"
                    " the guard misses check-ins; Ctrl-C stops everything\n",
                    file=out,
                    flush=True,
                )
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                got: list[int] = []

                def stopped(sig: signal.Signals) -> None:
                    got.append(sig)
                    stop.set()

                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stopped, sig)
                presser = asyncio.create_task(_press_now_and_then(fleet, args.presses, out))
                await stop.wait()
                presser.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await presser
                print("stopping", file=out)
    return 0
