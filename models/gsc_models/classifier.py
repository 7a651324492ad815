"""CIFAR-10 classifier: the semantic metric (top-1 accuracy on received images).

    python -m gsc_models.classifier --epochs 15 --out models/cifar_classifier

Trains a small VGG-style CNN (batch norm, random crop + flip) on CIFAR-10 train,
then writes classifier.onnx, weights.npz, card.json and card.md, with the
top-1 accuracy on all 10,000 test images measured here. A received image is
judged by whether this classifier still gives it its true label.
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

from .cards import data_line, file_entry, git_commit, model_facts, weights_entry, write_card
from .cifar_classifier import CifarClassifier  # noqa: F401  (callers that import it from here)
from .data import datasets_root, load_cifar10, manifest_sha256
from .registry import MODELS


def to_tensor(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 255.0


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip per image."""
    n = x.shape[0]
    padded = nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2, n), generator=generator)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch=1000) -> float:
    model.eval()
    hits = sum(int((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
               for i in range(0, len(images), batch))
    return hits / len(images)


def export(model, out: Path, args, log, test_acc, root):
    spec = MODELS["cifar_classifier"]
    model.eval()
    torch.onnx.export(model, (torch.rand(1, 3, 32, 32),), out / "classifier.onnx", input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    weights = weights_entry(model, out)
    _, _, classes = load_cifar10("test", root, 1)
    card = {
        "name": out.name,
        "kind": spec.kind,
        **model_facts(spec, model),
        "classes": classes,
        "files": {
            "classifier": file_entry(out, "classifier.onnx", inputs={"image": "float32 [N,3,32,32] in [0,1] (RGB)"},
                                     outputs={"logits": "float32 [N,10], classes in card order"}),
            "weights": weights,
        },
        "training": {
            "command": log["command"],
            "data": "CIFAR-10 train (40,000 images) from shared/datasets/cifar10/train, random crop and flip",
            "data_manifest_sha256": manifest_sha256(root),
            "epochs": args.epochs,
            "minutes": log["minutes"],
            "git_commit": git_commit(),
        },
        "eval": {"dataset": "CIFAR-10 test, all 10000 images", "top1_accuracy": round(test_acc, 4)},
    }
    write_card(out, card, f"""# Model card: {out.name}

- Use: the semantic metric of the benchmarks (top-1 accuracy of received images vs originals).
- Architecture: {card['architecture']}; {card['parameters']:,} parameters.
{data_line(card['training'])}- Training command (run from `models/`): `{log['command']}`
  ({args.epochs} epochs, {log['minutes']} minutes on this project's 2-core CPU machine).

## Eval

| dataset | top-1 accuracy |
| --- | --- |
| {card['eval']['dataset']} | {test_acc:.4f} |

""", spec.kind)
    return card


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--data", default=None, help="datasets folder (default ../shared/datasets)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="model folder to write (e.g. models/cifar_classifier)")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    root = datasets_root(args.data)
    train_u8, train_y, _ = load_cifar10("train", root, args.limit)
    test_u8, test_y, _ = load_cifar10("test", root)
    x, y = to_tensor(train_u8), torch.from_numpy(train_y)
    xt, yt = to_tensor(test_u8).to(args.device), torch.from_numpy(test_y).to(args.device)
    model = MODELS["cifar_classifier"].build(args.width).to(args.device)
    steps = args.epochs * ((len(x) + args.batch - 1) // args.batch)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    bar = tqdm(total=steps, desc="classifier", unit="batch")
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), args.batch):
            idx = order[i:i + args.batch]
            xb = augment(x[idx], gen).to(args.device)
            loss = nn.functional.cross_entropy(model(xb), y[idx].to(args.device), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        bar.write(f"epoch {epoch + 1}: test top-1 {accuracy(model, xt[:2000], yt[:2000]):.4f} (first 2000)")
    bar.close()
    model = model.cpu()
    test_acc = accuracy(model, xt.cpu(), yt.cpu())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = {"command": "python -m gsc_models.classifier " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
           "minutes": round((time.time() - start) / 60, 1)}
    card = export(model, out, args, log, test_acc, root)
    print(json.dumps(card["eval"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
