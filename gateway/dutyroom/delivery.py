"""Delivering the monthly report on the 30th: to a folder, and retained on MQTT per month.

``campusguard report --period [YYYY-MM] --deliver DIR`` (the systemd timer
``campusguard-report.timer`` runs it on the 30th, and on the last day of February) makes
the report of the period due that month (:func:`gateway.dutyroom.report.period_window`: from the
report day of the month before up to the day before this month's) and:

- writes it in every format the report has (md, csv, json) to
  ``DIR/campusguard-<gateway>-<YYYY-MM>.<format>``, each through a temporary file and a
  rename (a reader never sees half a report; a run again replaces it);
- queues, per site, the site's figures as one retained message on
  ``<prefix>/<site>/report/<YYYY-MM>`` in the journal's outbox, signed with the gateway's
  key like every publication. The running gateway notices the new rows (SQLite's
  ``data_version``) and publishes them; while the broker is away they wait in the
  outbox, as alarms do. A message too large for the broker (``MAX_MQTT_BYTES``) is not
  queued: the folder still has the report, and the run says so and fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any

from gateway.core.config import Config
from gateway.core.credentials import SecretDir
from gateway.core.timefmt import iso
from gateway.dutyroom.report import FORMATS, monthly, open_journal, render
from gateway.journal.store import Store
from gateway.security.envelope import Signer
from gateway.security.signkeys import gateway_kid, read_private

MAX_MQTT_BYTES = 15 * 1024
"""The broker takes packets up to 16 KiB (campusguard broker-config): room for the topic."""


@dataclass
class Delivered:
    """What a delivery did."""

    period: str
    files: list[Path] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)  # sites whose message was not queued


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def site_message(data: Mapping[str, Any], site: Mapping[str, Any], at: float) -> dict[str, Any]:
    """The retained message of one site for the period (the report's figures, no log)."""
    return {
        "report": "monthly",
        "period": data["month"],
        "covers": data.get("covers"),
        "from": data["from"],
        "to": data["to"],
        "tz": data["tz"],
        "generated_at": iso(at),
        "gateway_life": data.get("gateway"),
        "major": [m for m in data.get("major", []) if m.get("site") in (None, site["site"])],
        "site": site,
    }


def deliver(
    db: Path,
    config: Config,
    period: str,
    tz: tzinfo,
    out_dir: Path,
    *,
    keydir: Path | SecretDir,
    prefix: str,
    now: float,
) -> Delivered:
    """Make the report of ``period`` and deliver it (module docstring); ``now`` is the clock's."""
    conn = open_journal(db)
    try:
        data = monthly(conn, period, tz, config=config, now=now, period=True)
    finally:
        conn.close()
    done = Delivered(period)
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt in FORMATS:
        path = out_dir / f"campusguard-{config.gateway_id}-{period}.{fmt}"
        _write(path, render(data, fmt))
        done.files.append(path)
    secrets = keydir if isinstance(keydir, SecretDir) else SecretDir(keydir)
    kid = gateway_kid(config.gateway_id)
    signer = Signer(kid, read_private(secrets.file(f"{kid}.pem")))
    store = Store(db)
    try:
        store.seal = signer.seal
        with store.transaction():
            for site in data["sites"]:
                topic = f"{prefix}/{site['site']}/report/{period}"
                body = json.dumps(
                    {"gateway": config.gateway_id, **site_message(data, site, now)},
                    separators=(",", ":"),
                    ensure_ascii=False,
                    default=str,
                )
                if len(signer.seal(topic, body).encode()) > MAX_MQTT_BYTES:
                    done.too_large.append(site["site"])
                    continue
                store.enqueue(at=now, topic=topic, payload=body, retain=True)
                done.topics.append(topic)
        store.sync()
    finally:
        store.close()
    return done
