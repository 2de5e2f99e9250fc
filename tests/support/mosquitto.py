"""The tests' broker is the same private Mosquitto the demo and benches use.

    with Mosquitto(tmp_path) as broker:      # started, accepting connections
        url = broker.url                     # mqtt://127.0.0.1:PORT
        broker.stop()                        # broker down (same port kept)
        broker.start()                       # and up again

See :mod:`gateway.localbroker`.
"""

from __future__ import annotations

from gateway.localbroker import LocalBroker as Mosquitto
from gateway.localbroker import free_port

__all__ = ["Mosquitto", "free_port"]
