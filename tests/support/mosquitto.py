"""The tests' broker is the same private Mosquitto the demo and benches use.

    with Mosquitto(tmp_path) as broker:      # started, accepting connections
        url = broker.url                     # mqtt://127.0.0.1:PORT
        broker.stop()                        # broker down (same port kept)
        broker.start()                       # and up again

See :mod:`gateway.sim.localbroker`.
"""

from __future__ import annotations

from pathlib import Path

from gateway.sim.localbroker import LocalBroker as Mosquitto
from gateway.sim.localbroker import free_port

__all__ = ["Mosquitto", "free_port", "open_broker"]


def open_broker(workdir: Path, **kw: object) -> Mosquitto:
    """The one broker anyone may use: for the test that shows what an open broker allows,
    and for benches of the application layer's own defences. Never shipped."""
    return Mosquitto(workdir, open_listener="allow_anonymous true", **kw)  # type: ignore[arg-type]
