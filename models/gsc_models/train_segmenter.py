"""CamVid segmenter: the transmitter's semantic extractor and the receiver-side semantic metric.

    python -m gsc_models.train_segmenter --width 24 --seed 1 --epochs 40 --out ../models/camvid_segmenter

The U-Net of gsc_models.segmenter trained on CamVid train at the working resolution (256x192)
with random crops and flips, class-weighted cross entropy (median-frequency
balancing, void ignored), AdamW with a warm-up cosine schedule. The epoch with the
best val mIoU is kept; the card gives test mIoU and per-class IoU (233 images).
Writes segmenter.onnx, weights.npz, card.json and card.md.
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .camvid import CLASSES, VOID, WORKING_SIZE, class_iou, class_weights, confusion, load_camvid
from .cards import MODELS_DIR, data_line, file_entry, git_commit, load_weights_npz, model_facts, weights_entry, \
    write_card
from .data import datasets_root, manifest_sha256
from .registry import MODELS
from .segmenter import STRIDE, WithFeatures


def to_tensor(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 255.0


def batches(images, labels, batch, crop, generator):
    """Shuffled batches of random crops (crop = (h, w)) with random horizontal flips."""
    n, h, w = labels.shape
    order = torch.randperm(n, generator=generator)
    for start in range(0, n - batch + 1, batch):
        idx = order[start:start + batch]
        ys = torch.randint(0, h - crop[0] + 1, (batch,), generator=generator)
        xs = torch.randint(0, w - crop[1] + 1, (batch,), generator=generator)
        x = torch.stack([images[i, :, y:y + crop[0], x0:x0 + crop[1]] for i, y, x0 in zip(idx, ys, xs)])
        t = torch.stack([labels[i, y:y + crop[0], x0:x0 + crop[1]] for i, y, x0 in zip(idx, ys, xs)])
        flip = torch.rand(batch, generator=generator) < 0.5
        x[flip], t[flip] = x[flip].flip(3), t[flip].flip(2)
        yield x, t


@torch.no_grad()
def predict(model, images: torch.Tensor, batch: int = 8) -> np.ndarray:
    model.eval()
    return np.concatenate([model(images[i:i + batch]).argmax(1).numpy().astype(np.uint8)
                           for i in range(0, len(images), batch)])


class MapConditionedRun:
    """What a training conditioned on the shipped segmenter's maps starts from (SPIC's and SQ-GAN's):
    seeds and threads set, the output folder made, CamVid train (--limit) and the first --eval-images
    val frames, the frozen segmenter, its maps of the training frames (the maps a transmitter sends)
    and the log's header. end_epoch logs an epoch, saves the checkpoint and says when --minutes is up."""

    def __init__(self, module: str, args, segmenter_name: str):
        torch.manual_seed(args.seed)
        torch.set_num_threads(args.threads)
        self.args, self.out = args, Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.root = datasets_root(args.data)
        self.train_u8, _, _ = load_camvid("train", self.root)
        if args.limit:
            self.train_u8 = self.train_u8[:args.limit]
        val_u8, val_y, _ = load_camvid("val", self.root)
        self.val_u8, self.val_y = val_u8[:args.eval_images], val_y[:args.eval_images]
        self.segmenter = load_weights_npz(segmenter_name, MODELS_DIR / segmenter_name).requires_grad_(False)
        self.x = to_tensor(self.train_u8)
        self.sent = predict(self.segmenter, self.x)
        self.val_maps = predict(self.segmenter, to_tensor(self.val_u8))
        card = json.loads((MODELS_DIR / segmenter_name / "card.json").read_text())
        self.log = {"args": vars(args), "command": f"python -m gsc_models.{module} " + " ".join(
            shlex.quote(a) for a in sys.argv[1:]), "data_manifest_sha256": manifest_sha256(self.root),
            "segmenter_weights_sha256": card["files"]["weights"]["sha256"], "n_train": len(self.x), "epochs": []}
        self.start = time.time()

    def minutes(self) -> float:
        return round((time.time() - self.start) / 60, 2)

    def end_epoch(self, entry: dict, checkpoint: dict) -> bool:
        """Log the epoch, save the checkpoint and the log; True once --minutes is reached."""
        self.log["epochs"].append(entry)
        print(json.dumps(entry), flush=True)
        torch.save(checkpoint, self.out / "checkpoint.pt")
        (self.out / "train_log.json").write_text(json.dumps(self.log, indent=1))
        if self.args.minutes and entry["minutes"] >= self.args.minutes:
            print(f"stopping after epoch {entry['epoch']}: --minutes {self.args.minutes} reached", flush=True)
            return True
        return False


def add_run_options(p, minutes=True):
    """The options MapConditionedRun and test_frames read (and --export / --train-command)."""
    if minutes:
        p.add_argument("--minutes", type=float, default=0, help="stop after the epoch that passes this many minutes")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--eval-images", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--export", default=None, help="checkpoint to export to ONNX + card into --out")
    p.add_argument("--train-command", default="", help="with --export: the exact command that trained it")


def test_frames(args, segmenter_name: str):
    """A card's eval set: the datasets root, the first --eval-images CamVid test frames and labels, the
    segmenter, its maps of those frames and its mIoU on them (the originals')."""
    root = datasets_root(args.data)
    test_u8, test_y, _ = load_camvid("test", root)
    test_u8, test_y = test_u8[:args.eval_images], test_y[:args.eval_images]
    segmenter = load_weights_npz(segmenter_name, MODELS_DIR / segmenter_name)
    maps = predict(segmenter, to_tensor(test_u8))
    return root, test_u8, test_y, segmenter, maps, float(np.nanmean(class_iou(confusion(maps, test_y))))


def evaluate(model, images: torch.Tensor, labels: np.ndarray) -> dict:
    conf = confusion(predict(model, images), labels)
    iou = class_iou(conf)
    return {"miou": float(np.nanmean(iou)), "class_iou": {c: round(float(v), 4) for c, v in zip(CLASSES, iou)},
            "pixel_accuracy": float(np.diag(conf).sum() / conf.sum())}


OUTPUTS = {"logits": f"float32 [N,{len(CLASSES)},H,W], classes in card order",
           "features": "float32 [N,C]: the bottleneck averaged over the image (the segmenter-feature "
                       "Frechet distance's features)"}


def export_onnx(model, out: Path) -> dict:
    """Writes out/segmenter.onnx (outputs logits and features) and returns its card entry."""
    model.eval()
    h, w = WORKING_SIZE
    torch.onnx.export(WithFeatures(model), (torch.rand(1, 3, h, w),), out / "segmenter.onnx", input_names=["image"],
                      output_names=list(OUTPUTS), opset_version=17, dynamo=False,
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                    "logits": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}})
    return file_entry(out, "segmenter.onnx",
                      inputs={"image": "float32 [N,3,H,W] in [0,1] (RGB), H and W multiples of 8"}, outputs=OUTPUTS)


def reexport(folder: Path):
    """Rebuilds a shipped segmenter's ONNX file from its weights.npz (same weights, current outputs) and
    puts the new file's SHA-256 in its card."""
    card = json.loads((folder / "card.json").read_text())
    old = card["files"]["segmenter"]["sha256"]
    card["files"]["segmenter"] = export_onnx(load_weights_npz(card["name"], folder), folder)
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    md = folder / "card.md"
    md.write_text(md.read_text().replace(old, card["files"]["segmenter"]["sha256"]))
    print(f"{folder}: segmenter.onnx {card['files']['segmenter']['sha256']}")


def export(model, out: Path, args, log, test, root):
    spec = MODELS[args.name]
    h, w = WORKING_SIZE
    onnx_entry = export_onnx(model, out)
    card = {
        "name": args.name,
        "kind": spec.kind,
        **model_facts(spec, model),
        "classes": CLASSES,
        "void_label": VOID,
        "working_size": list(WORKING_SIZE),
        "size_multiple": STRIDE,
        "files": {
            "segmenter": onnx_entry,
            "weights": weights_entry(model, out),
        },
        "training": {
            "command": log["command"],
            "data": f"CamVid train (367 frames) at {w}x{h}, random {args.crop[1]}x{args.crop[0]} crops and "
                    "horizontal flips; the epoch with the best mIoU on CamVid val (101 frames) kept",
            "data_manifest_sha256": manifest_sha256(root),
            "epochs": args.epochs, "best_epoch": log["best_epoch"], "seed": args.seed,
            "minutes": log["minutes"], "git_commit": git_commit(),
        },
        "eval": {"dataset": f"CamVid test, all {test['n_images']} frames at {w}x{h}, void ignored",
                 "miou": round(test["miou"], 4), "pixel_accuracy": round(test["pixel_accuracy"], 4),
                 "class_iou": test["class_iou"], "val_miou": round(log["best_val_miou"], 4)},
    }
    rows = "\n".join(f"| {c} | {v:.4f} |" for c, v in test["class_iou"].items())
    write_card(out, card, f"""# Model card: {args.name}

- Use: the CamVid semantic extractor (SPIC's segmentation map at the transmitter) and the semantic
  metric (mIoU of a reconstruction's segmentation against the ground truth, beside the originals').
- Architecture: {card['architecture']}; {card['parameters']:,} parameters.
{data_line(card['training'])}- Training command (run from `models/`): `{log['command']}`
  ({args.epochs} epochs, best val epoch {log['best_epoch']}, {log['minutes']} minutes on this project's
  2-core CPU machine).

## Eval ({card['eval']['dataset']})

mIoU {test['miou']:.4f}, pixel accuracy {test['pixel_accuracy']:.4f} (val mIoU {log['best_val_miou']:.4f}).

| class | IoU |
| --- | --- |
{rows}

""", spec.kind)
    return card


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="camvid_segmenter", help="registered model name (gsc_models.registry)")
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, nargs=2, default=[144, 192], metavar=("H", "W"))
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=2, help="epochs between val evaluations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None, help="datasets folder (default ../shared/datasets)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train frames (tests)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="model folder to write (e.g. ../models/camvid_segmenter)")
    p.add_argument("--reexport", metavar="FOLDER", help="rebuild FOLDER's segmenter.onnx from its weights.npz")
    args = p.parse_args(argv)
    if args.reexport:
        return reexport(Path(args.reexport))
    if not args.out:
        p.error("--out is required to train")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    root = datasets_root(args.data)
    train_u8, train_y, _ = load_camvid("train", root)
    val_u8, val_y, _ = load_camvid("val", root)
    test_u8, test_y, _ = load_camvid("test", root)
    if args.limit:
        train_u8, train_y = train_u8[:args.limit], train_y[:args.limit]
        val_u8, val_y, test_u8, test_y = val_u8[:args.limit], val_y[:args.limit], test_u8[:args.limit], \
            test_y[:args.limit]
    x, y = to_tensor(train_u8), torch.from_numpy(train_y.astype(np.int64))
    xv, xt = to_tensor(val_u8), to_tensor(test_u8)
    model = MODELS[args.name].build(width=args.width)
    weights = torch.from_numpy(class_weights(train_y))
    loss_fn = nn.CrossEntropyLoss(weight=weights, ignore_index=VOID)
    steps = args.epochs * (len(x) // args.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(steps, 1), pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, best, best_state, best_epoch, history = time.time(), -1.0, None, 0, []
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses = []
        for xb, tb in tqdm(batches(x, y, args.batch, tuple(args.crop), gen), total=len(x) // args.batch,
                           desc=f"epoch {epoch}/{args.epochs}", leave=False):
            loss = loss_fn(model(xb), tb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss))
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "minutes": round((time.time() - start) / 60, 1)}
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            val = evaluate(model, xv, val_y)
            record["val_miou"] = round(val["miou"], 4)
            if val["miou"] > best:
                best, best_epoch = val["miou"], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append(record)
        print(json.dumps(record), flush=True)
    model.load_state_dict(best_state)
    test = {**evaluate(model, xt, test_y), "n_images": len(xt)}
    log = {"command": "python -m gsc_models.train_segmenter " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
           "minutes": round((time.time() - start) / 60, 1), "best_epoch": best_epoch, "best_val_miou": best,
           "history": history}
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    card = export(model, out, args, log, test, root)
    print(f"test mIoU {card['eval']['miou']} (best val epoch {best_epoch}); wrote {out}")


if __name__ == "__main__":
    main()
