"""Export a trained JSCC checkpoint to ONNX with its model card.

    python -m gsc_models.export --model deepjscc --checkpoint runs/deepjscc/checkpoint.pt \\
        --out models/deepjscc --train-command "..."

Writes encoder.onnx, decoder.onnx, card.json (what the runtime reads: names,
shapes, CBR, codec id, SHA-256 of each file) and card.md (for people), with an
eval table measured here on CIFAR-10 test images over an ideal AWGN channel.
"""
import argparse
import hashlib
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import torch

from .data import datasets_root, load_cifar10, manifest_sha256
from .deepjscc import DOWNSAMPLE
from .swinjscc import SIZE_MULTIPLE as SWIN_SIZE_MULTIPLE
from .train import MODELS, SUCCESSIVE, evaluate, to_tensor

CODEC_IDS = {"deepjscc": 1, "deepjscc_sr": 2, "swinjscc": 3}
ARCHITECTURES = {
    "DeepJSCC": "conv/GDN/PReLU stages with SNR attention (ADJSCC), fully convolutional, /4 spatial",
    "SwinJSCC": "2x2 patch embedding, two Swin stages (window attention, shifted windows, patch merging) "
                "with SNR channel modulation, linear head; mirrored decoder with patch splitting; /4 spatial",
}
SIZE_MULTIPLES = {"swinjscc": SWIN_SIZE_MULTIPLE}     # image sides must be multiples of this
EVAL_SNRS = (0, 5, 10, 15, 20)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_checkpoint(model_name: str, path: str):
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MODELS[model_name](**state["config"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


def export_onnx(model, out: Path):
    latent = 2 * model.config["latent_complex"]
    image = torch.rand(1, 3, 32, 32)
    snr = torch.full((1, 1), 10.0)
    axes_img = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(model.encoder, (image, snr), out / "encoder.onnx", input_names=["image", "snr_db"],
                      output_names=["symbols"], dynamic_axes={"image": axes_img, "snr_db": {0: "batch"},
                                                              "symbols": {0: "batch", 2: "h", 3: "w"}},
                      opset_version=17, dynamo=False)
    symbols = torch.randn(1, latent, 8, 8)
    torch.onnx.export(model.decoder, (symbols, snr), out / "decoder.onnx", input_names=["symbols", "snr_db"],
                      output_names=["image"], dynamic_axes={"symbols": {0: "batch", 2: "h", 3: "w"},
                                                            "snr_db": {0: "batch"}, "image": axes_img},
                      opset_version=17, dynamo=False)


def save_weights_npz(model, path: Path):
    """The state dict as plain numpy arrays (np.load(..., allow_pickle=False)), no pickle."""
    import numpy as np
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    np.savez(path, **arrays)


def load_weights_npz(model_name: str, folder, model_class=None) -> torch.nn.Module:
    """Torch model of a shipped card from its weights.npz (for tests and fine-tuning); model_class
    for models outside the codecs' MODELS (the refiner's Denoiser)."""
    import numpy as np
    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text())
    model = (model_class or MODELS[model_name])(**card["config"])
    with np.load(folder / card["files"]["weights"]["path"], allow_pickle=False) as data:
        model.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    return model.eval()


def init_record(log: dict) -> dict | None:
    """A fine-tuned checkpoint's starting point: the shipped model named by the run's --init, with its
    weights' SHA-256 and its own training record (read before an export overwrites that folder)."""
    init = log.get("args", {}).get("init")
    if not init:
        return None
    for folder in (Path(init), Path(__file__).resolve().parents[1] / Path(init).name):
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
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="deepjscc")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train-command", required=True, help="the exact command that trained the checkpoint")
    p.add_argument("--train-log", default=None, help="the run's train_log.json (default: the one beside the checkpoint)")
    p.add_argument("--data", default=None)
    p.add_argument("--eval-images", type=int, default=10000)
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(args.model, args.checkpoint)
    log_path = Path(args.train_log) if args.train_log else Path(args.checkpoint).parent / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    root = datasets_root(args.data)
    training = training_record(args.train_command, log, root,   # before --out (maybe the --init folder) changes
                               "CIFAR-10 train (40,000 images) from shared/datasets/cifar10/train")
    export_onnx(model, out)
    save_weights_npz(model, out / "weights.npz")
    test_u8, _, _ = load_cifar10("test", root, args.eval_images)
    test = to_tensor(test_u8)
    table = evaluate(model, test, snrs=EVAL_SNRS)
    groups = model.config["latent_complex"]
    # successive refinement: PSNR per number of symbol groups sent (rate_index = groups - sent)
    by_groups = {str(g): {str(k): round(v, 3) for k, v in evaluate(model, test, snrs=EVAL_SNRS, groups=g).items()}
                 for g in range(1, groups + 1)} if args.model in SUCCESSIVE else None
    latent_complex = model.config["latent_complex"]
    card = {
        "name": args.model,
        "codec_id": CODEC_IDS[args.model],
        "architecture": f"{model.__class__.__name__} {model.config}: {ARCHITECTURES[model.__class__.__name__]}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": model.config,
        "cbr": model.cbr,
        "downsample": DOWNSAMPLE,
        "size_multiple": SIZE_MULTIPLES.get(args.model, DOWNSAMPLE),
        "latent_complex_per_block": latent_complex,
        "snr_range_db": [log.get("args", {}).get("snr_min", -2.0), log.get("args", {}).get("snr_max", 22.0)],
        "files": {
            "encoder": {"path": "encoder.onnx", "sha256": sha256_file(out / "encoder.onnx"),
                        "inputs": {"image": f"float32 [N,3,H,W] in [0,1], H and W multiples of "
                                            f"{SIZE_MULTIPLES.get(args.model, DOWNSAMPLE)}",
                                   "snr_db": "float32 [N,1]"},
                        "outputs": {"symbols": f"float32 [N,{2 * latent_complex},H/4,W/4]: channels "
                                               f"0..{latent_complex - 1} in-phase, the rest quadrature; "
                                               "unit average complex power per image"}},
            "decoder": {"path": "decoder.onnx", "sha256": sha256_file(out / "decoder.onnx"),
                        "inputs": {"symbols": f"float32 [N,{2 * latent_complex},h,w]", "snr_db": "float32 [N,1]"},
                        "outputs": {"image": "float32 [N,3,4h,4w] in [0,1]"}},
            "weights": {"path": "weights.npz", "sha256": sha256_file(out / "weights.npz"),
                        "format": "numpy .npz of the torch state dict (no pickle)"},
        },
        "training": training,
        "eval": {"dataset": f"CIFAR-10 test, first {len(test_u8)} images", "channel": "ideal AWGN, true SNR",
                 "psnr_db": {str(k): round(v, 3) for k, v in table.items()}},
    }
    if by_groups:
        card["successive_refinement"] = {
            "groups": groups,
            "rule": f"rate_index r sends the first {groups} - r complex latent channels (symbol groups) at unit "
                    "average power; the decoder gets zeros for the rest",
            "symbols_per_group": "H/4 * W/4 (64 for 32x32)"}
        card["eval"]["psnr_db_by_groups"] = by_groups
    extra = ""
    if by_groups:
        head = " | ".join(f"{g} ({Fraction(g, DOWNSAMPLE * DOWNSAMPLE * 3)})" for g in range(1, groups + 1))
        lines = [f"| SNR (dB) | {head} |", "| --- " * (groups + 1) + "|"]
        lines += [f"| {snr} | " + " | ".join(f"{by_groups[str(g)][str(snr)]:.2f}" for g in range(1, groups + 1)) + " |"
                  for snr in EVAL_SNRS]
        extra = ("\n## Successive refinement (PSNR in dB by symbol groups sent, with the CBR)\n\n"
                 f"rate_index r sends the first {groups} - r groups. Same images and channel as above.\n\n"
                 + "\n".join(lines) + "\n")
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    rows = "\n".join(f"| {snr} | {psnr:.2f} |" for snr, psnr in card["eval"]["psnr_db"].items())
    (out / "card.md").write_text(f"""# Model card: {args.model}

- Architecture: {card['architecture']}; {card['parameters']:,} parameters.
- Channel bandwidth ratio: {card['cbr']:.4f} ({latent_complex} complex symbols per 4x4x3 pixel block).
- Codec id on air: {card['codec_id']}. Trained SNR range: {card['snr_range_db']} dB (uniform per image).
- Data: {card['training']['data']}; dataset MANIFEST.sha256 hash `{card['training']['data_manifest_sha256']}`.
- Training command (run from `models/`): `{args.train_command}`
  (checkpoint after {card['training']['epochs']} of {card['training']['scheduled_epochs']} scheduled epochs,
  {card['training']['minutes']} minutes on this project's 2-core CPU machine, sharing it with other work).
{init_lines(card['training'])}- Export: `python -m gsc_models.export --model {args.model} --checkpoint ... --out models/{args.model}`.

## Eval ({card['eval']['dataset']}, {card['eval']['channel']})

| SNR (dB) | PSNR (dB) |
| --- | --- |
{rows}
{extra}
## Files

| file | SHA-256 |
| --- | --- |
| encoder.onnx | `{card['files']['encoder']['sha256']}` |
| decoder.onnx | `{card['files']['decoder']['sha256']}` |
| weights.npz | `{card['files']['weights']['sha256']}` |

The runtime (gsc_blocks.core.codec) refuses a file whose SHA-256 differs from card.json.
""")
    print(json.dumps(card["eval"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
