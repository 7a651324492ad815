import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "models"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

SAMPLES = REPO / "tests" / "data" / "samples"
MODELS = REPO / "models"


@pytest.fixture
def samples():
    return SAMPLES
