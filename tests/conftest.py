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


@pytest.fixture
def camvid_data(tmp_path):
    """The committed CamVid samples laid out as <datasets>/camvid/test and testannot; -> <datasets>."""
    camvid = REPO / "tests" / "data" / "camvid"
    test, annot = tmp_path / "datasets" / "camvid" / "test", tmp_path / "datasets" / "camvid" / "testannot"
    test.mkdir(parents=True)
    annot.mkdir()
    for path in sorted(camvid.glob("*.webp")):
        (test / path.name).write_bytes(path.read_bytes())
        (annot / f"{path.stem}.png").write_bytes((camvid / "labels" / f"{path.stem}.png").read_bytes())
    return tmp_path / "datasets"
