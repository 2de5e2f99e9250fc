import json
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "vectors.json"


def load_vectors() -> dict:
    return json.loads(VECTORS.read_text())


@pytest.fixture(scope="session")
def vectors() -> dict:
    return load_vectors()
