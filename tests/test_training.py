"""The training entry points run end to end on the CPU (a tiny dataset built from the sample images)."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from gsc_models import data
from gsc_models.train import batch_loss, psnr_db

SAMPLES = Path(__file__).resolve().parent / "data" / "samples"
MODELS = Path(__file__).resolve().parents[1] / "models"
CLASSES = "airplane automobile bird cat deer dog frog horse ship truck"


@pytest.fixture()
def tiny_datasets(tmp_path, monkeypatch):
    """cifar10/{train,test} in the shared layout from the committed CIFAR samples; cache kept in tmp."""
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    base = tmp_path / "datasets" / "cifar10"
    for split in ("train", "test"):
        (base / split).mkdir(parents=True)
        for i, f in enumerate(sorted(SAMPLES.glob("cifar_*.png"))):
            Image.open(f).save(base / split / f"{i}_{f.stem.split('_')[2]}.webp", lossless=True)
    (base / "labels.txt").write_text(CLASSES.replace(" ", "\n") + "\n")
    return tmp_path / "datasets"


def test_psnr_loss_is_minus_mean_psnr_and_weighs_images_by_their_error():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.01)]).requires_grad_(True)
    loss = batch_loss(x, y, "psnr")
    assert loss.item() == pytest.approx(-(20 + 40) / 2 / 10, abs=1e-4)
    loss.backward()
    # d(log MSE)/dy = 2 (y - x) / (n MSE): the image with 100x less error gets 10x the gradient
    ratio = y.grad[1].abs().mean() / y.grad[0].abs().mean()
    assert ratio.item() == pytest.approx(10.0, rel=1e-3)
    assert batch_loss(x, y, "mse").item() == pytest.approx((0.01 + 0.0001) / 2, rel=1e-4)
    assert torch.allclose(psnr_db(x, y), torch.tensor([20.0, 40.0]), atol=1e-3)


@pytest.mark.parametrize("loss", ["mse", "psnr"])
def test_jscc_training_runs_on_cpu(tiny_datasets, tmp_path, loss):
    from gsc_models.train import main
    out = tmp_path / "run"
    assert main(["--model", "deepjscc", "--channels", "8", "--epochs", "1", "--batch", "4", "--loss", loss,
                 "--data", str(tiny_datasets), "--device", "cpu", "--out", str(out)]) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["args"]["loss"] == loss and log["n_train"] == 8 and len(log["epochs"]) == 1
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["config"] == {"channels": 8, "latent_complex": 8}


@pytest.mark.parametrize("extra", [["--channels", "8"],
                                   ["--init", str(MODELS / "refiner"), "--ssim-weight", "0.5", "--t1-fraction", "0.5"]])
def test_refiner_training_runs_on_cpu(tiny_datasets, tmp_path, extra):
    from gsc_models.train_refiner import main
    out = tmp_path / "run"
    assert main(["--codecs", "deepjscc", "--epochs", "1", "--batch", "4", *extra,
                 "--data", str(tiny_datasets), "--device", "cpu", "--out", str(out)]) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["codecs"] == ["deepjscc"] and log["args"]["device"] == "cpu"
    if "--init" in extra:     # started from the shipped weights, so its width
        assert log["params"] == json.loads((MODELS / "refiner" / "card.json").read_text())["parameters"]
    for metric in ("psnr_db", "ms_ssim"):
        assert set(log["epochs"][0]["test500"][metric]["deepjscc"]) == {"0", "5", "10", "20"}
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(v.device.type == "cpu" for v in state["state_dict"].values())


def test_t1_fraction_trains_the_one_step_estimate():
    """With t1_fraction = 1 every sample is at t = 1, where the v target is minus the scaled residual: a
    fresh Denoiser (zeroed output layer, v = 0) then scores exactly the residual's mean square."""
    from gsc_models.refiner import RESIDUAL_SCALE, Denoiser
    from gsc_models.train_refiner import v_loss
    torch.manual_seed(0)
    x, coarse = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    snr = torch.full((4, 1), 5.0)
    expected = torch.mean((RESIDUAL_SCALE * (x - coarse)) ** 2)
    assert torch.allclose(v_loss(Denoiser(8), x, coarse, snr, t1_fraction=1.0), expected)
    assert not torch.allclose(v_loss(Denoiser(8), x, coarse, snr, t1_fraction=0.0), expected)


def test_fine_tuned_export_records_where_it_started(tiny_datasets, tmp_path):
    """--init from a shipped model, then export: the card names the model, weights and run it started from."""
    from gsc_models.export import main as export
    from gsc_models.train import main as train
    shipped = MODELS / "deepjscc"
    run = tmp_path / "run"
    assert train(["--model", "deepjscc", "--init", str(shipped), "--epochs", "1", "--batch", "4", "--loss", "psnr",
                  "--data", str(tiny_datasets), "--device", "cpu", "--out", str(run)]) == 0
    out = tmp_path / "deepjscc"
    assert export(["--model", "deepjscc", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out),
                   "--train-command", "python -m gsc_models.train --model deepjscc --init ...",
                   "--data", str(tiny_datasets), "--eval-images", "8"]) == 0
    card = json.loads((out / "card.json").read_text())
    before = json.loads((shipped / "card.json").read_text())
    assert card["training"]["epochs"] == 1 and card["training"]["init"]["model"] == "deepjscc"
    assert card["training"]["init"]["weights_sha256"] == before["files"]["weights"]["sha256"]
    assert card["training"]["init"]["training"]["command"] == before["training"]["command"]
    assert f"Started from `deepjscc` (weights.npz SHA-256 `{before['files']['weights']['sha256']}`)" \
        in (out / "card.md").read_text()


def test_refiner_export_card_has_both_metrics_and_its_provenance(tiny_datasets, tmp_path):
    """A fine-tuned refiner's export: PSNR and MS-SSIM tables, the codec weights it learned from, and the
    shipped refiner it started from."""
    from gsc_models.train_refiner import main
    run, out = tmp_path / "run", tmp_path / "refiner"
    assert main(["--codecs", "deepjscc", "--init", str(MODELS / "refiner"), "--t1-fraction", "0.5", "--epochs", "1",
                 "--batch", "4", "--data", str(tiny_datasets), "--device", "cpu", "--out", str(run)]) == 0
    assert main(["--export", str(run / "checkpoint.pt"), "--out", str(out), "--train-command", "python -m ...",
                 "--data", str(tiny_datasets), "--eval-images", "8"]) == 0
    card = json.loads((out / "card.json").read_text())
    shipped = json.loads((MODELS / "refiner" / "card.json").read_text())
    deep = json.loads((MODELS / "deepjscc" / "card.json").read_text())
    assert card["codec_weights_sha256"] == {"deepjscc": deep["files"]["weights"]["sha256"]}
    assert card["training"]["init"]["weights_sha256"] == shipped["files"]["weights"]["sha256"]
    for metric in ("psnr_db", "ms_ssim"):
        assert set(card["eval"][metric]["deepjscc"]) == {"0", "5", "10", "20"}
    ssim = card["eval"]["ms_ssim"]["deepjscc"]
    assert all(0.0 < v <= 1.0 for per in ssim.values() for v in per.values())
    md = (out / "card.md").read_text()
    assert "## Eval: MS-SSIM" in md and "Started from `refiner`" in md


def test_torch_ms_ssim_matches_the_runtime_metric():
    import numpy as np
    from gsc_blocks.core.metrics import ms_ssim as ms_ssim_np
    from gsc_models.layers import ms_ssim
    rng = np.random.default_rng(0)
    ref = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(SAMPLES.glob("cifar_*.png"))[:4]])
    noisy = np.clip(ref + rng.normal(0, 20, ref.shape), 0, 255).astype(np.uint8)
    crop = (slice(None), slice(0, 30), slice(0, 27))                      # odd sizes too
    for a, b in ((ref, noisy), (ref[crop], noisy[crop])):
        t = [torch.from_numpy(v).permute(0, 3, 1, 2).double() / 255 for v in (a, b)]
        assert np.allclose(ms_ssim(*t).numpy(), [ms_ssim_np(p, q) for p, q in zip(a, b)], atol=1e-6)
    kodak = np.array(Image.open(SAMPLES / "kodak_kodim23.png").convert("RGB"))[:200, :300]
    k2 = np.clip(kodak + rng.normal(0, 10, kodak.shape), 0, 255).astype(np.uint8)    # 5 scales
    t = [torch.from_numpy(v[None]).permute(0, 3, 1, 2).double() / 255 for v in (kodak, k2)]
    assert ms_ssim(*t).item() == pytest.approx(ms_ssim_np(kodak, k2), abs=1e-6)
