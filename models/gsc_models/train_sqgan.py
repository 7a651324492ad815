"""Train SQ-GAN on CamVid train, then export its transmitter and receiver to ONNX.

    python -m gsc_models.train_sqgan --epochs 40 --out ../runs/sqgan
    python -m gsc_models.train_sqgan --export ../runs/sqgan/checkpoint.pt --out ../models/sqgan \\
        --train-command "..."
    python -m gsc_models.train_sqgan --map-prior --out ../models/sqgan    # the map prior alone, anew

Batches are random crops with flips of the 256x192 frames; the label map is the
shipped segmenter's own segmentation (what the transmitter sends). Each image
keeps a random fraction of its latents (uniform in [--min-fraction, 1]): the
top-scored by SAMM (a straight-through mask, so the scores learn which latents
the loss needs), or with probability --random-fraction a random set, so the
receiver also knows random masks (the sqgan-random comparison). The decoder is
conditioned on the map the receiver decodes from the map branch.

Losses: class-weighted L1 (median-frequency weights of the sent map's classes,
clipped to [0.5, 3]: small classes up, sky and road down), --ssim-weight x
(1 - MS-SSIM), --seg-weight x the frozen segmenter's cross entropy of the image
against the sent map, the map branch's cross entropy, ADM's latent error at the
masked positions, commitment 0.25 on both codebooks, and after --gan-start
epochs a hinge PatchGAN term with discriminator feature matching. No LPIPS or
VGG weights exist offline: MS-SSIM and feature matching stand in for the
perceptual loss of the original.
"""
import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from .camvid import CLASSES, WORKING_SIZE, class_iou, class_weights, confusion, load_camvid
from .cards import MODELS_DIR, data_line, file_entry, load_weights_npz, model_facts, training_record, weights_entry, \
    write_card
from .data import datasets_root
from .layers import ms_ssim
from .registry import MODELS
from .sqgan import DOWNSAMPLE, PatchDiscriminator, SqganRx, SqganTx, one_hot, top_mask
from .train import psnr_db, warmup_cosine
from .train_segmenter import MapConditionedRun, add_run_options, batches, predict, test_frames, to_tensor

NAME = "sqgan"
SEGMENTER = "camvid_segmenter"
EVAL_FRACTIONS = (0.1, 0.25, 0.4, 0.6, 1.0)
COMMITMENT = 0.25
PRIOR_ALPHA = 0.5


def payload_bits(height, width, fraction, config) -> int:
    """Bits of one image's payload with the map indices packed: level byte, map length, map indices,
    the kept set's rank, kept indices, two CRC-32 (gsc_blocks.core.sqgan packs each stream to whole
    bytes). The codec sends the prior-coded map instead when that is smaller, so this is an upper bound."""
    grid = (height // DOWNSAMPLE) * (width // DOWNSAMPLE)
    map_bits = grid * math.ceil(math.log2(config["map_codes"]))
    kept = min(grid, math.ceil(fraction * grid - 1e-9))
    mask_bits = 8 * math.ceil((math.comb(grid, kept) - 1).bit_length() / 8)
    index_bits = kept * math.ceil(math.log2(config["codes"]))
    return 8 + 16 + 8 * math.ceil(map_bits / 8) + 32 + mask_bits + 8 * math.ceil(index_bits / 8) + 32


def map_prior_tables(maps: np.ndarray, codes: int, alpha: float = PRIOR_ALPHA) -> dict:
    """The map prior gsc_blocks.core.sqgan.MapPrior reads, from map index grids [N, h, w]: float32
    probabilities of the first index, of an index given its left and given its above neighbour,
    counted with `alpha` added to every cell."""
    first = np.bincount(maps.ravel(), minlength=codes) + alpha
    left, above = np.full((codes, codes), alpha), np.full((codes, codes), alpha)
    np.add.at(left, (maps[:, :, :-1].ravel(), maps[:, :, 1:].ravel()), 1.0)
    np.add.at(above, (maps[:, :-1].ravel(), maps[:, 1:].ravel()), 1.0)
    return {"first": (first / first.sum()).astype(np.float32),
            "left": (left / left.sum(1, keepdims=True)).astype(np.float32),
            "above": (above / above.sum(1, keepdims=True)).astype(np.float32)}


def write_map_prior(model, segmenter, root, out: Path, command: str) -> dict:
    """Counts the map indices of CamVid train (the segmenter's maps through the model's map branch),
    writes out/map_prior.npz and returns its card entry."""
    images, _, _ = load_camvid("train", root)
    x = to_tensor(images)
    maps = predict(segmenter, x)
    tx = SqganTx(model.eval())
    with torch.no_grad():
        midx = torch.cat([tx(x[i:i + 16], one_hot(torch.from_numpy(maps[i:i + 16])))[2]
                          for i in range(0, len(x), 16)]).numpy()
    np.savez(out / "map_prior.npz", **map_prior_tables(midx, model.config["map_codes"]))
    return file_entry(out, "map_prior.npz", format="numpy .npz (no pickle): first [K], left [K,K], above [K,K] "
                      "float32 probabilities", data=f"map indices of CamVid train ({len(images)} frames at "
                      f"256x192, the segmenter's maps), {PRIOR_ALPHA} added to every count", command=command)


def random_mask(shape, fraction, generator=None) -> torch.Tensor:
    return top_mask(torch.rand(shape, generator=generator), fraction)


def step_terms(model, segmenter, disc, x, sent, weights, args, gan: bool, gen):
    seg = one_hot(sent)
    z, scores = model.encode(x, seg)
    q, idx, commit = model.vq(z)
    frac = args.min_fraction + (1 - args.min_fraction) * torch.rand(len(x), generator=gen)
    hard = top_mask(scores.detach(), frac)
    rand = torch.rand(len(x), generator=gen) < args.random_fraction
    if rand.any():
        hard[rand] = random_mask(hard[rand].shape, frac[rand], gen)
    mask = torch.where(rand[:, None, None], hard, hard + scores - scores.detach())
    mq, _, mcommit = model.map_vq(model.encode_map(seg))
    logits = model.decode_map(mq)
    rx_seg = one_hot(logits.argmax(1).detach())
    y, filled = model.decode(q, mask, rx_seg)
    pix_w = weights[sent.long()][:, None]
    terms = {"l1": (pix_w * (y - x).abs()).mean(),
             "ssim": args.ssim_weight * (1 - ms_ssim(y, x)).mean(),
             "seg": args.seg_weight * F.cross_entropy(segmenter(y), sent.long()),
             "map": F.cross_entropy(logits, sent.long()),
             "commit": COMMITMENT * (commit + mcommit)}
    holes = (1 - hard)[:, None]
    terms["adm"] = ((filled - model.vq.lookup(idx).detach()) ** 2 * holes).sum() / (holes.sum() * z.shape[1] + 1)
    if gan:
        fake, fake_feats = disc(y)
        with torch.no_grad():
            _, real_feats = disc(x)
        terms["gan"] = -args.gan_weight * fake.mean()
        terms["fm"] = args.fm_weight * sum(F.l1_loss(a, b) for a, b in zip(fake_feats, real_feats))
    return terms, y


@torch.no_grad()
def evaluate(model, segmenter, images_u8, truth, maps, fractions=EVAL_FRACTIONS, seed=0):
    """Per kept fraction and masking (SAMM, random): bpp, PSNR, MS-SSIM, mIoU of the segmenter on the
    reconstructions against the ground truth, and the receiver's map against the ground truth."""
    model.eval()
    tx, rx = SqganTx(model), SqganRx(model)
    x = to_tensor(images_u8)
    h, w = x.shape[-2:]
    table = {}
    for name in ("samm", "random"):
        for f in fractions:
            gen = torch.Generator().manual_seed(seed)
            ys, rx_maps = [], []
            for i in range(0, len(x), 8):
                idx, scores, midx = tx(x[i:i + 8], one_hot(torch.from_numpy(maps[i:i + 8])))
                mask = top_mask(scores, f) if name == "samm" else random_mask(scores.shape, f, gen)
                y, labels = rx(idx, mask, midx)
                ys.append(y)
                rx_maps.append(labels.numpy().astype(np.uint8))
            y = torch.round(torch.cat(ys) * 255) / 255
            iou = class_iou(confusion(predict(segmenter, y), truth))
            table[f"{name} {f:g}"] = {
                "masking": name, "fraction": f, "bpp": round(payload_bits(h, w, f, model.config) / (h * w), 5),
                "psnr_db": round(float(psnr_db(x, y).mean()), 3), "ms_ssim": round(float(ms_ssim(y, x).mean()), 5),
                "miou": round(float(np.nanmean(iou)), 4),
                "map_miou": round(float(np.nanmean(class_iou(confusion(np.concatenate(rx_maps), truth)))), 4)}
    model.train()
    return table


def train(args):
    run = MapConditionedRun("train_sqgan", args, SEGMENTER)
    x, segmenter = run.x, run.segmenter
    sent = torch.from_numpy(run.sent)
    weights = torch.from_numpy(np.clip(class_weights(run.sent), 0.5, 3.0))
    model = MODELS[NAME].build(width=args.width, dim=args.dim, codes=args.codes, map_dim=args.map_dim,
                               map_codes=args.map_codes, hidden=args.hidden)
    disc = PatchDiscriminator(args.disc_width)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.9))
    per_epoch = len(x) // args.batch
    sched = warmup_cosine(opt, per_epoch * args.epochs, min(200, per_epoch * args.epochs // 4 + 1))
    gen = torch.Generator().manual_seed(args.seed)
    run.log.update(class_weights=[round(float(v), 4) for v in weights],
                   params=sum(p.numel() for p in model.parameters()))
    for epoch in range(1, args.epochs + 1):
        gan = epoch > args.gan_start
        sums = {}
        for xb, sb in tqdm(batches(x, sent, args.batch, tuple(args.crop), gen), total=per_epoch,
                           desc=f"epoch {epoch}/{args.epochs}", leave=False):
            terms, y = step_terms(model, segmenter, disc, xb, sb, weights, args, gan, gen)
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if gan:
                real, _ = disc(xb)
                fake, _ = disc(y.detach())
                d_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                terms["disc"] = d_loss
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / per_epoch
        entry = {"epoch": epoch, "minutes": run.minutes(), "loss": {k: round(v, 5) for k, v in sums.items()},
                 "codes_in_use": int((model.vq.cluster_size > 0.5).sum())}
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            entry["val"] = evaluate(model, segmenter, run.val_u8, run.val_y, run.val_maps, fractions=(0.1, 0.4, 1.0))
        if run.end_epoch(entry, {"config": model.config, "state_dict": model.state_dict(), "disc": disc.state_dict()}):
            break
    return 0


def semantic_error(model, segmenter, x, sent, weights, gen, max_fraction):
    """Per latent, with a random mask (fractions up to max_fraction): the class-weighted cross entropy
    of the segmenter on the decoded image against the sent map plus the class-weighted L1 error, each
    over the latent's 16x16 patch and divided by its batch mean; and that mask. Where the receiver's
    image and semantics fail without a latent, it is relevant."""
    with torch.no_grad():
        seg = one_hot(sent)
        z, _ = model.encode(x, seg)
        idx = model.vq.indices(z)
        frac = 0.05 + (max_fraction - 0.05) * torch.rand(len(x), generator=gen)
        mask = random_mask(idx.shape, frac, gen)
        rx_seg = one_hot(model.decode_map(model.map_vq.lookup(model.map_vq.indices(model.encode_map(seg)))).argmax(1))
        y, _ = model.decode(model.vq.lookup(idx), mask, rx_seg)
        w = weights[sent.long()]
        ce = F.avg_pool2d((F.cross_entropy(segmenter(y), sent.long(), reduction="none") * w)[:, None], DOWNSAMPLE)
        l1 = F.avg_pool2d(((y - x).abs().mean(1) * w)[:, None], DOWNSAMPLE)
        return (ce / ce.mean() + l1 / l1.mean())[:, 0], mask


def finetune_samm(args):
    """Train SAMM alone (everything else frozen) to rank latents by semantic_error: per image, the
    masked latents' errors turned into ranks in [0, 1] are SAMM's targets (binary cross entropy)."""
    run = MapConditionedRun("train_sqgan", args, SEGMENTER)
    x, segmenter, sent = run.x, run.segmenter, torch.from_numpy(run.sent)
    state = torch.load(args.samm_from, map_location="cpu", weights_only=True)
    model = MODELS[NAME].build(**state["config"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    model.requires_grad_(False)
    model.samm.requires_grad_(True)
    weights = torch.from_numpy(np.clip(class_weights(run.sent), 0.5, 3.0))
    opt = torch.optim.Adam(model.samm.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    log = json.loads((Path(args.samm_from).parent / "train_log.json").read_text())
    record = {"command": run.log["command"], "epochs": []}
    for epoch in range(1, args.epochs + 1):
        total, n = 0.0, 0
        for xb, sb in tqdm(batches(x, sent, args.batch, tuple(args.crop), gen), total=len(x) // args.batch,
                           desc=f"samm {epoch}", leave=False):
            err, mask = semantic_error(model, segmenter, xb, sb, weights, gen, 0.5)
            with torch.no_grad():
                z_feat = model.encoder(2 * xb - 1)
            logits = model.samm.logits(z_feat, one_hot(sb))   # the sigmoid saturates: fit the logits
            holes = (1 - mask).bool()
            loss = 0.0
            for i in range(len(xb)):
                e = err[i][holes[i]]
                if e.numel() < 2:
                    continue
                target = e.argsort().argsort().float() / (e.numel() - 1)
                loss = loss + F.binary_cross_entropy_with_logits(logits[i][holes[i]], target)
            loss = loss / len(xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        entry = {"epoch": epoch, "minutes": run.minutes(), "loss": round(total / n, 5)}
        record["epochs"].append(entry)
        print(json.dumps(entry), flush=True)
        if args.minutes and entry["minutes"] >= args.minutes:
            break
    torch.save({"config": model.config, "state_dict": model.state_dict()}, run.out / "checkpoint.pt")
    log["samm_finetune"] = record
    (run.out / "train_log.json").write_text(json.dumps(log, indent=1))
    return 0


def _samm_line(training: dict) -> str:
    ft = training.get("samm_finetune")
    if not ft:
        return ""
    return (f"- Then SAMM alone, everything else frozen, trained to rank the latents by the error their masking "
            f"causes (segmenter cross entropy and L1, class-weighted): `{ft['command']}` ({ft['epochs']} epochs, "
            f"{ft['minutes']} minutes).\n")


def _map_masking_lines(card: dict) -> tuple[str, str]:
    """(the use/training lines, the eval section) of the card's map masking, if it has one."""
    mm = card.get("map_masking")
    if not mm:
        return "", ""
    tr = mm["training"]
    rows = "\n".join(f"| {r['masking']} | {r['map_fraction']:g} | {r['map_miou']:.3f} |" for r in mm["eval"]["table"].values())
    lines = (f"- Map masking (map_samm.onnx at the transmitter, map_adm.onnx at the receiver, map_weights.npz): "
             f"{mm['architecture']}; {mm['parameters']:,} parameters, trained with everything above frozen "
             f"(sqgan weights.npz SHA-256 `{tr['sqgan_weights_sha256'][:16]}...`): "
             + (f"`{tr['init']['command']}` ({tr['init']['epochs']} epochs, {tr['init']['minutes']} minutes), "
                "then " if tr.get("init") else "")
             + f"`{tr['command']}` ({tr['epochs']} epochs, {tr['minutes']} minutes); export: "
               f"`{tr['export_command']}`.\n")
    if mm.get("probe"):
        lines += (f"- Map probe (map_probe.onnx at the transmitter; the sqgan codec's map mask, `samm+probe`): "
                  f"{mm['probe']['method']}; export: `{mm['probe']['export_command']}`.\n")
    section = f"""## Eval of the map masking: {mm['eval']['dataset']}

mIoU against the ground truth of the receiver's decoded map, its masked map latents filled by the map ADM.

| masking | kept map fraction | map mIoU |
| --- | --- | --- |
{rows}

"""
    return lines, section


def card_markdown(card: dict) -> str:
    """card.md above its Files table, from card.json alone."""
    cfg, tr, ev = card["config"], card["training"], card["eval"]
    mm_lines, mm_section = _map_masking_lines(card)
    rows = "\n".join(f"| {r['masking']} | {r['fraction']:g} | {r['bpp']:.4f} | {r['psnr_db']:.2f} | "
                     f"{r['ms_ssim']:.3f} | {r['miou']:.3f} | {r['map_miou']:.3f} |" for r in ev["table"].values())
    prior = card["files"]["map_prior"]
    return f"""# Model card: {NAME}

- Use: the `sqgan` codec (gsc_blocks.core.sqgan): tx.onnx at the transmitter (encoder, SAMM, both
  quantizers), rx.onnx at the receiver (map decoder, ADM, SPADE decoder), map_prior.npz at both ends.
- Architecture: {card['architecture']}; {card['parameters']:,} parameters.
- Latent grid: 1/{DOWNSAMPLE} per side for the image ({cfg['codes']} codewords of {cfg['dim']}, {card['index_bits']}
  bits per kept index, the kept set sent as its rank among sets of its size) and for the label map
  ({cfg['map_codes']} codewords of {cfg['map_dim']}, {card['map_index_bits']} bits per index packed, or
  range-coded under the map prior when that is smaller; {"the lowest levels send a fraction of them, chosen by the map SAMM"
  + (" and the map probe" if card.get("map_masking", {}).get("probe") else "") + ", the rest all"
  if card.get("map_masking") else "all sent"}).
{data_line(tr)}- Training command (run from `models/`): `{tr['command']}`
  ({tr['epochs']} of {tr['scheduled_epochs']} scheduled epochs, {tr['minutes']} minutes on this project's
  2-core CPU machine; no GPU). A reduced model and schedule against the original's 256x512 and its GPU runs.
{_samm_line(tr)}{mm_lines}- Losses: class-weighted L1, MS-SSIM and discriminator feature matching in place of the perceptual loss (no
  LPIPS/VGG weights offline), the frozen `{card['segmenter']}`'s cross entropy, hinge PatchGAN, codebook
  commitment {COMMITMENT}; EMA codebooks (0.99) with dead-code restarts.
- Label maps: `{card['segmenter']}` (weights.npz SHA-256 `{card['segmenter_weights_sha256'][:16]}...`).
- Export: `{tr['export_command']}`
- Map prior (map_prior.npz): {prior['data']}; `{prior['command']}`.

## Eval: {ev['dataset']}

mIoU by `{card['segmenter']}` against the ground truth; originals: {ev['original_miou']:.4f}. bpp counts every
payload bit (both streams, kept-set rank, level byte, map length, CRCs) with the map indices packed at
{card['map_index_bits']} bits; the codec sends the prior-coded map when that is smaller, so it sends at
most this (`bench codec` reports what it sends). "map mIoU" scores the receiver's decoded map itself.

| masking | kept fraction | bpp | PSNR (dB) | MS-SSIM | mIoU | map mIoU |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

{mm_section}"""


def rebuild_map_prior(args):
    """--map-prior: the map prior of the model exported in --out (its weights.npz), counted anew on
    CamVid train; card.json and card.md updated (the eval table's bpp with the current payload)."""
    out = Path(args.out)
    card = json.loads((out / "card.json").read_text())
    model = load_weights_npz(NAME, out)
    segmenter = load_weights_npz(SEGMENTER, MODELS_DIR / SEGMENTER)
    h, w = WORKING_SIZE
    card["files"]["map_prior"] = write_map_prior(model, segmenter, datasets_root(args.data), out,
                                                 f"python -m gsc_models.train_sqgan --map-prior --out {args.out}")
    for row in card["eval"]["table"].values():
        row["bpp"] = round(payload_bits(h, w, row["fraction"], model.config) / (h * w), 5)
    write_card(out, card, card_markdown(card), MODELS[NAME].kind)
    print(json.dumps(card["files"]["map_prior"], indent=1))
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
    gh, gw = h // DOWNSAMPLE, w // DOWNSAMPLE
    dyn = {0: "batch", 2: "height", 3: "width"}
    grid = {0: "batch", 1: "grid_h", 2: "grid_w"}
    torch.onnx.export(SqganTx(model), (torch.rand(1, 3, h, w), torch.zeros(1, 11, h, w)), out / "tx.onnx",
                      input_names=["image", "labels"], output_names=["indices", "scores", "map_indices"],
                      dynamic_axes={"image": dyn, "labels": dyn, "indices": grid, "scores": grid,
                                    "map_indices": grid}, opset_version=17, dynamo=False)
    idx = torch.zeros(1, gh, gw, dtype=torch.long)
    torch.onnx.export(SqganRx(model), (idx, torch.ones(1, gh, gw), idx), out / "rx.onnx",
                      input_names=["indices", "mask", "map_indices"], output_names=["image", "labels"],
                      dynamic_axes={"indices": grid, "mask": grid, "map_indices": grid, "image": dyn,
                                    "labels": {0: "batch", 1: "height", 2: "width"}}, opset_version=17,
                      dynamo=False)
    weights = weights_entry(model, out)
    log = json.loads((Path(args.export).parent / "train_log.json").read_text())
    root, test_u8, test_y, segmenter, maps, original = test_frames(args, SEGMENTER)
    table = evaluate(model, segmenter, test_u8, test_y, maps)
    cfg = model.config
    card = {
        "name": NAME,
        "kind": spec.kind,
        "codecs": ["sqgan", "sqgan-random"],
        "segmenter": SEGMENTER,
        "segmenter_weights_sha256": log["segmenter_weights_sha256"],
        **model_facts(spec, model),
        "classes": CLASSES,
        "downsample": DOWNSAMPLE,
        "size_multiple": DOWNSAMPLE,
        "index_bits": math.ceil(math.log2(cfg["codes"])),
        "map_index_bits": math.ceil(math.log2(cfg["map_codes"])),
        "files": {
            "tx": file_entry(out, "tx.onnx", inputs={
                "image": "float32 [N,3,H,W] in [0,1], H and W multiples of 16",
                "labels": "float32 [N,11,H,W] one-hot label map (the segmenter's), classes in card order"},
                outputs={"indices": "int64 [N,H/16,W/16] image codebook indices",
                         "scores": "float32 [N,H/16,W/16] SAMM relevance in (0,1)",
                         "map_indices": "int64 [N,H/16,W/16] map codebook indices"}),
            "rx": file_entry(out, "rx.onnx", inputs={
                "indices": "int64 [N,H/16,W/16] (any value where mask is 0)",
                "mask": "float32 [N,H/16,W/16] 1 where the index was sent",
                "map_indices": "int64 [N,H/16,W/16]"},
                outputs={"image": "float32 [N,3,H,W] in [0,1]", "labels": "int64 [N,H,W] the receiver's map"}),
            "weights": weights,
            "map_prior": write_map_prior(model, segmenter, root, out,
                                         f"python -m gsc_models.train_sqgan --export {args.export} --out {out}"),
        },
        "training": {**training_record(args.train_command or log["command"], log, root,
                                       "CamVid train (367 frames) at 256x192, random crops and flips, label maps "
                                       "from the segmenter"),
                     "losses": {k: log["args"][k] for k in ("ssim_weight", "seg_weight", "gan_weight", "fm_weight",
                                                            "gan_start", "random_fraction", "min_fraction")},
                     "class_weights": dict(zip(CLASSES, log["class_weights"])),
                     **({"samm_finetune": {"command": log["samm_finetune"]["command"],
                                           "epochs": len(log["samm_finetune"]["epochs"]),
                                           "minutes": log["samm_finetune"]["epochs"][-1]["minutes"]}}
                        if log.get("samm_finetune") else {}),
                     "export_command": f"python -m gsc_models.train_sqgan --export {args.export} --out ../models/sqgan"},
        "eval": {"dataset": f"CamVid test, first {len(test_u8)} frames at 256x192", "segmenter": SEGMENTER,
                 "original_miou": round(original, 4), "table": table},
    }
    write_card(out, card, card_markdown(card), spec.kind)
    print(json.dumps(card["eval"], indent=1))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--dim", type=int, default=64, help="image latent and codeword size")
    p.add_argument("--codes", type=int, default=1024, help="image codebook size")
    p.add_argument("--map-dim", type=int, default=32)
    p.add_argument("--map-codes", type=int, default=128, help="label-map codebook size")
    p.add_argument("--hidden", type=int, default=16, help="channels of the label-map features SPADE reads")
    p.add_argument("--disc-width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-fraction", type=float, default=0.05)
    p.add_argument("--random-fraction", type=float, default=0.2, help="share of images masked at random")
    p.add_argument("--ssim-weight", type=float, default=0.3)
    p.add_argument("--seg-weight", type=float, default=0.1)
    p.add_argument("--gan-weight", type=float, default=0.02)
    p.add_argument("--fm-weight", type=float, default=0.5)
    p.add_argument("--gan-start", type=int, default=10, help="epochs before the GAN terms join")
    add_run_options(p)
    p.add_argument("--samm-from", default=None,
                   help="checkpoint: train SAMM alone to rank latents by the error (segmenter cross entropy "
                        "and L1) their masking causes (--epochs, --minutes, --lr); writes checkpoint.pt and train_log.json into --out")
    p.add_argument("--map-prior", action="store_true",
                   help="count the map prior of the model exported in --out anew (CamVid train) and update its card")
    args = p.parse_args(argv)
    if args.map_prior:
        return rebuild_map_prior(args)
    if args.samm_from:
        return finetune_samm(args)
    return export(args) if args.export else train(args)


if __name__ == "__main__":
    raise SystemExit(main())
