"""SQ-GAN: the shipped model (card, ORT vs torch at both ends), the payload (every bit counted,
per-stream CRCs naming what failed), SAMM against random masking, the digital path and the
controller's kept-fraction action."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gsc_blocks.core.models import CodecError, load_card
from gsc_blocks.core.registry import codec_for_id, make_codec
from gsc_blocks.core.segmentation import Segmenter
from gsc_blocks.core.sqgan import LEVELS, PROBE_FIRST, SQGAN_CODEC_ID, MapPrior, SqganCodec, SqganModel, \
    decode_mask, encode_mask, kept_count, mask_bytes, pack, random_mask, refined_mask, top_mask, unpack

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
CAMVID = REPO / "tests" / "data" / "camvid"
NAMES = sorted(p.stem for p in CAMVID.glob("*.webp"))
GRID = (192 // 16) * (256 // 16)


def frame(name=NAMES[0]):
    return np.asarray(Image.open(CAMVID / f"{name}.webp").convert("RGB"))


@pytest.fixture(scope="module")
def sqgan():
    return make_codec("sqgan", MODELS)


def test_card_names_its_segmenter_codecs_and_bits():
    card = load_card("sqgan", MODELS)
    assert card["kind"] == "sqgan" and card["codecs"] == ["sqgan", "sqgan-random"]
    seg = load_card(card["segmenter"], MODELS)
    assert card["segmenter_weights_sha256"] == seg["files"]["weights"]["sha256"]
    assert card["training"]["command"].startswith("python -m gsc_models.train_sqgan")
    assert card["index_bits"] == math.ceil(math.log2(card["config"]["codes"]))
    assert card["map_index_bits"] == math.ceil(math.log2(card["config"]["map_codes"]))
    prior = SqganModel(models_dir=MODELS).map_prior
    assert prior.first.shape == (card["config"]["map_codes"],) and prior.left.shape == prior.above.shape
    assert np.allclose(prior.left.sum(1), 1, atol=1e-5) and np.isclose(prior.first.sum(), 1, atol=1e-5)
    assert codec_for_id(SQGAN_CODEC_ID, MODELS).name == "sqgan"


def test_onnx_matches_torch_at_both_ends():
    torch = pytest.importorskip("torch")
    from gsc_models.cards import load_weights_npz
    from gsc_models.sqgan import SqganRx, SqganTx, one_hot
    model = load_weights_npz("sqgan", MODELS / "sqgan")
    runtime = SqganModel(models_dir=MODELS)
    image = frame()
    labels = Segmenter(models_dir=MODELS).predict(image)[0]
    idx, scores, midx = runtime.analyse(image, labels)
    with torch.no_grad():
        t_idx, t_scores, t_midx = SqganTx(model)(
            torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0),
            one_hot(torch.from_numpy(labels[None])))
    assert np.abs(scores - t_scores[0].numpy()).max() < 1e-4
    assert (idx == t_idx[0].numpy()).mean() > 0.98 and (midx == t_midx[0].numpy()).mean() > 0.98
    mask = np.zeros(idx.shape, bool)
    mask.ravel()[np.argsort(-scores.ravel())[:77]] = True
    pixels, rx_labels = runtime.synthesise(np.where(mask, idx, 0), mask, midx)
    with torch.no_grad():
        t_img, t_lab = SqganRx(model)(torch.from_numpy(np.where(mask, idx, 0)[None]),
                                      torch.from_numpy(mask[None].astype(np.float32)), torch.from_numpy(midx[None]))
    diff = np.abs(pixels.astype(int) - np.rint(t_img[0].numpy().transpose(1, 2, 0) * 255).astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05
    assert (rx_labels == t_lab[0].numpy()).mean() > 0.999


def test_bits_pack_and_unpack():
    rng = np.random.default_rng(3)
    for bits in (1, 7, 10):
        values = rng.integers(0, 1 << bits, 77)
        data = pack(values, bits)
        assert len(data) == math.ceil(77 * bits / 8)
        assert np.array_equal(unpack(data, 77, bits), values)
    with pytest.raises(ValueError, match="cannot be packed"):
        pack(np.array([1024]), 10)


def test_the_kept_set_travels_as_its_rank():
    rng = np.random.default_rng(5)
    # ceil(log2 C(n, k)) bits in whole bytes: 10 of 192 in 7 bytes (against 24 for a bit per latent)
    assert [mask_bytes(192, k) for k in (0, 1, 10, 96, 191, 192)] == [0, 1, 7, 24, 1, 0]
    for n, k in ((192, 10), (192, 96), (192, 192), (192, 1), (9, 4)):
        for _ in range(10):
            mask = np.zeros(n, bool)
            mask[rng.permutation(n)[:k]] = True
            data = encode_mask(mask)
            assert len(data) == mask_bytes(n, k)
            assert np.array_equal(decode_mask(data, n, k), mask)
    with pytest.raises(ValueError, match="out of range"):
        decode_mask(bytes([0xFF] * 7), 192, 10)


def test_every_bit_is_counted(sqgan):
    image = frame()
    sizes = []
    for level, (fraction, map_fraction) in enumerate(LEVELS):
        payload = sqgan.encode_level(image, level)
        bits = sqgan.last_bits
        kept, map_kept = kept_count(fraction, GRID), kept_count(map_fraction, GRID)
        assert bits["kept"] == kept and bits["latents"] == GRID
        assert bits["map_kept"] == map_kept and bits["map_latents"] == GRID
        # level byte + map length + map stream (map mask, kept map indices) + CRC + mask + kept indices + CRC:
        # nothing else, nothing left out
        assert bits["map"] <= 8 * (mask_bytes(GRID, map_kept) + math.ceil(map_kept * 7 / 8))  # packed at most
        assert bits["image"] == 8 * (mask_bytes(GRID, kept) + math.ceil(kept * 10 / 8))
        assert bits["total"] == 8 * len(payload) == 8 + 16 + bits["map"] + 32 + bits["image"] + 32
        assert payload[0] & 0x7F == level and bool(payload[0] & 0x80) == bits["map_coded"]
        sizes.append(len(payload))
    # a sample frame at level 0 under 0.03 bpp (JPEG 2000's smallest setting, 0.0299 bpp on CamVid test;
    # AVIF and WebP bottom out near 0.14)
    assert sizes == sorted(sizes) and sizes[0] * 8 / (192 * 256) < 0.029
    # the map arrives exactly; under the shipped prior it costs less than packed
    _, _, midx, _, streams = sqgan._analysis(image)[:5]
    flag, stream = streams[GRID]
    assert flag and len(stream) < GRID * 7 / 8 * 0.8
    assert np.array_equal(sqgan.model.map_prior.decode(stream, 12, 16), midx)
    assert np.array_equal(unpack(pack(midx, 7), GRID, 7).reshape(12, 16), midx)


def test_the_map_prior_codes_a_masked_grid():
    prior = SqganModel(models_dir=MODELS).map_prior
    rng = np.random.default_rng(4)
    grid = rng.integers(0, 128, (12, 16))
    for kept in (np.ones((12, 16), bool), rng.random((12, 16)) < 0.3, np.eye(12, 16, dtype=bool)):
        data = prior.encode(grid, kept)
        assert np.array_equal(prior.decode(data, 12, 16, kept), np.where(kept, grid, 0))
    # every map latent kept: the same stream as the unmasked grid's
    assert prior.encode(grid, np.ones((12, 16), bool)) == prior.encode(grid)


def test_masked_map_levels_send_the_map_samm_top_latents_and_fill_the_rest(sqgan):
    image = frame()
    rand = make_codec("sqgan-random", MODELS)
    analysis = sqgan._analysis(image)
    midx, labels = analysis[2], analysis[6]
    for level in (0, 1):
        map_kept = kept_count(LEVELS[level][1], GRID)
        assert map_kept < GRID
        payload, other = sqgan.encode_level(image, level), rand.encode_level(image, level)
        stream = payload[3:3 + int.from_bytes(payload[1:3], "big")]
        mask = decode_mask(stream[:mask_bytes(GRID, map_kept)], GRID, map_kept).reshape(12, 16)
        scores = sqgan.model.map_scores(midx)
        assert scores.shape == (12, 16) and ((scores > 0) & (scores < 1)).all()
        # the map SAMM's top half of the kept count, then the map probe's rounds
        assert top_mask(scores, round(map_kept * PROBE_FIRST))[~mask].sum() == 0
        assert np.array_equal(mask, refined_mask(scores, lambda m: sqgan.model.map_error(midx, m, labels), map_kept))
        o_stream = other[3:3 + int.from_bytes(other[1:3], "big")]
        o_mask = decode_mask(o_stream[:mask_bytes(GRID, map_kept)], GRID, map_kept).reshape(12, 16)
        assert o_mask.sum() == map_kept and not np.array_equal(o_mask, mask)
        filled = sqgan.model.fill_map(np.where(mask, midx, 0), mask)
        assert np.array_equal(filled[mask], midx[mask]) and filled.min() >= 0 and filled.max() < 128
        assert sqgan.decode_payload(payload, 192, 256).shape == (192, 256, 3)
    # fewer map latents, fewer bits; every level below in size the next
    assert len(sqgan.encode_level(image, 0)) < len(sqgan.encode_level(image, 1)) < len(sqgan.encode_level(image, 2))


def test_the_probed_map_mask_leaves_the_receivers_map_less_wrong_than_samm_or_random(sqgan):
    """What the map probe is for: the receiver's decoded map (rx.onnx) against the sent map, with the
    masks each choice gives at the two masked levels, summed over the sample frames."""
    wrong = {"probed": 0, "samm": 0, "random": 0}
    for name in NAMES:
        image = frame(name)
        idx, _, midx, seed, _, _, labels = sqgan._analysis(image)
        scores = sqgan.model.map_scores(midx)
        for level in (0, 1):
            count = kept_count(LEVELS[level][1], GRID)
            masks = {"probed": sqgan.map_mask(sqgan._analysis(image), count), "samm": top_mask(scores, count),
                     "random": random_mask(midx.shape, count, seed ^ 0x5A5A5A5A)}
            for key, mask in masks.items():
                assert mask.sum() == count
                _, received = sqgan.model.synthesise(idx, np.ones_like(mask), sqgan.model.fill_map(midx, mask))
                wrong[key] += int((received != labels).sum())
    assert wrong["probed"] < 0.9 * wrong["samm"] and wrong["probed"] < 0.9 * wrong["random"], wrong


def test_map_masking_onnx_matches_torch():
    torch = pytest.importorskip("torch")
    from gsc_models.train_sqgan_map import load_map_masking
    mm = load_map_masking(MODELS / "sqgan")
    runtime = SqganModel(models_dir=MODELS)
    midx = np.random.default_rng(6).integers(0, 128, (12, 16))
    mask = np.random.default_rng(7).random((12, 16)) < 0.4
    with torch.no_grad():
        t_scores = torch.sigmoid(mm.samm_logits(torch.from_numpy(midx[None])))[0].numpy()
        t_fill = mm.fill(torch.from_numpy(midx[None]), torch.from_numpy(mask[None].astype(np.float32)))[0].numpy()
    assert np.abs(runtime.map_scores(midx) - t_scores).max() < 1e-4
    assert (runtime.fill_map(midx, mask) == t_fill).mean() > 0.98


def test_map_probe_onnx_matches_torch_and_both_refine_alike():
    torch = pytest.importorskip("torch")
    from gsc_models.cards import load_weights_npz
    from gsc_models.sqgan import MapProbeTx, refined_map_mask
    from gsc_models.train_sqgan_map import load_map_masking
    probe = MapProbeTx(load_map_masking(MODELS / "sqgan"), load_weights_npz("sqgan", MODELS / "sqgan").eval())
    runtime = SqganModel(models_dir=MODELS)
    sqgan = make_codec("sqgan", MODELS)
    _, _, midx, _, _, _, labels = sqgan._analysis(frame())
    mask = np.random.default_rng(8).random((12, 16)) < 0.3

    def t_error(m):
        with torch.no_grad():
            return probe(torch.from_numpy(midx[None]), torch.as_tensor(m[None], dtype=torch.float32),
                         torch.from_numpy(labels[None].astype(np.int64)))[0].numpy()
    error = runtime.map_error(midx, mask, labels)
    assert error.shape == (12, 16) and 0 <= error.min() and error.max() <= 1 and error[~mask].sum() > 0
    assert np.abs(error - t_error(mask)).mean() < 0.01
    scores = runtime.map_scores(midx)
    with torch.no_grad():
        t_mask = refined_map_mask(torch.from_numpy(scores[None]), lambda m: torch.from_numpy(t_error(m[0].numpy())[None]),
                                  58)[0].numpy() > 0.5
    assert np.array_equal(refined_mask(scores, t_error, 58), t_mask) and t_mask.sum() == 58


def test_a_tampered_map_prior_is_refused(tmp_path):
    import shutil
    folder = tmp_path / "sqgan"
    shutil.copytree(MODELS / "sqgan", folder)
    with np.load(folder / "map_prior.npz") as z:
        tables = {k: z[k] for k in z.files}
    tables["first"][0] *= 2
    np.savez(folder / "map_prior.npz", **tables)
    with pytest.raises(CodecError, match="map_prior.npz has SHA-256"):
        SqganModel(models_dir=tmp_path).map_prior
    tables["left"] = tables["left"][:5]
    np.savez(tmp_path / "bad.npz", **tables)
    with pytest.raises(CodecError, match="positive tables"):
        MapPrior(tmp_path / "bad.npz")


def test_samm_and_random_keep_as_many_latents_but_not_the_same(sqgan):
    image = frame()
    rand = make_codec("sqgan-random", MODELS)
    assert rand.name == "sqgan-random" and rand.codec_id == sqgan.codec_id
    a, b = sqgan.encode_level(image, 2), rand.encode_level(image, 2)
    head = 3 + int.from_bytes(a[1:3], "big") + 4
    assert len(a) == len(b) and a[:head] == b[:head]       # same level byte and map stream
    kept = kept_count(LEVELS[2][0], GRID)
    mask_a = decode_mask(a[head:head + mask_bytes(GRID, kept)], GRID, kept)
    mask_b = decode_mask(b[head:head + mask_bytes(GRID, kept)], GRID, kept)
    assert mask_a.sum() == mask_b.sum() == kept
    assert not np.array_equal(mask_a, mask_b)
    assert rand.encode_level(image, 2) == b                               # the same image, the same draw
    # SAMM keeps the top-scored latents
    idx, scores = sqgan._analysis(image)[:2]
    assert scores.ravel()[mask_a].min() >= scores.ravel()[~mask_a].max()


def test_a_damaged_stream_names_itself_and_padding_loses_nothing(sqgan):
    image = frame()
    payload = sqgan.encode_level(image, 4)
    out = sqgan.decode_payload(payload, 192, 256)
    assert out.shape == (192, 256, 3)
    assert np.array_equal(sqgan.decode_payload(payload + bytes([0x55] * 30), 192, 256), out)

    def corrupt(at):
        data = bytearray(payload)
        data[at] ^= 0x10
        return bytes(data)
    with pytest.raises(CodecError, match="label map failed its CRC"):
        sqgan.decode_payload(corrupt(20), 192, 256)
    with pytest.raises(CodecError, match="image latents failed their CRC"):
        sqgan.decode_payload(corrupt(len(payload) - 8), 192, 256)
    with pytest.raises(CodecError, match="label map failed its CRC"):
        sqgan.decode_payload(payload[:100], 192, 256)


def test_variants_and_a_budget_too_small(sqgan):
    assert make_codec("sqgan-3", MODELS).fixed_level == 3
    r = make_codec("sqgan-random-1", MODELS)
    assert r.random and r.fixed_level == 1
    for bad in (f"sqgan-{len(LEVELS)}", "sqgan-foo"):
        with pytest.raises(CodecError, match="sqgan variant"):
            make_codec(bad, MODELS)
    image = frame()
    sqgan.encode(image, 10.0, 5)
    assert sqgan.last_detail == f"level {len(LEVELS) - 1} (kept 1)"
    with pytest.raises(ValueError, match="byte budget too small"):
        SqganCodec(cbr=0.005, models_dir=MODELS).encode(image, 10.0, 0)


def test_over_the_digital_path(sqgan):
    image = frame()
    rng = np.random.default_rng(2)
    tx = SqganCodec("2", cbr=1 / 24, models_dir=MODELS)
    symbols = tx.encode(image, 10.0, 1)
    noisy = symbols + (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) * 0.05
    rx = codec_for_id(SQGAN_CODEC_ID, MODELS, {"cbr": 1 / 24})
    out = rx.decode(noisy.astype(np.complex64), 192, 256, 26.0, 1)
    assert np.array_equal(out, tx.decode_payload(tx.encode_level(image, 2), 192, 256))
    with pytest.raises(CodecError, match="failed (its|their) CRC"):
        rx.decode((symbols + (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size))
                   * 1.5).astype(np.complex64), 192, 256, 0.0, 1)


def test_link_oracle_picks_the_mcs_by_the_judge_not_by_psnr():
    """On CamVid the oracle ranks MCSs by the judge's mIoU: a generative codec's frame may score a lower
    PSNR than the mean image a lost frame counts as, and PSNR would then prefer losing it."""
    from gsc_blocks.bench.link import oracle_mcs
    codec = SqganCodec(cbr=1 / 24)
    image = frame()
    mean_image = np.full_like(image, int(image.mean()))
    decoded = lambda received: {"miou": float(np.mean([r is not mean_image for r in received]))}
    rate = oracle_mcs(codec, [image], 12.0, mean_image, judge=decoded)
    symbols = codec.encode(image, 12.0, rate)
    assert codec.decode(symbols, *image.shape[:2], 30.0, rate).shape == image.shape


def test_calibration_measures_miou_per_mcs_and_the_levels_it_buys(tmp_path, camvid_data):
    """bench calibrate on CamVid: per MCS the mIoU curve against SNR and the kept fractions the images went at."""
    from gsc_blocks.bench.calibrate import bench_calibrate
    from gsc_blocks.core.controller import CalibrationTable
    table = bench_calibrate("sqgan", [-5.0, 25.0], 2, camvid_data, tmp_path / "cal.json", dataset="camvid",
                            cbr="1/24", work_dir=tmp_path / "work")
    assert table["dataset"] == "CamVid test, first 2 frames at 256x192" and table["cbr"] == "1/24"
    rates = table["rates"]
    assert len(rates) == SqganCodec(cbr=1 / 24).rate_count
    lost = table["lost"]["miou"]
    for entry in rates.values():
        curve = entry["steps"]["0"]["miou"]
        assert curve[0] == pytest.approx(lost, abs=1e-4)          # -5 dB: every MCS loses both frames
        assert curve[1] > lost + 0.1                              # 25 dB: both decode
        assert entry["sent_as"].startswith("level ") and entry["symbols"] == 3 * 192 * 256 // 24
    # a faster MCS carries more bytes, so the images keep at least as large a fraction of their latents
    kept = [max(float(re.search(r"kept ([0-9.]+)", part).group(1)) for part in e["sent_as"].split(":")[:-1])
            for e in rates.values()]
    assert kept == sorted(kept) and kept[-1] > kept[0]
    assert CalibrationTable.load(tmp_path / "cal.json", "miou_pct").quality(len(rates) - 1, 0, 25.0) > 100 * lost


def test_the_controller_trades_kept_fraction_for_snr_on_the_shipped_table():
    """models/sqgan/calibration.json (bench calibrate, CamVid, CBR 1/24): the controller's rate action
    is the MCS, and with it the kept fraction. BPSK 1/4 carries kept 0.2 and survives -1 dB; every
    faster MCS carries every latent, so a better channel buys the whole frame."""
    import json
    from gsc_blocks.core.controller import CalibrationTable, CostModel, greedy_policy
    rows = json.loads((MODELS / "sqgan" / "calibration.json").read_text())["rates"]
    assert rows["0"]["label"] == "bpsk-1/4" and "kept 0.2" in rows["0"]["sent_as"]
    assert all(rows[r]["sent_as"].startswith(f"level {len(LEVELS) - 1} (kept 1)") for r in rows if r != "0")
    table = CalibrationTable.load(MODELS / "sqgan" / "calibration.json", "miou_pct")
    model = CostModel(table)
    choose = greedy_policy(table.actions([0]), delay_target_ms=1e6, quality_target=1000.0)  # best expected mIoU
    low, high = choose(model, -1.0), choose(model, 25.0)
    assert low.rate_index == 0 and high.rate_index >= 1
    assert model.costs(high, 25.0).quality > model.costs(low, -1.0).quality > table.lost_quality
