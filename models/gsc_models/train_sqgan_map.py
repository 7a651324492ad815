"""Train SQ-GAN's label-map masking (map SAMM and map ADM) on the shipped sqgan, then export it.

    python -m gsc_models.train_sqgan_map --out ../runs/sqgan_map
    python -m gsc_models.train_sqgan_map --init ../runs/sqgan_map/checkpoint.pt --schedule samm-st:3,adm-mix:2 \
        --out ../runs/sqgan_map2
    python -m gsc_models.train_sqgan_map --export ../runs/sqgan_map2/checkpoint.pt --out ../models/sqgan
    python -m gsc_models.train_sqgan_map --export-probe --out ../models/sqgan

Everything of models/sqgan stays frozen (its files keep their SHA-256). The data
are the map branch's codebook indices of CamVid train: the segmenter's maps,
--crops crops per frame offset by 0-15 pixels (less than a latent) and flipped at
random. --schedule runs these stages, each for its epochs (default
adm:6,samm:3,adm-mix:3):
1. adm: the map ADM with random masks, kept fraction uniform in
   [--min-fraction, 1]; loss = cross entropy over the map codebook at the masked
   positions + the class-weighted cross entropy (median-frequency weights) of the
   map that the frozen map decoder draws from the ADM's soft estimate (the
   expected codeword) against the sent map.
2. samm: the map SAMM, the ADM frozen: the class-weighted cross entropy of
   the decoded map per latent (its 16x16 patch) under random masks, turned into
   ranks among the masked latents, are its targets (binary cross entropy on the
   logits), as the image SAMM was trained.
3. adm-mix: the map ADM again, half the masks the SAMM's top fraction, half
   random, so it fills both the sqgan and the sqgan-random codecs' masks.
4. samm-st: the map SAMM, the ADM frozen, through a straight-through top
   fraction (hard mask + scores - detached scores): the decoded map's loss
   (as in adm) tells each score how much keeping its latent helps, given the
   other latents kept. Selecting by the error a latent's masking causes on
   its own (samm) leaves large uniform regions without any kept latent;
   this learns that a region's first latent matters.
--export writes map_samm.onnx, map_adm.onnx and map_weights.npz into --out (the
sqgan folder) and adds them, the training record and an eval table to its card.
--export-probe then writes map_probe.onnx, with which the transmitter refines the
map SAMM's choice (sqgan.refined_map_mask), and evaluates that masking too.
"""
import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from .camvid import class_iou, class_weights, confusion, load_camvid
from .cards import MODELS_DIR, file_entry, load_weights_npz, save_weights_npz, write_card
from .data import datasets_root, manifest_sha256
from .registry import MODELS
from .sqgan import (DOWNSAMPLE, PROBE_FIRST, PROBE_ROUNDS, MapAdmRx, MapMasking, MapProbeTx, MapSammTx,
                    one_hot, refined_map_mask, top_mask)
from .train_segmenter import predict, to_tensor
from .train_sqgan import card_markdown, random_mask

NAME = "sqgan"
SEGMENTER = "camvid_segmenter"
EVAL_FRACTIONS = (0.25, 0.4, 0.6, 1.0)


@torch.no_grad()
def map_data(sqgan, maps: np.ndarray, crops: int, generator):
    """(map indices [M,h-1,w-1] latents, sent maps [M,H-16,W-16]) of `crops` crops per frame."""
    maps = torch.from_numpy(maps)
    n, h, w = maps.shape
    grids, sents = [], []
    for _ in range(crops):
        dy, dx = (int(v) for v in torch.randint(0, DOWNSAMPLE, (2,), generator=generator))
        part = maps[:, dy:dy + h - DOWNSAMPLE, dx:dx + w - DOWNSAMPLE]
        flip = torch.rand(n, generator=generator) < 0.5
        part = torch.where(flip[:, None, None], part.flip(2), part)
        grids += [sqgan.map_vq.indices(sqgan.encode_map(one_hot(part[i:i + 32]))) for i in range(0, n, 32)]
        sents.append(part)
    return torch.cat(grids), torch.cat(sents)


def decoded_map(sqgan, mm, grid, mask, soft: bool):
    """(the ADM's logits over the codebook, the frozen map decoder's logits [N,11,H,W]) from the kept
    indices and the ADM's estimate elsewhere (its expected codeword when soft, else its argmax)."""
    logits = mm.fill_logits(grid, mask)
    est = torch.einsum("nkhw,kd->ndhw", logits.softmax(1), sqgan.map_vq.embed) if soft \
        else sqgan.map_vq.lookup(logits.argmax(1))
    m = mask[:, None]
    return logits, sqgan.decode_map(m * sqgan.map_vq.lookup(grid) + (1 - m) * est)


def masks(mm, grid, args, gen, samm_share: float):
    n = len(grid)
    frac = args.min_fraction + (1 - args.min_fraction) * torch.rand(n, generator=gen)
    mask = random_mask(grid.shape, frac, gen)
    use = torch.rand(n, generator=gen) < samm_share
    if use.any():
        with torch.no_grad():
            mask[use] = top_mask(mm.samm_logits(grid[use]), frac[use])
    return mask


def adm_loss(sqgan, mm, grid, sent, weights, mask):
    logits, map_logits = decoded_map(sqgan, mm, grid, mask, soft=True)
    holes = mask < 0.5
    code_ce = F.cross_entropy(logits.permute(0, 2, 3, 1)[holes], grid[holes]) if holes.any() else logits.sum() * 0
    pix = F.cross_entropy(map_logits, sent.long(), weight=weights)
    return code_ce, pix


def samm_loss(sqgan, mm, grid, sent, weights, gen):
    with torch.no_grad():
        frac = 0.1 + 0.5 * torch.rand(len(grid), generator=gen)
        mask = random_mask(grid.shape, frac, gen)
        _, map_logits = decoded_map(sqgan, mm, grid, mask, soft=False)
        ce = F.cross_entropy(map_logits, sent.long(), reduction="none") * weights[sent.long()]
        err = F.avg_pool2d(ce[:, None], DOWNSAMPLE)[:, 0]
    logits = mm.samm_logits(grid)
    loss, count = 0.0, 0
    for i in range(len(grid)):
        holes = mask[i] < 0.5
        e = err[i][holes]
        if e.numel() < 2:
            continue
        target = e.argsort().argsort().float() / (e.numel() - 1)
        loss = loss + F.binary_cross_entropy_with_logits(logits[i][holes], target)
        count += 1
    return loss / max(count, 1)


def samm_st_loss(sqgan, mm, grid, sent, weights, args, gen):
    frac = args.min_fraction + (0.7 - args.min_fraction) * torch.rand(len(grid), generator=gen)
    scores = torch.sigmoid(mm.samm_logits(grid))
    hard = top_mask(scores.detach(), frac)
    _, pix = adm_loss(sqgan, mm, grid, sent, weights, hard + scores - scores.detach())
    return pix


@torch.no_grad()
def evaluate(sqgan, mm, maps, truth, fractions=EVAL_FRACTIONS, seed=0, probe=False) -> dict:
    """Per kept map fraction and masking (SAMM, random; with probe, also SAMM refined by the map
    probe, as the sqgan codec masks): mIoU against the ground truth of the map the receiver decodes
    (its map ADM filling the masked latents)."""
    mm.eval()
    table = {}
    x = torch.from_numpy(maps)
    grid = torch.cat([sqgan.map_vq.indices(sqgan.encode_map(one_hot(x[i:i + 16]))) for i in range(0, len(x), 16)])
    prober = MapProbeTx(mm, sqgan)
    for name in ("samm+probe", "samm", "random") if probe else ("samm", "random"):
        gen = torch.Generator().manual_seed(seed)
        for f in fractions:
            if name == "samm+probe":
                count = max(1, min(grid[0].numel(), math.ceil(f * grid[0].numel() - 1e-9)))
                mask = refined_map_mask(torch.sigmoid(mm.samm_logits(grid)), lambda m: torch.cat(
                    [prober(grid[i:i + 16], m[i:i + 16], x[i:i + 16].long()) for i in range(0, len(x), 16)]), count)
            else:
                mask = top_mask(mm.samm_logits(grid), f) if name == "samm" else random_mask(grid.shape, f, gen)
            filled = mm.fill(grid, mask)
            rx = torch.cat([sqgan.decode_map(sqgan.map_vq.lookup(filled[i:i + 16])).argmax(1)
                            for i in range(0, len(x), 16)]).numpy()
            table[f"{name} {f:g}"] = {"masking": name, "map_fraction": f,
                                      "map_miou": round(float(np.nanmean(class_iou(confusion(rx, truth)))), 4)}
    mm.train()
    return table


def train(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = datasets_root(args.data)
    start = time.time()
    sqgan = load_weights_npz(NAME, MODELS_DIR / NAME).requires_grad_(False)
    segmenter = load_weights_npz(SEGMENTER, MODELS_DIR / SEGMENTER).requires_grad_(False)
    train_u8, _, _ = load_camvid("train", root)
    sent_maps = predict(segmenter, to_tensor(train_u8))
    val_u8, val_y, _ = load_camvid("val", root)
    val_maps = predict(segmenter, to_tensor(val_u8))
    weights = torch.from_numpy(np.clip(class_weights(sent_maps), 0.5, 3.0))
    gen = torch.Generator().manual_seed(args.seed)
    grids, sents = map_data(sqgan, sent_maps, args.crops, gen)
    mm = MapMasking(sqgan.config["map_codes"], args.channels)
    log = {"args": vars(args), "command": "python -m gsc_models.train_sqgan_map " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]), "data_manifest_sha256": manifest_sha256(root),
        "sqgan_weights_sha256": json.loads((MODELS_DIR / NAME / "card.json").read_text())["files"]["weights"]["sha256"],
        "n_grids": len(grids), "params": sum(p.numel() for p in mm.parameters()), "epochs": []}
    if args.init:
        state = torch.load(args.init, map_location="cpu", weights_only=True)
        mm.load_state_dict(state["state_dict"])
        init_log = json.loads((Path(args.init).parent / "train_log.json").read_text())
        log["init"] = {"checkpoint": args.init, "command": init_log["command"],
                       "epochs": len(init_log["epochs"]), "minutes": init_log["epochs"][-1]["minutes"]}
    adm_params = [p for n, p in mm.named_parameters() if not n.startswith("samm")]
    samm_params = [p for n, p in mm.named_parameters() if n.startswith("samm")]
    opt_adm = torch.optim.Adam(adm_params, lr=args.lr)
    opt_samm = torch.optim.Adam(samm_params, lr=args.lr)
    stages = []
    for part in args.schedule.split(","):
        name, count = part.split(":")
        if name not in ("adm", "samm", "adm-mix", "samm-st"):
            raise SystemExit(f"--schedule {args.schedule!r}: stages are adm, samm, adm-mix and samm-st")
        stages += [(name, k == int(count) - 1) for k in range(int(count))]
    for epoch, (stage, last) in enumerate(stages, 1):
        sums, n = {}, 0
        order = torch.randperm(len(grids), generator=gen)
        for i in tqdm(range(0, len(grids) - args.batch + 1, args.batch), desc=f"{stage} {epoch}", leave=False):
            idx = order[i:i + args.batch]
            grid, sent = grids[idx], sents[idx]
            if stage == "samm":
                loss = samm_loss(sqgan, mm, grid, sent, weights, gen)
                terms = {"samm": loss}
                opt = opt_samm
            elif stage == "samm-st":
                loss = samm_st_loss(sqgan, mm, grid, sent, weights, args, gen)
                terms = {"samm_st_pixel_ce": loss}
                opt = opt_samm
                opt_adm.zero_grad(set_to_none=True)
            else:
                mask = masks(mm, grid, args, gen, 0.0 if stage == "adm" else 0.5)
                code_ce, pix = adm_loss(sqgan, mm, grid, sent, weights, mask)
                loss = code_ce + args.pixel_weight * pix
                terms = {"code_ce": code_ce, "pixel_ce": pix}
                opt = opt_adm
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
        entry = {"epoch": epoch, "stage": stage, "minutes": round((time.time() - start) / 60, 2),
                 "loss": {k: round(v / n, 5) for k, v in sums.items()}}
        if last:
            entry["val"] = evaluate(sqgan, mm, val_maps[:args.eval_images], val_y[:args.eval_images])
        log["epochs"].append(entry)
        print(json.dumps(entry), flush=True)
        torch.save({"config": mm.config, "state_dict": mm.state_dict()}, out / "checkpoint.pt")
        (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return 0


def load_map_masking(folder) -> MapMasking:
    """The shipped map masking of an sqgan folder (its card's map_masking config, map_weights.npz)."""
    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text())
    mm = MapMasking(**card["map_masking"]["config"])
    with np.load(folder / card["files"]["map_weights"]["path"], allow_pickle=False) as data:
        mm.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    return mm.eval()


def export(args):
    state = torch.load(args.export, map_location="cpu", weights_only=True)
    mm = MapMasking(**state["config"])
    mm.load_state_dict(state["state_dict"])
    mm.eval()
    out = Path(args.out)
    card = json.loads((out / "card.json").read_text())
    sqgan = load_weights_npz(NAME, out)
    grid = {0: "batch", 1: "grid_h", 2: "grid_w"}
    idx = torch.zeros(1, 12, 16, dtype=torch.long)
    torch.onnx.export(MapSammTx(mm), (idx,), out / "map_samm.onnx", input_names=["map_indices"],
                      output_names=["map_scores"], dynamic_axes={"map_indices": grid, "map_scores": grid},
                      opset_version=17, dynamo=False)
    torch.onnx.export(MapAdmRx(mm), (idx, torch.ones(1, 12, 16)), out / "map_adm.onnx",
                      input_names=["map_indices", "map_mask"], output_names=["filled"],
                      dynamic_axes={"map_indices": grid, "map_mask": grid, "filled": grid},
                      opset_version=17, dynamo=False)
    save_weights_npz(mm, out / "map_weights.npz")
    log = json.loads((Path(args.export).parent / "train_log.json").read_text())
    root = datasets_root(args.data)
    segmenter = load_weights_npz(SEGMENTER, MODELS_DIR / SEGMENTER)
    test_u8, test_y, _ = load_camvid("test", root)
    test_u8, test_y = test_u8[:args.eval_images], test_y[:args.eval_images]
    card["files"].update({
        "map_samm": file_entry(out, "map_samm.onnx", inputs={"map_indices": "int64 [N,H/16,W/16]"},
                               outputs={"map_scores": "float32 [N,H/16,W/16] map SAMM relevance in (0,1)"}),
        "map_adm": file_entry(out, "map_adm.onnx", inputs={
            "map_indices": "int64 [N,H/16,W/16] (any value where map_mask is 0)",
            "map_mask": "float32 [N,H/16,W/16] 1 where the map index was sent"},
            outputs={"filled": "int64 [N,H/16,W/16] every map index, the sent ones kept"}),
        "map_weights": file_entry(out, "map_weights.npz",
                                  format="numpy .npz of the map masking's torch state dict (no pickle)")})
    card["map_masking"] = {
        "config": mm.config, "parameters": sum(p.numel() for p in mm.parameters()),
        "architecture": "map SAMM: codebook-index embedding, conv3x3, two residual blocks, 1x1 to a logit "
                        "(sigmoid); map ADM: embedding with a mask token, conv3x3 on [embedding, mask], residual "
                        "blocks and two mask-weighted self-attention layers, 1x1 to logits over the map codebook",
        "training": {"command": log["command"], "epochs": len(log["epochs"]),
                     "minutes": log["epochs"][-1]["minutes"], **({"init": log["init"]} if log.get("init") else {}), "data_manifest_sha256": log["data_manifest_sha256"],
                     "sqgan_weights_sha256": log["sqgan_weights_sha256"],
                     "export_command": f"python -m gsc_models.train_sqgan_map --export {args.export} "
                                       "--out ../models/sqgan"},
        "eval": {"dataset": f"CamVid test, first {len(test_u8)} frames at 256x192",
                 "table": evaluate(sqgan, mm, predict(segmenter, to_tensor(test_u8)), test_y)}}
    write_card(out, card, card_markdown(card), MODELS[NAME].kind)
    print(json.dumps(card["map_masking"]["eval"], indent=1))
    return 0


def export_probe(args):
    """map_probe.onnx into the sqgan folder --out, from its shipped weights and map masking (nothing
    is trained): the transmitter's view of the receiver's map, for the refined map mask."""
    out = Path(args.out)
    card = json.loads((out / "card.json").read_text())
    sqgan = load_weights_npz(NAME, out).eval()
    mm = load_map_masking(out)
    idx, mask, labels = torch.zeros(1, 12, 16, dtype=torch.long), torch.ones(1, 12, 16), \
        torch.zeros(1, 192, 256, dtype=torch.long)
    grid, pixels = {0: "batch", 1: "grid_h", 2: "grid_w"}, {0: "batch", 1: "height", 2: "width"}
    torch.onnx.export(MapProbeTx(mm, sqgan), (idx, mask, labels), out / "map_probe.onnx",
                      input_names=["map_indices", "map_mask", "labels"], output_names=["map_error"],
                      dynamic_axes={"map_indices": grid, "map_mask": grid, "labels": pixels, "map_error": grid},
                      opset_version=17, dynamo=False)
    card["files"]["map_probe"] = file_entry(out, "map_probe.onnx", inputs={
        "map_indices": "int64 [N,H/16,W/16] every map index", "map_mask": "float32 [N,H/16,W/16] 1 where sent",
        "labels": "int64 [N,H,W] the sent label map"},
        outputs={"map_error": "float32 [N,H/16,W/16] share of each latent's pixels the receiver's map gets wrong"})
    root = datasets_root(args.data)
    segmenter = load_weights_npz(SEGMENTER, MODELS_DIR / SEGMENTER)
    test_u8, test_y, _ = load_camvid("test", root)
    test_u8, test_y = test_u8[:args.eval_images], test_y[:args.eval_images]
    masking = card["map_masking"]
    masking["probe"] = {
        "first": PROBE_FIRST, "rounds": PROBE_ROUNDS,
        "method": f"the map SAMM's top {PROBE_FIRST:g} of the kept count, then in {PROBE_ROUNDS} rounds the masked "
                  "latents where map_probe (the map ADM's fill through the frozen map decoder, against the sent "
                  "map) errs most, ties to the higher SAMM score; nothing trained",
        "export_command": "python -m gsc_models.train_sqgan_map --export-probe --out ../models/sqgan"}
    masking["eval"] = {"dataset": f"CamVid test, first {len(test_u8)} frames at 256x192",
                       "table": evaluate(sqgan, mm, predict(segmenter, to_tensor(test_u8)), test_y, probe=True)}
    write_card(out, card, card_markdown(card), MODELS[NAME].kind)
    print(json.dumps(masking["eval"], indent=1))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--schedule", default="adm:6,samm:3,adm-mix:3", help="stages and their epochs (see above)")
    p.add_argument("--init", default=None, help="checkpoint to start from (its log is recorded)")
    p.add_argument("--epochs", type=int, default=None,
                   help="instead of --schedule: adm for half the epochs, samm for a quarter, adm-mix for the rest")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crops", type=int, default=8, help="crops per training frame")
    p.add_argument("--min-fraction", type=float, default=0.1)
    p.add_argument("--pixel-weight", type=float, default=1.0)
    p.add_argument("--eval-images", type=int, default=101)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--export", default=None, help="checkpoint to export into --out (the sqgan folder)")
    p.add_argument("--export-probe", action="store_true",
                   help="write map_probe.onnx into --out (the sqgan folder) from its shipped files")
    args = p.parse_args(argv)
    if args.export_probe:
        return export_probe(args)
    if args.epochs:
        first, second = args.epochs // 2, max(1, args.epochs // 4)
        args.schedule = f"adm:{first},samm:{second},adm-mix:{args.epochs - first - second}"
    return export(args) if args.export else train(args)


if __name__ == "__main__":
    raise SystemExit(main())
