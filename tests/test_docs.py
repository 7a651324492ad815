"""Results are data: every docs results table and the README's headline regenerate byte for
byte from the committed JSON, and every committed result says where it came from."""
import json
from pathlib import Path

from gsc_blocks.bench.tables import HEADLINE, generate

REPO = Path(__file__).resolve().parents[1]


def test_results_tables_regenerate_from_the_committed_json():
    generated = generate(REPO)
    assert Path("README.md") in generated and Path("docs/results/link.md") in generated
    for rel, text in generated.items():
        assert (REPO / rel).read_text() == text, f"{rel} differs from its JSON: run scripts/gsc docs"


def test_every_committed_result_records_commit_command_setup_and_models():
    results = sorted((REPO / "results").rglob("*.json"))
    assert REPO / HEADLINE in results
    for path in results:
        prov = json.loads(path.read_text())["provenance"]
        assert len(prov["commit"].split("-")[0]) == 40, path
        assert prov["command"].startswith("scripts/gsc bench "), path
        assert prov["date"] and isinstance(prov["models"], dict), path
        if "/link/" in str(path) or "/control/" in str(path):
            assert prov["setup"]["link"] == "zmq" and prov["models"], path
            assert all(len(digest) == 64 for files in prov["models"].values() for digest in files.values()), path


def test_readme_stays_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
