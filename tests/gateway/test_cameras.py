"""Cameras in boards.yaml (issue 17 item 5): stream references in every alarm, never secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.config import Config, parse_config
from gateway.core.credentials import SecretDir
from gateway.core.errors import CameraCredentialError, ConfigError
from gateway.pipeline.incidents import IncidentBook
from gateway.video.cameras import read_login

from .conftest import SITE, register_yaml
from .helpers import T0, EventLog, alarm, journal, open_store, publications

RTSP = "rtsp://192.0.2.10:554/Streaming/Channels/102"
GB = "34020000001320000001"


def register(tmp_path: Path, cameras: list[dict[str, Any]], unit_cams: list[Any]) -> Config:
    data = yaml.safe_load(register_yaml(tmp_path / "tty", [("shop-a", 257), ("shop-b", 258)]))
    data["cameras"] = cameras
    data["units"][0]["cameras"] = unit_cams
    return parse_config(data, "boards.yaml")


def gate(**kw: Any) -> dict[str, Any]:
    cam = {
        "id": "cam-gate",
        "site": SITE,
        "name": "East gate",
        "rtsp": RTSP,
        "gb28181": GB,
        "snapshot": "http://192.0.2.10/ISAPI/Streaming/channels/102/picture",
        "credentials": "gate-nvr",
    }
    cam.update(kw)
    return {k: v for k, v in cam.items() if v is not None}


def test_a_unit_lists_the_cameras_of_its_place(tmp_path: Path) -> None:
    cfg = register(tmp_path, [gate(), gate(id="cam-street", gb28181=None, snapshot=None)],
                   ["cam-gate", "cam-street"])  # fmt: skip
    assert cfg.units["shop-a"].cameras == ("cam-gate", "cam-street")
    assert cfg.units["shop-b"].cameras == ()
    cam = cfg.cameras["cam-gate"]
    assert (cam.rtsp, cam.gb28181, cam.auth, cam.credentials) == (RTSP, GB, "digest", "gate-nvr")
    assert cam.ref() == {
        "id": "cam-gate", "name": "East gate", "rtsp": RTSP, "gb28181": GB, "snapshot": True,
    }  # fmt: skip
    assert cfg.cameras["cam-street"].ref() == {
        "id": "cam-street", "name": "East gate", "rtsp": RTSP, "snapshot": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("cam", "unit_cams", "field", "problem"),
    [
        (gate(rtsp="rtsp://admin:12345@192.0.2.10/ch1"), ["cam-gate"], "rtsp", "never live"),
        (gate(snapshot="http://admin:pw@192.0.2.10/p.jpg"), ["cam-gate"], "snapshot", "never"),
        ({**gate(), "password": "12345"}, ["cam-gate"], "password", "never live"),
        (gate(snapshot="ftp://192.0.2.10/p.jpg"), ["cam-gate"], "snapshot", "http"),
        (gate(gb28181="3402"), ["cam-gate"], "gb28181", "20-digit"),
        (gate(auth="ntlm"), ["cam-gate"], "auth", "digest, basic, none"),
        (gate(credentials=None), ["cam-gate"], "credentials", "missing"),
        (gate(rtsp=None, gb28181=None, snapshot=None), ["cam-gate"], "rtsp", "give rtsp"),
        (gate(site="elsewhere"), ["cam-gate"], "site", "not defined"),
        (gate(), ["cam-gaet"], "cameras[0]", "not a camera"),
        (gate(), ["cam-gate", "cam-gate"], "cameras[1]", "twice"),
        ({**gate(), "snapshot_url": "x"}, ["cam-gate"], "snapshot_url", "did you mean 'snapshot'"),
    ],
)
def test_a_bad_camera_entry_names_the_field(
    tmp_path: Path, cam: dict[str, Any], unit_cams: list[str], field: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        register(tmp_path, [cam], unit_cams)
    assert err.value.field == field
    assert problem in str(err.value)


def test_a_camera_of_another_site_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(register_yaml(tmp_path / "tty", [("shop-a", 257)]))
    data["sites"].append({"id": "other", "name": "Other", "address": "2 Road"})
    data["cameras"] = [gate(site="other")]
    data["units"][0]["cameras"] = ["cam-gate"]
    with pytest.raises(ConfigError, match="at site other"):
        parse_config(data, "boards.yaml")


def test_login_comes_from_the_key_directory(tmp_path: Path) -> None:
    cfg = register(tmp_path, [gate()], ["cam-gate"])
    cam = cfg.cameras["cam-gate"]
    with pytest.raises(CameraCredentialError, match=r"camera-gate-nvr\.cred"):
        read_login(SecretDir(tmp_path), cam)
    (tmp_path / "camera-gate-nvr.cred").write_text("nopassword\n")
    with pytest.raises(CameraCredentialError, match="user:password"):
        read_login(SecretDir(tmp_path), cam)
    (tmp_path / "camera-gate-nvr.cred").write_text("admin:s3cr:et\n")
    login = read_login(SecretDir(tmp_path), cam)
    assert login is not None and (login.user, login.password) == ("admin", "s3cr:et")
    assert "s3cr" not in repr(login)
    # as systemd hands the key directory over: keys_<file>
    (tmp_path / "keys_camera-gate-nvr.cred").write_text("op:pw2\n")
    login = read_login(SecretDir(tmp_path, "keys_"), cam)
    assert login is not None and login.user == "op"


def test_every_alarm_update_carries_the_cameras_and_no_credentials(tmp_path: Path) -> None:
    cfg = register(
        tmp_path, [gate(), gate(id="cam-street", snapshot=None)], ["cam-gate", "cam-street"]
    )
    store = open_store(tmp_path / "j.db")
    book = IncidentBook(store, cfg, prefix="cg", event=EventLog())
    for seq, unit in ((1, "shop-a"), (2, "shop-a"), (3, "shop-b")):
        u = cfg.units[unit]
        frame, body = alarm(u, seq)
        with store.transaction():
            iid = book.on_alarm(u, frame, body, T0 + seq * 2, "bus")
            journal(store, frame, T0 + seq * 2, iid)
            book.flush_board(T0 + seq * 2)
    pubs = publications(store)
    shop_a = [p for p in pubs if p.get("unit") == "shop-a"]
    assert shop_a and all(
        [c["id"] for c in p["cameras"]] == ["cam-gate", "cam-street"] for p in shop_a
    )
    assert {p["update"] for p in shop_a} >= {"new", "presses"}
    assert all(p["cameras"] == [] for p in pubs if p.get("unit") == "shop-b")
    text = json.dumps(pubs)
    assert RTSP in text and GB in text
    assert "gate-nvr" not in text and "credentials" not in text
    store.close()
