"""Train a JSCC codec on CIFAR-10 over an AWGN channel with SNR drawn per image.

Example (the command behind models/deepjscc):
    python -m gsc_models.train --model deepjscc --epochs 12 --out runs/deepjscc

deepjscc_sr is the same network trained for successive refinement: each image
keeps a random number of its first complex latent channels (symbol groups), so
one model serves every CBR from 1/48 to 1/6 and each further group refines the
image. --init starts from a shipped model's weights.npz (fine-tuning).
Checkpoints are plain state dicts (load with torch.load(weights_only=True)).
"""
import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .cards import load_weights_npz
from .data import datasets_root, load_cifar10, manifest_sha256
from .deepjscc import DeepJSCC
from .layers import awgn, keep_groups
from .registry import MODELS, names


def psnr_db(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def transmit(model, x, snr, seen, groups=None):
    """Encoder -> (first `groups` symbol groups) -> AWGN -> decoder told `seen` dB."""
    z = model.encoder(x, snr)
    if groups is None:
        return model.decoder(awgn(z, snr), seen)
    z, mask = keep_groups(z, groups)
    return model.decoder(awgn(z, snr) * mask, seen)


@torch.no_grad()
def evaluate(model, images: torch.Tensor, snrs=(0, 10, 20), batch=500, seed=0, groups=None):
    """Mean PSNR per SNR (keys str(snr)); with groups, only that many symbol groups are sent."""
    model.eval()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    table = {}
    for snr in snrs:
        values = []
        for i in range(0, len(images), batch):
            x = images[i:i + batch]
            s = torch.full((len(x), 1), float(snr))
            g = None if groups is None else torch.full((len(x),), int(groups))
            values.append(psnr_db(x, transmit(model, x, s, s, g)))
        table[str(snr)] = float(torch.cat(values).mean())
    torch.random.set_rng_state(gen_state)
    model.train()
    return table


def batch_loss(x: torch.Tensor, y: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Training loss. "psnr" is -mean PSNR / 10 (per-image log10 MSE), so a 1 dB gain counts the same at
    every SNR; plain "mse" is dominated by the noisiest images of the batch."""
    if kind == "psnr":
        return -psnr_db(x, y).mean() / 10
    return torch.mean((x - y) ** 2)


def warmup_cosine(opt, total: int, warmup: int):
    """Linear warm-up over `warmup` steps, then cosine decay to 1% of the base rate at `total`."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)) + 0.01)


def flipped_batches(images: torch.Tensor, batch: int):
    """One epoch in a fresh random order, each image flipped left-right with probability 1/2."""
    perm = torch.randperm(len(images))
    for b in range(len(images) // batch):
        x = images[perm[b * batch:(b + 1) * batch]]
        flip = torch.rand(len(x)) < 0.5
        x[flip] = x[flip].flip(3)
        yield x


def to_tensor(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div_(255.0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=names("codec"), default="deepjscc")
    p.add_argument("--channels", type=int, default=64, help="deepjscc width (swinjscc: its defaults)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--loss", choices=("mse", "psnr"), default="mse",
                   help="mse: mean squared error over the batch; psnr: mean per-image log-MSE, which weighs "
                        "every SNR alike instead of letting the low-SNR images (largest errors) dominate")
    p.add_argument("--snr-min", type=float, default=-2.0)
    p.add_argument("--snr-max", type=float, default=22.0)
    p.add_argument("--snr-input-jitter-db", type=float, default=0.5,
                   help="std of the error added to the SNR the networks see, as a receiver's estimate has")
    p.add_argument("--data", default=None, help="datasets folder (default ../shared/datasets)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--init", default=None, help="start from a shipped model folder's weights.npz (e.g. ../models/deepjscc)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="folder for checkpoints and the training log")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = datasets_root(args.data)
    train_u8, _, _ = load_cifar10("train", root, args.limit)
    test_u8, _, _ = load_cifar10("test", root, 1000)
    train = to_tensor(train_u8)
    test = to_tensor(test_u8)

    spec = MODELS[args.model]
    model = spec.build(channels=args.channels) if spec.build is DeepJSCC else spec.build()
    if args.init:
        model = load_weights_npz(args.model, args.init)
        model.train()
    model = model.to(args.device)
    n_groups = model.config["latent_complex"]
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = len(train) // args.batch
    total = steps_per_epoch * args.epochs
    sched = warmup_cosine(opt, total, min(500, total // 4 + 1))
    log = {"args": vars(args), "data_manifest_sha256": manifest_sha256(root),
           "n_train": len(train), "params": sum(p.numel() for p in model.parameters()), "epochs": []}
    start = time.time()
    for epoch in range(args.epochs):
        bar = tqdm(flipped_batches(train, args.batch), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        running = None
        for x in bar:
            x = x.to(args.device)
            snr = torch.empty(len(x), 1, device=args.device).uniform_(args.snr_min, args.snr_max)
            seen = snr + torch.randn_like(snr) * args.snr_input_jitter_db
            groups = torch.randint(1, n_groups + 1, (len(x),), device=args.device) \
                if spec.successive else None
            y = transmit(model, x, snr, seen, groups)
            loss = batch_loss(x, y, args.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            mse = float(((x - y.detach()) ** 2).mean())
            running = mse if running is None else 0.98 * running + 0.02 * mse
            bar.set_postfix(psnr=f"{10 * math.log10(1 / running):.2f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        model.cpu()
        table = evaluate(model, test)
        if spec.successive:
            table = {"all_groups": table, **{f"groups_{g}": evaluate(model, test, groups=g)
                                             for g in (2, 4)}}
        model.to(args.device)
        entry = {"epoch": epoch + 1, "minutes": round((time.time() - start) / 60, 2), "test1000_psnr_db": table}
        log["epochs"].append(entry)
        print(json.dumps(entry), flush=True)
        torch.save({"config": model.config, "state_dict": model.state_dict()}, out / "checkpoint.pt")
        (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
