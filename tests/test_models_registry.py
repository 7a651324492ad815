"""The model registry and the card writer agree with the shipped model folders."""
import json
from pathlib import Path

import pytest

from gsc_models.cards import load_weights_npz, write_card
from gsc_models.registry import MODELS, names

SHIPPED = sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "models").glob("*/card.json"))


def test_every_shipped_model_is_registered_and_kinds_are_known():
    assert {folder.name for folder in SHIPPED} <= set(MODELS)
    assert names("codec") == ["deepjscc", "deepjscc_sr", "swinjscc"]
    assert {spec.kind for spec in MODELS.values()} == {"codec", "refiner", "classifier", "segmenter", "superres",
                                                            "sqgan"}


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda f: f.name)
def test_registry_facts_match_the_shipped_card(folder):
    card = json.loads((folder / "card.json").read_text())
    spec = MODELS[card["name"]]
    assert spec.kind == card.get("kind", "codec")
    assert spec.architecture.format(config=card["config"]) == card["architecture"]
    if spec.kind == "codec":
        assert (spec.codec_id, spec.downsample, spec.size_multiple) == \
            (card["codec_id"], card["downsample"], card["size_multiple"])
        assert spec.successive == ("successive_refinement" in card)
    if spec.kind in ("refiner", "superres"):
        assert spec.size_multiple == card["diffusion"]["size_multiple"]
    if spec.kind in ("segmenter", "sqgan"):
        assert spec.size_multiple == card["size_multiple"]
    if spec.kind == "sqgan":
        assert spec.downsample == card["downsample"]
    model = load_weights_npz(card["name"], folder)       # strict: every tensor of the class, no more
    assert isinstance(model, spec.build) and model.config == card["config"]
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda f: f.name)
def test_card_writer_ends_card_md_as_the_shipped_cards_do(folder, tmp_path):
    card = json.loads((folder / "card.json").read_text())
    write_card(tmp_path, card, "# body\n\n", MODELS[card["name"]].kind)
    assert json.loads((tmp_path / "card.json").read_text()) == card
    assert (tmp_path / "card.json").read_text() == (folder / "card.json").read_text()
    files_table = (tmp_path / "card.md").read_text().removeprefix("# body\n\n")
    assert (folder / "card.md").read_text().endswith("\n\n" + files_table)
