"""The gateway service as ``campusguard gateway`` runs it: everything attached, until SIGTERM.

The gateway (:class:`gateway.service.assembly.Gateway`) with its supervision and duty
watchers, its cameras and its SMS modem, run until SIGTERM/SIGINT. Tests build a bare
:class:`Gateway` and attach only what they exercise.
"""

from __future__ import annotations

from gateway.core.config import Config
from gateway.service.assembly import Gateway, Settings
from gateway.service.sms import attach_sms
from gateway.service.snapshots import attach_video
from gateway.service.watchers import build_watchers


async def serve(config: Config, settings: Settings) -> None:
    """Build the gateway with its watchers and run it until SIGTERM/SIGINT."""
    gw = Gateway(config, settings)
    gw.attach(build_watchers(config, gw.outlet, gw.store, gw.clock))
    attach_video(gw)
    attach_sms(gw)
    await gw.run(install_signals=True)
