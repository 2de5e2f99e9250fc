"""Camera snapshots, wired into the gateway service (gateway/video/).

The watcher, its task and its retention.
"""

from __future__ import annotations

from gateway.core.credentials import SecretDir
from gateway.service.assembly import Gateway
from gateway.video.snapshots import Snapshots, snapshot_dir
from gateway.video.watch import SnapshotWatch


def attach_video(gw: Gateway) -> SnapshotWatch | None:
    """Snapshots on every new incident at a place with cameras (None: no such place)."""
    config, settings = gw.config, gw.settings
    if not any(config.cameras[c].snapshot for u in config.units.values() for c in u.cameras):
        return None
    keydir = settings.keydir
    secrets = keydir if isinstance(keydir, SecretDir) else SecretDir(keydir)
    snapshots = Snapshots(
        gw.store,
        snapshot_dir(settings.db_path),
        prefix=settings.prefix,
        gateway_id=config.gateway_id,
    )
    watch = SnapshotWatch(config, snapshots, secrets, gw.clock)
    gw.attach([watch])
    gw.attach_service("snapshots", watch.run, snapshots.prune)
    return watch
