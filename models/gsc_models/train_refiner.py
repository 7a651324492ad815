"""Train the diffusion refiner on the outputs of shipped JSCC codecs, then export it.

    python -m gsc_models.train_refiner --codecs swinjscc,deepjscc_sr,deepjscc --epochs 4 \\
        --out ../runs/refiner
    python -m gsc_models.train_refiner --export ../runs/refiner/checkpoint.pt --out ../models/refiner \\
        --train-command "..."

Each batch goes through one of the codecs (torch weights from models/<codec>/weights.npz,
frozen): a random SNR in the codec's training range, a random number of symbol groups for
successive-refinement codecs, AWGN, and the decoder told the SNR with the receiver's
estimation error. The refiner learns the residual between the original and that
reconstruction (gsc_models.refiner). One refiner serves every codec it was trained on.
"""
import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .cards import (MODELS_DIR, data_line, file_entry, init_lines, load_weights_npz, model_facts, training_record,
                    weights_entry, write_card)
from .data import datasets_root, load_cifar10, manifest_sha256
from .layers import awgn, keep_groups, ms_ssim
from .refiner import COSINE_OFFSET, RESIDUAL_SCALE, alpha_sigma, ddim_refine
from .registry import MODELS
from .train import flipped_batches, psnr_db, to_tensor, warmup_cosine

EVAL_SNRS = (0, 5, 10, 20)
EVAL_STEPS = (0, 1, 2, 4, 8)


@torch.no_grad()
def jscc_output(codec, name, x, snr, seen, groups=None):
    z = codec.encoder(x, snr)
    if MODELS[name].successive:
        groups = groups if groups is not None else torch.randint(1, codec.config["latent_complex"] + 1, (len(x),),
                                                                 device=x.device)
        z, mask = keep_groups(z, groups)
        return codec.decoder(awgn(z, snr) * mask, seen)
    return codec.decoder(awgn(z, snr), seen)


def codec_weights_sha256(names) -> dict:
    """The shipped weights.npz SHA-256 of each codec whose outputs the refiner learns from."""
    return {n: json.loads((MODELS_DIR / n / "card.json").read_text())["files"]["weights"]["sha256"] for n in names}


def v_loss(model, x, coarse, seen, ssim_weight=0.0, t1_fraction=0.0):
    """v-prediction loss at a random t; with ssim_weight, plus that times 1 - MS-SSIM of the image the
    network's residual estimate gives (x0 = coarse + r0), so the estimate keeps structure and contrast
    where the mean-square one blurs.

    t1_fraction of each batch is trained at t = 1, the point the one-step sampler evaluates (its output is
    the network's estimate from pure noise: the learned post-filter). Drawn uniformly, t lands near 1
    rarely, and the one-step output is then no better than the JSCC output. With t1_fraction > 0 the
    MS-SSIM term applies to those t = 1 samples only."""
    r = RESIDUAL_SCALE * (x - coarse)
    t = torch.rand(len(x), 1, device=x.device)
    n1 = int(round(t1_fraction * len(x)))
    t[:n1] = 1.0
    a, s = alpha_sigma(t)
    a, s = a[:, :, None, None], s[:, :, None, None]
    eps = torch.randn_like(r)
    z = a * r + s * eps
    v = model(z, coarse, t, seen)
    loss = torch.mean((v - (a * eps - s * r)) ** 2)
    if ssim_weight:
        x0 = (coarse + (a * z - s * v) / RESIDUAL_SCALE).clamp(0.0, 1.0)
        pick = slice(0, n1) if n1 else slice(None)
        loss = loss + ssim_weight * torch.mean(1.0 - ms_ssim(x0[pick], x[pick]))
    return loss


@torch.no_grad()
def evaluate(model, codecs, images, snrs=EVAL_SNRS, steps_list=EVAL_STEPS, batch=250, seed=0):
    """Mean PSNR and MS-SSIM per codec, SNR and number of steps (full rate, decoder told the true SNR):
    {"psnr_db": {codec: {snr: {steps: value}}}, "ms_ssim": {...}}."""
    model.eval()
    state = torch.random.get_rng_state()
    tables = {"psnr_db": {}, "ms_ssim": {}}
    for name, codec in codecs.items():
        for snr in snrs:
            torch.manual_seed(seed)
            rows = {metric: {str(k): [] for k in steps_list} for metric in tables}
            for i in range(0, len(images), batch):
                x = images[i:i + batch]
                s = torch.full((len(x), 1), float(snr))
                full = torch.full((len(x),), codec.config["latent_complex"])
                coarse = jscc_output(codec, name, x, s, s, full)
                for k in steps_list:
                    gen = torch.Generator().manual_seed(seed + i)
                    y = ddim_refine(model, coarse, s, k, gen)
                    rows["psnr_db"][str(k)].append(psnr_db(x, y))
                    rows["ms_ssim"][str(k)].append(ms_ssim(y, x))
            for metric, digits in (("psnr_db", 3), ("ms_ssim", 5)):
                tables[metric].setdefault(name, {})[str(snr)] = {
                    k: round(float(torch.cat(v).mean()), digits) for k, v in rows[metric].items()}
    torch.random.set_rng_state(state)
    model.train()
    return tables


def train(args):
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = datasets_root(args.data)
    train_x = to_tensor(load_cifar10("train", root, args.limit)[0])
    test_x = to_tensor(load_cifar10("test", root, 500)[0])
    names = [n.strip() for n in args.codecs.split(",") if n.strip()]
    codecs = {n: load_weights_npz(n, MODELS_DIR / n) for n in names}
    for codec in codecs.values():
        codec.requires_grad_(False).to(args.device)
    model = load_weights_npz("refiner", args.init).train() if args.init else MODELS["refiner"].build(args.channels)
    model = model.to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = len(train_x) // args.batch
    total = steps_per_epoch * args.epochs
    sched = warmup_cosine(opt, total, min(300, total // 4 + 1))
    log = {"args": vars(args), "data_manifest_sha256": manifest_sha256(root), "codecs": names,
           "codec_weights_sha256": codec_weights_sha256(names),
           "n_train": len(train_x), "params": sum(p.numel() for p in model.parameters()), "epochs": []}
    start = time.time()
    for epoch in range(args.epochs):
        bar = tqdm(flipped_batches(train_x, args.batch), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        running = None
        for b, x in enumerate(bar):
            name = names[b % len(names)]
            x = x.to(args.device)
            snr = torch.empty(len(x), 1, device=args.device).uniform_(args.snr_min, args.snr_max)
            seen = snr + torch.randn_like(snr) * args.snr_input_jitter_db
            coarse = jscc_output(codecs[name], name, x, snr, seen)
            loss = v_loss(model, x, coarse, seen, args.ssim_weight, args.t1_fraction)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        for m in (model, *codecs.values()):
            m.cpu()
        entry = {"epoch": epoch + 1, "minutes": round((time.time() - start) / 60, 2),
                 "test500": evaluate(model, codecs, test_x, snrs=(0, 5, 10, 20), steps_list=(0, 1, 4))}
        for m in (model, *codecs.values()):
            m.to(args.device)
        log["epochs"].append(entry)
        print(json.dumps(entry), flush=True)
        torch.save({"config": model.config, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}},
                   out / "checkpoint.pt")
        (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return 0


def export(args):
    state = torch.load(args.export, map_location="cpu", weights_only=True)
    spec = MODELS["refiner"]
    model = spec.build(**state["config"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n1 = torch.ones(1, 1)
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32), torch.rand(1, 3, 32, 32), n1, 10 * n1),
                      out / "denoiser.onnx", input_names=["z_t", "coarse", "t", "snr_db"], output_names=["v"],
                      dynamic_axes={"z_t": {0: "batch", 2: "height", 3: "width"},
                                    "coarse": {0: "batch", 2: "height", 3: "width"},
                                    "t": {0: "batch"}, "snr_db": {0: "batch"}, "v": {0: "batch", 2: "height", 3: "width"}},
                      opset_version=17, dynamo=False)
    weights = weights_entry(model, out)
    log_path = Path(args.export).parent / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    root = datasets_root(args.data)
    names = log.get("codecs") or [n.strip() for n in args.codecs.split(",")]
    codecs = {n: load_weights_npz(n, MODELS_DIR / n) for n in names}
    test_x = to_tensor(load_cifar10("test", root, args.eval_images)[0])
    tables = evaluate(model, codecs, test_x)
    card = {
        "name": "refiner",
        "kind": spec.kind,
        "codecs": names,
        "codec_weights_sha256": log.get("codec_weights_sha256") or codec_weights_sha256(names),
        **model_facts(spec, model),
        "diffusion": {"schedule": "cosine", "cosine_offset": COSINE_OFFSET, "residual_scale": RESIDUAL_SCALE,
                      "prediction": "v", "sampler": "DDIM eta=0, t = steps/steps .. 1/steps",
                      "max_steps": 15, "size_multiple": spec.size_multiple},
        "files": {
            "denoiser": file_entry(out, "denoiser.onnx",
                                   inputs={"z_t": "float32 [N,3,H,W] noisy scaled residual", "coarse":
                                           "float32 [N,3,H,W] JSCC output in [0,1]", "t": "float32 [N,1] in [0,1]",
                                           "snr_db": "float32 [N,1]"},
                                   outputs={"v": "float32 [N,3,H,W]"}),
            "weights": weights,
        },
        "training": training_record(args.train_command, log, root, "CIFAR-10 train (40,000 images) from "
                                    "shared/datasets/cifar10/train, through the codecs above"),
        "eval": {"dataset": f"CIFAR-10 test, first {len(test_x)} images",
                 "channel": "ideal AWGN, true SNR, full rate", **tables},
    }
    head = " | ".join(f"{k} steps" for k in EVAL_STEPS)
    rows = {metric: "\n".join(f"| {name} | {snr} | " + " | ".join(f"{by[str(k)]:{fmt}}" for k in EVAL_STEPS) + " |"
                              for name, per in tables[metric].items() for snr, by in per.items())
            for metric, fmt in (("psnr_db", ".2f"), ("ms_ssim", ".4f"))}
    started = init_lines(card["training"])
    codec_list = ", ".join(f"`{n}` `{h[:16]}...`" for n, h in card["codec_weights_sha256"].items())
    write_card(out, card, f"""# Model card: refiner

- Architecture: {card['architecture']}; {card['parameters']:,} parameters.
- Refines the output of: {', '.join(names)} (one model for all; conditioned on the receiver's SNR estimate).
- Steps: 0 is the JSCC output; 1 is the network's estimate of the residual's mean (a learned post-filter);
  more steps sample the posterior with DDIM, one network evaluation each. Max 15 (the header's 4-bit field).
{data_line(card['training'])}- Training command (run from `models/`): `{args.train_command}`
  ({card['training']['epochs']} of {card['training']['scheduled_epochs']} scheduled epochs,
  {card['training']['minutes']} minutes on this project's 2-core CPU machine, sharing it with other work).
{started}- Codec weights it learned from (weights.npz SHA-256): {codec_list}.
- Export: `python -m gsc_models.train_refiner --export ../runs/refiner/checkpoint.pt --out ../models/refiner --train-command ...`

## Eval: PSNR (dB); {card['eval']['dataset']}, {card['eval']['channel']}

| codec | SNR (dB) | {head} |
| --- | --- |{' --- |' * len(EVAL_STEPS)}
{rows['psnr_db']}

## Eval: MS-SSIM; same images and channel

| codec | SNR (dB) | {head} |
| --- | --- |{' --- |' * len(EVAL_STEPS)}
{rows['ms_ssim']}

""", spec.kind)
    print(json.dumps(card["eval"], indent=1))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codecs", default="swinjscc,deepjscc_sr,deepjscc", help="shipped codecs whose outputs it refines")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ssim-weight", type=float, default=0.0,
                   help="weight of 1 - MS-SSIM of the network's one-step image estimate, added to the v loss")
    p.add_argument("--t1-fraction", type=float, default=0.0,
                   help="fraction of each batch trained at t = 1, the one-step (post-filter) output")
    p.add_argument("--init", default=None, help="start from a shipped refiner folder (e.g. ../models/refiner)")
    p.add_argument("--snr-min", type=float, default=-2.0)
    p.add_argument("--snr-max", type=float, default=22.0)
    p.add_argument("--snr-input-jitter-db", type=float, default=0.5)
    p.add_argument("--data", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device for training (evaluation and export run on the CPU)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--export", default=None, help="checkpoint to export to ONNX + card into --out")
    p.add_argument("--train-command", default="", help="with --export: the exact command that trained it")
    p.add_argument("--eval-images", type=int, default=1000)
    args = p.parse_args(argv)
    return export(args) if args.export else train(args)


if __name__ == "__main__":
    raise SystemExit(main())
