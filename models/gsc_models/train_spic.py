"""Train SPIC's SPADE diffusion super-resolution model on CamVid train, then export it.

    python -m gsc_models.train_spic --epochs 60 --out ../runs/spic_sr
    python -m gsc_models.train_spic --export ../runs/spic_sr/checkpoint.pt --out ../models/spic_sr \\
        --train-command "..."

Each training frame (256x192) is degraded as SPIC's transmitter and receiver
degrade it (gsc_models.spic.coarse_image) at every coarse setting of SETTINGS,
once, before training; its label map is the shipped segmenter's own segmentation
(the map the transmitter sends), at full or half resolution (map_at). Batches
are random crops with flips. The loss is the refiner's v-prediction loss, plus
--ssim-weight x (1 - MS-SSIM) and --seg-weight x the frozen segmenter's
cross entropy (against the sent map) of the network's image estimate, so the
regenerated image keeps what the map says.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from .camvid import CLASSES, WORKING_SIZE, class_iou, confusion
from .cards import data_line, file_entry, model_facts, training_record, weights_entry, write_card
from .layers import ms_ssim
from .refiner import COSINE_OFFSET, RESIDUAL_SCALE, alpha_sigma
from .registry import MODELS
from .spic import SIZE_MULTIPLE, coarse_image, ddim_sample, map_at, one_hot
from .train import psnr_db, warmup_cosine
from .train_segmenter import MapConditionedRun, add_run_options, predict, test_frames, to_tensor

NAME = "spic_sr"
SEGMENTER = "camvid_segmenter"
# (downsampling factor, WebP quality) of the coarse images it learns from; the codec's rates use these
SETTINGS = ((4, 5), (4, 30), (4, 70), (2, 30))
MAP_FACTORS = (1, 2, 4)
EVAL_STEPS = (0, 1, 2, 4, 8)


def degraded(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [S, N, H, W, 3]: every image through every coarse setting."""
    return np.stack([np.stack([coarse_image(im, f, q) for im in images_u8]) for f, q in SETTINGS])


def batches(x, coarse, maps, batch, crop, generator):
    """Random (image, coarse setting, map factor, crop, flip) batches; one pass over the images."""
    n, _, h, w = x.shape
    order = torch.randperm(n, generator=generator)
    for start in range(0, n - batch + 1, batch):
        idx = order[start:start + batch]
        setting = torch.randint(0, len(SETTINGS), (batch,), generator=generator)
        mapf = torch.randint(0, len(MAP_FACTORS), (batch,), generator=generator)
        ys = torch.randint(0, (h - crop[0]) // 2 + 1, (batch,), generator=generator) * 2
        xs = torch.randint(0, (w - crop[1]) // 2 + 1, (batch,), generator=generator) * 2
        xb, cb, lb = [], [], []
        for i, s, m, y0, x0 in zip(idx.tolist(), setting.tolist(), mapf.tolist(), ys.tolist(), xs.tolist()):
            win = (slice(y0, y0 + crop[0]), slice(x0, x0 + crop[1]))
            xb.append(x[i, :, win[0], win[1]])
            cb.append(coarse[s, i, :, win[0], win[1]])
            lb.append(maps[m, i, win[0], win[1]])
        xb, cb, lb = torch.stack(xb), torch.stack(cb), torch.stack(lb)
        flip = torch.rand(batch, generator=generator) < 0.5
        xb[flip], cb[flip], lb[flip] = xb[flip].flip(3), cb[flip].flip(3), lb[flip].flip(2)
        yield xb, cb, lb


def loss_terms(model, segmenter, x, coarse, labels, args):
    r = RESIDUAL_SCALE * (x - coarse)
    t = torch.rand(len(x), 1)
    t[:int(round(args.t1_fraction * len(x)))] = 1.0
    a, s = alpha_sigma(t)
    a, s = a[:, :, None, None], s[:, :, None, None]
    eps = torch.randn_like(r)
    z = a * r + s * eps
    v = model(z, coarse, one_hot(labels), t)
    terms = {"v": torch.mean((v - (a * eps - s * r)) ** 2)}
    x0 = (coarse + (a * z - s * v) / RESIDUAL_SCALE).clamp(0.0, 1.0)
    if args.ssim_weight:
        terms["ssim"] = args.ssim_weight * torch.mean(1.0 - ms_ssim(x0, x))
    if args.seg_weight:
        terms["seg"] = args.seg_weight * F.cross_entropy(segmenter(x0), labels.long())
    return terms


@torch.no_grad()
def evaluate(model, segmenter, images_u8, truth, coarse_u8, maps, steps_list=EVAL_STEPS, seed=0):
    """Per coarse setting and step count: PSNR, MS-SSIM and the segmenter's mIoU of the regenerated
    images against the ground truth (map sent at full resolution)."""
    model.eval()
    x = to_tensor(images_u8)
    labels = one_hot(torch.from_numpy(maps))
    table = {}
    for s, (f, q) in enumerate(SETTINGS):
        coarse = to_tensor(coarse_u8[s])
        row = {}
        for k in steps_list:
            gen = torch.Generator().manual_seed(seed)
            y = torch.cat([ddim_sample(model, coarse[i:i + 4], labels[i:i + 4], k, gen) for i in range(0, len(x), 4)])
            y = torch.round(y * 255) / 255
            iou = class_iou(confusion(predict(segmenter, y), truth))
            row[str(k)] = {"psnr_db": round(float(psnr_db(x, y).mean()), 3),
                           "ms_ssim": round(float(ms_ssim(y, x).mean()), 5),
                           "miou": round(float(np.nanmean(iou)), 4)}
        table[f"factor {f}, WebP q{q}"] = row
    model.train()
    return table


def train(args):
    run = MapConditionedRun("train_spic", args, SEGMENTER)
    x, segmenter = run.x, run.segmenter
    maps = torch.from_numpy(np.stack([map_at(run.sent, f) for f in MAP_FACTORS]))
    coarse = torch.from_numpy(degraded(run.train_u8)).permute(0, 1, 4, 2, 3).contiguous()   # uint8 [S,N,3,H,W]
    val_coarse = degraded(run.val_u8)
    model = MODELS[NAME].build(channels=args.channels, hidden=args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    per_epoch = len(x) // args.batch
    sched = warmup_cosine(opt, per_epoch * args.epochs, min(200, per_epoch * args.epochs // 4 + 1))
    gen = torch.Generator().manual_seed(args.seed)
    run.log["params"] = sum(p.numel() for p in model.parameters())
    for epoch in range(1, args.epochs + 1):
        sums = {}
        for xb, cb, lb in tqdm(batches(x, coarse, maps, args.batch, tuple(args.crop), gen), total=per_epoch,
                               desc=f"epoch {epoch}/{args.epochs}", leave=False):
            terms = loss_terms(model, segmenter, xb, cb.float() / 255.0, lb, args)
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item() / per_epoch
        entry = {"epoch": epoch, "minutes": run.minutes(), "loss": {k: round(v, 5) for k, v in sums.items()}}
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            entry["val"] = evaluate(model, segmenter, run.val_u8, run.val_y, val_coarse, run.val_maps,
                                    steps_list=(0, 1, 4))
        if run.end_epoch(entry, {"config": model.config, "state_dict": model.state_dict()}):
            break
    return 0


def export(args):
    state = torch.load(args.export, map_location="cpu", weights_only=True)
    spec = MODELS[NAME]
    model = spec.build(**state["config"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    h, w = WORKING_SIZE
    n1 = torch.ones(1, 1)
    dyn = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(model, (torch.randn(1, 3, h, w), torch.rand(1, 3, h, w), torch.zeros(1, 11, h, w), n1),
                      out / "denoiser.onnx", input_names=["z_t", "coarse", "labels", "t"], output_names=["v"],
                      dynamic_axes={"z_t": dyn, "coarse": dyn, "labels": dyn, "t": {0: "batch"}, "v": dyn},
                      opset_version=17, dynamo=False)
    weights = weights_entry(model, out)
    log = json.loads((Path(args.export).parent / "train_log.json").read_text())
    root, test_u8, test_y, segmenter, maps, original = test_frames(args, SEGMENTER)
    table = evaluate(model, segmenter, test_u8, test_y, degraded(test_u8), maps)
    card = {
        "name": NAME,
        "kind": spec.kind,
        "codecs": ["spic", "cspic"],
        "segmenter": SEGMENTER,
        "segmenter_weights_sha256": log["segmenter_weights_sha256"],
        **model_facts(spec, model),
        "classes": CLASSES,
        "diffusion": {"schedule": "cosine", "cosine_offset": COSINE_OFFSET, "residual_scale": RESIDUAL_SCALE,
                      "prediction": "v", "sampler": "DDIM eta=0, t = steps/steps .. 1/steps",
                      "max_steps": 15, "size_multiple": SIZE_MULTIPLE},
        "degradation": {"coarse": "Pillow BOX downsampling by the factor, WebP at the quality (method 6), "
                                  "decoded, Pillow BICUBIC upsampling", "settings": [list(s) for s in SETTINGS],
                        "map": "the segmenter's argmax, sent at full, half or quarter resolution "
                               "(every k-th label from row and column k // 2, repeated)"},
        "files": {
            "denoiser": file_entry(out, "denoiser.onnx", inputs={
                "z_t": "float32 [N,3,H,W] noisy scaled residual",
                "coarse": "float32 [N,3,H,W] upsampled coarse image in [0,1]",
                "labels": "float32 [N,11,H,W] one-hot label map, classes in card order",
                "t": "float32 [N,1] in [0,1]"}, outputs={"v": "float32 [N,3,H,W]"}),
            "weights": weights,
        },
        "training": {**training_record(args.train_command or log["command"], log, root,
                                       "CamVid train (367 frames) at 256x192, random crops and flips, every coarse "
                                       "setting, label maps from the segmenter"),
                     "losses": {"ssim_weight": log["args"]["ssim_weight"], "seg_weight": log["args"]["seg_weight"],
                                "t1_fraction": log["args"]["t1_fraction"]}},
        "eval": {"dataset": f"CamVid test, first {len(test_u8)} frames at 256x192, map at full resolution",
                 "segmenter": SEGMENTER, "original_miou": round(original, 4), "table": table},
    }
    head = " | ".join(f"{k} steps" for k in EVAL_STEPS)
    rows = "\n".join(f"| {name} | " + " | ".join(
        f"{r[str(k)]['psnr_db']:.2f} / {r[str(k)]['ms_ssim']:.3f} / {r[str(k)]['miou']:.3f}" for k in EVAL_STEPS) + " |"
        for name, r in table.items())
    write_card(out, card, f"""# Model card: {NAME}

- Use: SPIC's and C-SPIC's receiver: regenerates the 256x192 frame from the upsampled coarse image and
  the label map (gsc_blocks.core.spic).
- Architecture: {card['architecture']}; {card['parameters']:,} parameters.
{data_line(card['training'])}- Training command (run from `models/`): `{card['training']['command']}`
  ({card['training']['epochs']} of {card['training']['scheduled_epochs']} scheduled epochs,
  {card['training']['minutes']} minutes on this project's 2-core CPU machine; no GPU).
- Label maps: `{SEGMENTER}` (weights.npz SHA-256 `{log['segmenter_weights_sha256'][:16]}...`).
- Export: `python -m gsc_models.train_spic --export ../runs/spic_sr/checkpoint.pt --out ../models/spic_sr`

## Eval: PSNR (dB) / MS-SSIM / mIoU ({SEGMENTER}); {card['eval']['dataset']}

mIoU of the originals: {original:.4f}. 0 steps is the upsampled coarse image.

| coarse image | {head} |
| --- |{' --- |' * len(EVAL_STEPS)}
{rows}

""", spec.kind)
    print(json.dumps(card["eval"], indent=1))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--hidden", type=int, default=16, help="channels of the label-map features SPADE reads")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ssim-weight", type=float, default=0.1)
    p.add_argument("--seg-weight", type=float, default=0.05)
    p.add_argument("--t1-fraction", type=float, default=0.25)
    add_run_options(p)
    args = p.parse_args(argv)
    return export(args) if args.export else train(args)


if __name__ == "__main__":
    raise SystemExit(main())
