"""MU-GSC: the batching decode service (embedded and Ray Serve), N transmitters on sub-bands of
one stream through the channelizer and per-user receivers, per-user accounting, bench multiuser."""
import json
import time

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gsc_blocks.apps.multiuser import per_user
from gsc_blocks.subband import subband_offset_hz
from gsc_blocks.apps.run import run_link
from gsc_blocks.core.config import ConfigError, load_config
from gsc_blocks.core.controller import Action
from gsc_blocks.core.decode_service import (Decoders, DecodeService, Job, check_service, load_fragments,
                                            save_fragments)
from gsc_blocks.core.frame import end_of_stream_meta
from gsc_blocks.core.images import load_image
from gsc_blocks.core.metrics import psnr_db
from gsc_blocks.core.refiner import Refiner
from gsc_blocks.core.registry import make_codec
from gsc_blocks.pdu_util import make_pdu, split_pdu
from gsc_blocks.semantic_decoder import semantic_decoder

CONFIG = "radio_config/zmq_multiuser.yaml"
SNRS = [8.0, 11.0, 14.0, 20.0]


def _received(codec, image, snr_db, seed):
    rng = np.random.default_rng(seed)
    symbols = codec.encode(image, snr_db)
    noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) * np.sqrt(
        10 ** (-snr_db / 10) / 2)
    return (symbols + noise).astype(np.complex64)


@pytest.fixture(scope="module")
def cifar(request):
    from conftest import SAMPLES
    return [load_image(p) for p in sorted(SAMPLES.glob("cifar_*.png"))]


def _jobs(codec, images, steps=0):
    return [Job({"image_id": i, "session": 3, "user": i % 3, "codec_id": codec.codec_id, "height": 32, "width": 32,
                 "rate_index": 0}, _received(codec, image, 5.0, i), 5.0, steps) for i, image in enumerate(images)]


def test_a_batch_decodes_as_its_images_alone(cifar):
    """One decoder run and one refiner run per step for the whole batch; each image as decoded alone
    (to float rounding), one broken image failing only itself."""
    codec = make_codec("deepjscc")
    refiner = Refiner()
    jobs = _jobs(codec, cifar, steps=2)
    jobs[3].symbols = jobs[3].symbols[:-5]           # damaged: the wrong size
    results = Decoders().decode(jobs)
    assert results[3].error and "symbols do not make a 32x32 image" in results[3].error
    for i, (job, result) in enumerate(zip(jobs, results)):
        if i == 3:
            continue
        alone = refiner.refine(codec.decode(job.symbols, 32, 32, 5.0), 5.0, 2, seed=i)
        assert result.error is None and result.meta["refine_steps_applied"] == 2
        assert np.abs(result.pixels.astype(int) - alone).max() <= 1
        assert result.meta["service_batch"] == len(jobs) and result.meta["codec"] == "deepjscc"


def test_service_batches_up_to_its_size_and_sync_takes_one_at_a_time(cifar):
    codec = make_codec("deepjscc")
    for mode, limit in (("batched", 4), ("sync", 1)):
        service = DecodeService(mode=mode, batch_size=4, max_wait_ms=50.0)
        done = []
        for job in _jobs(codec, cifar * 2):
            service.submit(job, done.append)
        assert service.wait_idle(60)
        service.close()
        assert len(done) == 2 * len(cifar) and all(r.error is None for r in done)
        batches = [r.meta["service_batch"] for r in done]
        assert max(batches) == limit and (mode == "sync" or min(batches) >= 2)
        if mode == "sync":      # arrival order, one at a time
            assert [r.meta["image_id"] for r in done] == list(range(2 * len(cifar)))
        for r in done:
            assert r.meta["decode_ms"] >= r.meta["service_ms"] > 0 and r.meta["service_queue"] >= 0
        assert service.stats.summary()["images"] == 2 * len(cifar)
    with pytest.raises(ValueError, match="decode service mode 'fast'"):
        check_service("fast", 8, 0.0)
    with pytest.raises(ValueError, match="batch_size 0"):
        check_service("batched", 0, 0.0)


def test_the_service_shares_the_cores_among_the_batches_it_decodes_at_once(monkeypatch):
    """Each model session of the embedded service gets the cores over the batches decoded at once
    (sync: all of them for its one image); GSC_ORT_THREADS, set, wins."""
    codec_id = make_codec("deepjscc").codec_id
    monkeypatch.delenv("GSC_ORT_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    for mode, workers, threads in (("sync", 4, 4), ("batched", 1, 4), ("batched", 2, 2), ("batched", 8, 1)):
        service = DecodeService(mode=mode, workers=workers)
        try:
            decoder = service.decoders.codec_for(codec_id).decoder
            assert decoder.get_session_options().intra_op_num_threads == threads, (mode, workers)
        finally:
            service.close()
    monkeypatch.setenv("GSC_ORT_THREADS", "3")
    service = DecodeService(mode="batched", workers=2)
    try:
        assert service.decoders.codec_for(codec_id).decoder.get_session_options().intra_op_num_threads == 3
    finally:
        service.close()


def test_fragments_recorded_come_back_the_same(tmp_path):
    fragments = [(1.5, {"image_id": 2, "user": 1, "snr_eff_db": 3.5}, np.arange(6, dtype=np.complex64) * 1j),
                 (2.0, {"image_id": 3, "user": 0, "snr_eff_db": 4.0}, np.ones(3, np.complex64))]
    save_fragments(tmp_path / "f.npz", fragments)
    back = load_fragments(tmp_path / "f.npz")
    assert [(t, m) for t, m, _ in back] == [(t, m) for t, m, _ in fragments]
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(back, fragments))


def test_decoder_ends_after_every_transmitters_end_of_stream(cifar):
    """Two users: the first's end-of-stream frame decodes its own pending image only; the stream
    ends at the second's."""
    codec = make_codec("deepjscc")
    tb = gr.top_block()
    decoder = semantic_decoder("", 30.0, 0, streams=2)
    store = blocks.message_debug()
    tb.msg_connect(decoder, "out", store, "store")
    tb.start()
    post = decoder.to_basic_block()._post
    for user in (0, 1):
        symbols = codec.encode(cifar[user], 20.0)
        half = symbols.size // 2
        meta = {"image_id": 5, "session": 10 + user, "user": user, "fragment_index": 0, "fragment_count": 2,
                "codec_id": codec.codec_id, "rate_index": 0, "power_level": 0, "refine_steps": 0,
                "height": 32, "width": 32, "snr_est_db": 20.0, "snr_eff_db": 20.0}
        post(pmt.intern("in"), make_pdu(meta, symbols[:half]))
    post(pmt.intern("in"), make_pdu(end_of_stream_meta(6, 10, 0), np.zeros(0, np.complex64)))
    deadline = time.time() + 20
    while store.num_messages() < 1 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert store.num_messages() == 1 and not decoder.end_of_stream.is_set()
    meta, _ = split_pdu(store.get_message(0))
    assert (meta["user"], meta["fragments_lost"]) == (0, 1)
    post(pmt.intern("in"), make_pdu(end_of_stream_meta(6, 11, 1), np.zeros(0, np.complex64)))
    assert decoder.end_of_stream.wait(20)
    deadline = time.time() + 20
    while store.num_messages() < 2 and time.time() < deadline:
        time.sleep(0.05)
    tb.stop()
    tb.wait()
    assert split_pdu(store.get_message(1))[0]["user"] == 1


def test_a_decoder_held_up_longer_than_the_timeout_keeps_the_next_image_whole(cifar):
    """Image B's first fragment is pending when completing image A holds the fragment handler up
    (a busy decode service) for three reassembly timeouts; B's second fragment waits in the queue
    meanwhile. The timer must not time B out and split it into two halves each missing a fragment."""
    codec = make_codec("deepjscc")
    tb = gr.top_block()
    decoder = semantic_decoder("", 0.5, 0)
    store, events = blocks.message_debug(), blocks.message_debug()
    tb.msg_connect(decoder, "out", store, "store")
    tb.msg_connect(decoder, "events", events, "store")
    emit = decoder._emit

    def held_up(images):
        if images:
            time.sleep(1.5)
        emit(images)
    decoder._emit = held_up
    tb.start()
    post = decoder.to_basic_block()._post
    halves = {}
    for image_id in (1, 2):
        symbols = codec.encode(cifar[image_id], 20.0)
        halves[image_id] = (symbols[:symbols.size // 2], symbols[symbols.size // 2:])

    def fragment_pdu(image_id, index):
        meta = {"image_id": image_id, "session": 3, "user": 0, "fragment_index": index, "fragment_count": 2,
                "codec_id": codec.codec_id, "rate_index": 0, "power_level": 0, "refine_steps": 0,
                "height": 32, "width": 32, "snr_est_db": 20.0, "snr_eff_db": 20.0}
        return make_pdu(meta, halves[image_id][index])
    for image_id, index in ((1, 0), (2, 0), (1, 1), (2, 1)):
        post(pmt.intern("in"), fragment_pdu(image_id, index))
    deadline = time.time() + 20
    while store.num_messages() < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    tb.stop()
    tb.wait()
    received = [split_pdu(store.get_message(k))[0] for k in range(store.num_messages())]
    assert sorted(m["image_id"] for m in received) == [1, 2]
    assert all(m["fragments_lost"] == 0 for m in received) and events.num_messages() == 0


def test_multiuser_config_is_checked(tmp_path):
    config = load_config(CONFIG)
    assert config["multiuser"]["users"] == 4 and len(config["multiuser"]["snr_db"]) == 4
    assert config["decode_service"]["backend"] == "embedded"
    with pytest.raises(ConfigError, match="multiuser.snr_db: 2 values for 4 users"):
        load_config(CONFIG, ["multiuser.snr_db=[1, 2]"])
    with pytest.raises(ConfigError, match="key multiuser.users: value 9 is not allowed"):
        load_config(CONFIG, ["multiuser.users=9"])
    with pytest.raises(ConfigError, match="key decode_service.mode: value 'fast' is not allowed"):
        load_config(CONFIG, ["decode_service.mode=fast"])
    assert [subband_offset_hz(k, 4, 1e5) for k in range(4)] == [0.0, 1e5, 2e5, -1e5]


@pytest.fixture(scope="module")
def mu_link(tmp_path_factory):
    """Four transmitters at four SNRs on four sub-bands, one receiver, the fragments recorded."""
    from conftest import SAMPLES
    out = tmp_path_factory.mktemp("mu") / "out"
    images = sorted(SAMPLES.glob("cifar_*.png"))
    record = out.parent / "fragments.npz"
    run_link(CONFIG, images, out, ["multiuser.snr_db=[" + ",".join(map(str, SNRS)) + "]",
                                   f"decode_service.record={record}"], timeout_s=180)
    return out, record, images


def test_every_user_is_served_at_its_own_snr(mu_link):
    from test_link_e2e import ideal_psnr
    out, _, images = mu_link
    stats = per_user(out)
    assert stats["unaccounted"] == 0 and sorted(stats["users"]) == [0, 1, 2, 3]
    for user, entry in stats["users"].items():
        assert entry["decoded"] == len(images) and entry["lost"] == 0, (user, entry)
    rows = [json.loads(line) for line in (out / "received.jsonl").read_text().splitlines()]
    for row in rows:
        # Each user's receiver measures its own sub-band's SNR, and the image costs no more than
        # that estimate's error: within 1.5 dB of the codec alone at the measured SNR.
        assert abs(row["snr_est_db"] - SNRS[row["user"]]) < 1.5, row
        original = load_image(next(p for p in images if p.stem == row["file"].split("_", 3)[3][:-4]))
        assert abs(row["psnr_db"] - ideal_psnr("deepjscc", original, 10.0, row["snr_eff_db"])) < 1.5
        assert row["service_batch"] >= 1 and "service_wait_ms" in row
    mean = {u: np.mean(e["psnr_db"]) for u, e in stats["users"].items()}
    assert mean[0] < mean[1] < mean[3]


def test_ray_serve_and_embedded_give_the_same_images(mu_link):
    """The same recorded fragments through the embedded service and through Ray Serve (started on
    127.0.0.1 here): the same PSNR per image within 0.01 dB."""
    from gsc_blocks.bench.multiuser import originals_of, replay
    out, record, images = mu_link
    fragments = load_fragments(record)
    originals = originals_of(out)
    embedded = replay(fragments, originals, "embedded", "batched", 8, 2.0)
    start = time.time()
    ray = replay(fragments, originals, "ray", "batched", 8, 2.0)
    assert time.time() - start < 60
    assert set(embedded["images"]) == set(ray["images"]) == set(originals)
    for key, entry in embedded["images"].items():
        assert abs(entry["psnr_db"] - ray["images"][key]["psnr_db"]) < 0.01, key


def test_controller_charges_the_shared_services_wait():
    """A report's service_wait_ms is learned apart: every action's delay grows by it, and the
    action's own decode time is what remains."""
    from gsc_blocks.core.controller import CostModel
    from test_controller import TABLE
    model = CostModel(TABLE)
    actions = (Action(0, 0, 0), Action(1, 0, 4))
    before = model.costs_many(actions, 10.0).delay_ms
    for _ in range(200):
        model.observe_service(40.0)
    after = model.costs_many(actions, 10.0).delay_ms
    assert np.allclose(after - before, 40.0, atol=0.5)


def test_bench_multiuser_writes_the_schema(tmp_path):
    """Two user counts, both modes, radio and replay: the issue's JSON schema, every image of every
    user accounted for, replay and radio giving the same PSNR on the same fragments."""
    from PIL import Image
    from conftest import SAMPLES
    from gsc_blocks.bench.multiuser import bench_multiuser
    data = tmp_path / "data" / "cifar10" / "test"        # laid out as the dataset: <index>_<class>.webp
    data.mkdir(parents=True)
    for i, path in enumerate(sorted(SAMPLES.glob("cifar_*.png"))[:4]):
        Image.open(path).save(data / f"{i}_{path.stem.split('_', 2)[2]}.webp", lossless=True)
    result = bench_multiuser((1, 2), "embedded", 4, 15.0, 4, 1.0, 0, tmp_path / "data", CONFIG,
                             tmp_path / "mu.json", tmp_path / "mu.png", tmp_path / "work", sweep=False,
                             replay_images=40)
    saved = json.loads((tmp_path / "mu.json").read_text())
    assert saved["service"] == "embedded" and saved["commit"] and saved["command"]
    assert set(saved["models"]) == {"deepjscc"} and len(saved["models"]["deepjscc"]) == 64
    keys = {(r["users"], r["mode"], r["source"]) for r in saved["runs"]}
    assert keys == {(n, m, s) for n in (1, 2) for m in ("batched", "sync") for s in ("radio", "replay")}
    for run in saved["runs"]:
        assert run["unaccounted"] == 0 and run["images_per_s"] > 0
        assert [u["user"] for u in run["per_user"]] == list(range(run["users"]))
        for user in run["per_user"]:
            assert user["decoded"] == 4 and user["lost"] == 0 and user["psnr_db"] > 20
            assert 0 < user["latency_ms_p50"] <= user["latency_ms_p99"]
    assert all(v is not None and v < 0.01 for v in saved["replay_psnr_vs_radio_max_abs_db"].values())
    assert (tmp_path / "mu.png").is_file() and result["ratios"]["replay_2"] > 0


def test_each_users_controller_closes_its_own_loop(tmp_path):
    """Two users, a controller each, over the shared receiver: each controller's slots come from its
    own session's reports, which carry the decode service's wait; the user at 20 dB is sent at less
    power than the one at 5 dB; every image accounted for."""
    from conftest import SAMPLES
    images = sorted(SAMPLES.glob("cifar_*.png"))
    out = run_link(CONFIG, images, tmp_path / "out", ["controller.enabled=true", "multiuser.users=2",
                                                      "multiuser.snr_db=[5,20]"], timeout_s=180)
    slots = [json.loads(line) for line in (out / "tx_controller.jsonl").read_text().splitlines()]
    by_user = {u: [s for s in slots if s["user"] == u] for u in (0, 1)}
    assert all(len(v) == len(images) for v in by_user.values())
    sessions = {json.loads(line)["session"]: json.loads(line)["user"]
                for line in (out / "tx_manifest.jsonl").read_text().splitlines()}
    reported = [s for s in slots if not s.get("lost")]
    assert len(reported) >= len(slots) - 2
    for slot in reported:
        assert sessions[slot["session"]] == slot["user"] and slot["service_wait_ms"] >= 0
    power = {u: np.mean([s["power_level"] for s in v[2:]]) for u, v in by_user.items()}
    assert power[1] > power[0]              # a higher level is less power
    assert json.loads((out / "report.json").read_text())["unaccounted"] == 0
