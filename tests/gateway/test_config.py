"""boards.yaml's wiring checks: what an ESP32 cannot do is refused when the register loads."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from gateway.core.config import esp32_pin_problem, load_config, parse_config
from gateway.core.errors import ConfigError
from tests.support import register

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_register_is_wired_for_an_esp32() -> None:
    config = load_config(ROOT / "boards.yaml")
    assert config.units
    for unit in config.units.values():
        assert esp32_pin_problem(unit.pins) is None, unit.id


@pytest.mark.parametrize(
    ("pins", "words"),
    [
        # a panic button held through a reset would leave the unit in download mode
        ({"button": 0}, "strapping pin"),
        ({"tamper": 2}, "strapping pin"),
        ({"checkin": 5}, "strapping pin"),
        ({"mains": 12}, "strapping pin"),
        ({"button": 36}, "no internal pull"),
        ({"led": 35}, "input only"),
        ({"uart_tx": 39}, "input only"),
        ({"buzzer": 7}, "flash"),
        ({"uart_rx": 24}, "no GPIO 24"),
        ({"battery_adc": 25}, "not on ADC1"),
        ({"led": 12}, "1.8 V flash"),
        ({"buzzer": 4}, "already tamper"),
        # the pull-down that keeps an RS-485 driver off at boot would pick download mode
        ({"rs485_de": 0}, "strapping pin"),
        ({"rs485_de": 38}, "input only"),
    ],
)
def test_wiring_an_esp32_cannot_have_is_refused(pins: dict[str, int], words: str) -> None:
    doc = copy.deepcopy(register.shipped())
    unit = doc["units"][0]
    unit["pins"] = {**unit["pins"], **pins}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "boards.yaml")
    text = str(err.value)
    assert words in text
    assert unit["id"] in text and "pins" in text


def test_inputs_without_pulls_and_strapping_outputs_that_work_are_accepted() -> None:
    # the UART's RX may sit on an input-only GPIO; a LED on GPIO 2 (the dev boards' own)
    # and a buzzer on 15 are outputs, which do not hold the pin at reset
    base = register.shipped()["units"][0]["pins"]
    assert esp32_pin_problem({**base, "uart_rx": 36, "battery_adc": 39}) is None
    assert esp32_pin_problem({**base, "led": 2, "buzzer": 15}) is None
    assert esp32_pin_problem({**base, "rs485_de": 25}) is None


def test_an_unknown_field_names_the_nearest_valid_one(tmp_path: Path) -> None:
    text = (ROOT / "boards.yaml").read_text()
    bad = tmp_path / "boards.yaml"
    bad.write_text(text.replace("  - id: shop-fruit\n", "  - id: shop-fruit\n    heartbeat: 30\n"))
    with pytest.raises(ConfigError) as ex:
        load_config(bad)
    assert str(ex.value) == (
        f"{bad}: unit shop-fruit: field 'heartbeat': unknown field; did you mean 'heartbeat_s'?"
    )
    for where, before, after, near in [
        ("defaults", "  heartbeat_s: 60\n", "  heartbeat_sec: 60\n", "heartbeat_s"),
        ("gateway", "  timezone:", "  time_zone:", "timezone"),
        ("top level", "\nposts:\n", "\npost:\n", "posts"),
        ("link bus-a", "baud: 115200", "bauds: 115200", "baud"),
    ]:
        assert before in text, before
        bad.write_text(text.replace(before, after, 1))
        with pytest.raises(ConfigError) as ex:
            load_config(bad)
        assert ex.value.where == where and f"did you mean '{near}'" in str(ex.value)


def test_a_yaml_syntax_error_points_at_its_line(tmp_path: Path) -> None:
    lines = (ROOT / "boards.yaml").read_text().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if line.startswith("    owner:"))
    lines[n] = lines[n][2:]  # out-dented by two
    bad = tmp_path / "boards.yaml"
    bad.write_text("".join(lines))
    with pytest.raises(ConfigError) as ex:
        load_config(bad)
    assert ex.value.where == f"line {n + 1}"
    assert "YAML syntax" in str(ex.value) and lines[n].strip() in str(ex.value)
    # an unclosed brace is found only at the end: the line to fix is where it opened
    bad.write_text("version: 1\nunits: [\n  {id: a\n")
    with pytest.raises(ConfigError) as ex:
        load_config(bad)
    assert ex.value.where == "line 3" and "'{id: a'" in str(ex.value)


def test_a_missing_register_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ex:
        load_config(tmp_path / "nope.yaml")
    assert str(ex.value).startswith(f"{tmp_path / 'nope.yaml'}: ")
    assert "no such file" in str(ex.value) and "--config" in str(ex.value)
