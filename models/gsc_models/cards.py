"""Model cards and weights: what every exported model folder holds beside its ONNX files.

card.json is what the runtime reads (names, shapes, each file's SHA-256, provenance); card.md says
the same for people and ends with the files table. weights.npz is the torch state dict as plain
numpy arrays, so loading it never unpickles anything.
"""
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from .data import manifest_sha256
from .registry import MODELS

MODELS_DIR = Path(__file__).resolve().parents[1]
# the runtime module that reads each kind of card and refuses a file whose SHA-256 differs
RUNTIME = {"codec": "gsc_blocks.core.codec", "refiner": "gsc_blocks.core.refiner",
           "classifier": "gsc_blocks.core.semantic", "segmenter": "gsc_blocks.core.segmentation",
           "superres": "gsc_blocks.core.spic", "sqgan": "gsc_blocks.core.sqgan"}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def git_commit() -> str:
    """The short commit of the working directory's repository ("" outside one)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def save_weights_npz(model: torch.nn.Module, path: Path):
    """The state dict as plain numpy arrays (np.load(..., allow_pickle=False)), no pickle."""
    np.savez(path, **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def load_weights_npz(model_name: str, folder) -> torch.nn.Module:
    """The registered model `model_name`, built from the card.json in `folder` with its weights.npz
    (strict state dict), in eval mode."""
    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text())
    model = MODELS[model_name].build(**card["config"])
    with np.load(folder / card["files"]["weights"]["path"], allow_pickle=False) as data:
        model.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    return model.eval()


def model_facts(spec, model: torch.nn.Module) -> dict:
    """The card keys every model shares: architecture (the registry's text), parameter count, config."""
    return {"architecture": spec.architecture.format(config=model.config),
            "parameters": sum(p.numel() for p in model.parameters()), "config": model.config}


def file_entry(out: Path, path: str, **facts) -> dict:
    """card.json's entry for one file written to `out`: its path, SHA-256, then `facts`."""
    return {"path": path, "sha256": sha256_file(out / path), **facts}


def weights_entry(model: torch.nn.Module, out: Path) -> dict:
    """Writes out/weights.npz and returns its card.json entry."""
    save_weights_npz(model, out / "weights.npz")
    return file_entry(out, "weights.npz", format="numpy .npz of the torch state dict (no pickle)")


def init_record(log: dict) -> dict | None:
    """A fine-tuned checkpoint's starting point: the shipped model named by the run's --init, with its
    weights' SHA-256 and its own training record (read before an export overwrites that folder)."""
    init = log.get("args", {}).get("init")
    if not init:
        return None
    for folder in (Path(init), MODELS_DIR / Path(init).name):
        if (folder / "card.json").exists():
            card = json.loads((folder / "card.json").read_text())
            return {"model": card["name"], "weights_sha256": card["files"]["weights"]["sha256"],
                    "training": card["training"]}
    return {"folder": str(init)}


def training_record(command: str, log: dict, root: Path, data: str) -> dict:
    """The card's "training" entry from the training command and its train_log.json."""
    epochs = log.get("epochs", [])
    init = init_record(log)
    return {
        "command": command,
        "data": data,
        "data_manifest_sha256": log.get("data_manifest_sha256", manifest_sha256(root)),
        "epochs": len(epochs),
        "scheduled_epochs": log.get("args", {}).get("epochs"),
        "minutes": epochs[-1].get("minutes") if epochs else None,
        "git_commit": git_commit(),
        **({"init": init} if init else {}),
    }


def init_lines(training: dict) -> str:
    """card.md lines for the chain of runs a fine-tuned model started from."""
    lines, init = [], training.get("init")
    while init:
        prev = init.get("training", {})
        lines.append(f"- Started from `{init.get('model', init.get('folder'))}` (weights.npz SHA-256 "
                     f"`{init.get('weights_sha256', '?')}`), trained with `{prev.get('command', '?')}` "
                     f"({prev.get('epochs', '?')} epochs, {prev.get('minutes', '?')} minutes).")
        init = prev.get("init")
    return "".join(line + "\n" for line in lines)


def data_line(training: dict) -> str:
    """card.md's line naming the training data and its manifest hash."""
    return (f"- Data: {training['data']}; dataset MANIFEST.sha256 hash `{training['data_manifest_sha256']}`.\n")


def write_card(out: Path, card: dict, markdown: str, kind: str):
    """Writes out/card.json (`card`) and out/card.md: `markdown`, then the table of card["files"] with
    their SHA-256 and the runtime module of `kind` that checks them."""
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    rows = "".join(f"| {f['path']} | `{f['sha256']}` |\n" for f in card["files"].values())
    (out / "card.md").write_text(f"{markdown}## Files\n\n| file | SHA-256 |\n| --- | --- |\n{rows}\n"
                                 f"The runtime ({RUNTIME[kind]}) refuses a file whose SHA-256 differs from "
                                 "card.json.\n")
