"""Export a trained JSCC checkpoint to ONNX with its model card.

    python -m gsc_models.export --model deepjscc --checkpoint runs/deepjscc/checkpoint.pt \\
        --out models/deepjscc --train-command "..."

Writes encoder.onnx, decoder.onnx, card.json (what the runtime reads: names,
shapes, CBR, codec id, SHA-256 of each file) and card.md (for people), with an
eval table measured here on CIFAR-10 test images over an ideal AWGN channel.
"""
import argparse
import json
from fractions import Fraction
from pathlib import Path

import torch

from .cards import data_line, file_entry, init_lines, model_facts, training_record, weights_entry, write_card
from .cards import load_weights_npz  # noqa: F401  (callers that import it from here)
from .data import datasets_root, load_cifar10
from .registry import MODELS, names
from .train import evaluate, to_tensor

EVAL_SNRS = (0, 5, 10, 15, 20)


def load_checkpoint(model_name: str, path: str):
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MODELS[model_name].build(**state["config"])
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=names("codec"), default="deepjscc")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train-command", required=True, help="the exact command that trained the checkpoint")
    p.add_argument("--train-log", default=None, help="the run's train_log.json (default: the one beside the checkpoint)")
    p.add_argument("--data", default=None)
    p.add_argument("--eval-images", type=int, default=10000)
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = MODELS[args.model]
    model = load_checkpoint(args.model, args.checkpoint)
    log_path = Path(args.train_log) if args.train_log else Path(args.checkpoint).parent / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    root = datasets_root(args.data)
    training = training_record(args.train_command, log, root,   # before --out (maybe the --init folder) changes
                               "CIFAR-10 train (40,000 images) from shared/datasets/cifar10/train")
    export_onnx(model, out)
    weights = weights_entry(model, out)
    test_u8, _, _ = load_cifar10("test", root, args.eval_images)
    test = to_tensor(test_u8)
    table = evaluate(model, test, snrs=EVAL_SNRS)
    groups = model.config["latent_complex"]
    # successive refinement: PSNR per number of symbol groups sent (rate_index = groups - sent)
    by_groups = {str(g): {str(k): round(v, 3) for k, v in evaluate(model, test, snrs=EVAL_SNRS, groups=g).items()}
                 for g in range(1, groups + 1)} if spec.successive else None
    latent_complex = model.config["latent_complex"]
    card = {
        "name": args.model,
        "codec_id": spec.codec_id,
        **model_facts(spec, model),
        "cbr": model.cbr,
        "downsample": spec.downsample,
        "size_multiple": spec.size_multiple,
        "latent_complex_per_block": latent_complex,
        "snr_range_db": [log.get("args", {}).get("snr_min", -2.0), log.get("args", {}).get("snr_max", 22.0)],
        "files": {
            "encoder": file_entry(out, "encoder.onnx",
                                  inputs={"image": "float32 [N,3,H,W] in [0,1], H and W multiples of "
                                                   f"{spec.size_multiple}", "snr_db": "float32 [N,1]"},
                                  outputs={"symbols": f"float32 [N,{2 * latent_complex},H/4,W/4]: channels "
                                                      f"0..{latent_complex - 1} in-phase, the rest quadrature; "
                                                      "unit average complex power per image"}),
            "decoder": file_entry(out, "decoder.onnx",
                                  inputs={"symbols": f"float32 [N,{2 * latent_complex},h,w]",
                                          "snr_db": "float32 [N,1]"},
                                  outputs={"image": "float32 [N,3,4h,4w] in [0,1]"}),
            "weights": weights,
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
        cbr_unit = spec.downsample * spec.downsample * 3
        head = " | ".join(f"{g} ({Fraction(g, cbr_unit)})" for g in range(1, groups + 1))
        lines = [f"| SNR (dB) | {head} |", "| --- " * (groups + 1) + "|"]
        lines += [f"| {snr} | " + " | ".join(f"{by_groups[str(g)][str(snr)]:.2f}" for g in range(1, groups + 1)) + " |"
                  for snr in EVAL_SNRS]
        extra = ("\n## Successive refinement (PSNR in dB by symbol groups sent, with the CBR)\n\n"
                 f"rate_index r sends the first {groups} - r groups. Same images and channel as above.\n\n"
                 + "\n".join(lines) + "\n")
    rows = "\n".join(f"| {snr} | {psnr:.2f} |" for snr, psnr in card["eval"]["psnr_db"].items())
    write_card(out, card, f"""# Model card: {args.model}

- Architecture: {card['architecture']}; {card['parameters']:,} parameters.
- Channel bandwidth ratio: {card['cbr']:.4f} ({latent_complex} complex symbols per 4x4x3 pixel block).
- Codec id on air: {card['codec_id']}. Trained SNR range: {card['snr_range_db']} dB (uniform per image).
{data_line(card['training'])}- Training command (run from `models/`): `{args.train_command}`
  (checkpoint after {card['training']['epochs']} of {card['training']['scheduled_epochs']} scheduled epochs,
  {card['training']['minutes']} minutes on this project's 2-core CPU machine, sharing it with other work).
{init_lines(card['training'])}- Export: `python -m gsc_models.export --model {args.model} --checkpoint ... --out models/{args.model}`.

## Eval ({card['eval']['dataset']}, {card['eval']['channel']})

| SNR (dB) | PSNR (dB) |
| --- | --- |
{rows}
{extra}
""", spec.kind)
    print(json.dumps(card["eval"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
