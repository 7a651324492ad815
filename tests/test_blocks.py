"""Message-port behaviour of the codec blocks in a running flowgraph."""
import time

import numpy as np
import pmt
from gnuradio import blocks, gr

from gsc_blocks.image_source import image_source
from gsc_blocks.pdu_util import split_pdu
from gsc_blocks.semantic_encoder import semantic_encoder


def _collect(store, count, timeout=10.0):
    deadline = time.time() + timeout
    while store.num_messages() < count and time.time() < deadline:
        time.sleep(0.02)
    return [split_pdu(store.get_message(i)) for i in range(store.num_messages())]


def test_control_message_sets_power_and_rate_for_the_next_image(samples, tmp_path):
    tb = gr.top_block()
    images = [samples / "cifar_0_cat.png", samples / "cifar_1_ship.png"]
    source = image_source(images, manifest=str(tmp_path / "m.jsonl"), interval_s=0.5, start_delay_s=0.3)
    encoder = semantic_encoder("deepjscc_sr", max_fragment_symbols=200)
    store = blocks.message_debug()
    tb.msg_connect(source, "out", encoder, "in")
    tb.msg_connect(encoder, "out", store, "store")
    tb.start()
    # rate index 4 of deepjscc_sr: 4 of 8 symbol groups, CBR 1/12
    encoder.to_basic_block()._post(pmt.intern("control"), pmt.to_pmt({"power_level": 3, "rate_index": 4}))
    encoder.to_basic_block()._post(pmt.intern("control"), pmt.from_long(5))     # not a dict: ignored
    for bad in ({"power_level": "high"}, {"power_level": 99, "rate_index": 0}, {"rate_index": 8}):
        encoder.to_basic_block()._post(pmt.intern("control"), pmt.to_pmt(bad))   # each ignored whole
    fragments = _collect(store, 4)
    tb.stop()
    tb.wait()
    assert len(fragments) == 4                     # 256 symbols in 2 fragments per image
    for meta, symbols in fragments:
        assert (meta["power_level"], meta["rate_index"], meta["codec_id"]) == (3, 4, 2)
        assert meta["fragment_count"] == 2 and symbols.size == meta["payload_symbols"]
    first = np.concatenate([s for m, s in fragments if m["image_id"] == 0])
    assert first.size == 256 and abs(np.mean(np.abs(first) ** 2) - 1.0) < 1e-3


def test_encoder_batches_queued_images_and_keeps_their_order(samples, tmp_path):
    """Images queued together go through one model run, and come out as each image alone gives
    them, in arrival order; a bad image among them is reported and the rest still go out; the
    end-of-stream frame comes last."""
    from gsc_blocks.core.images import load_image
    from gsc_blocks.core.registry import make_codec
    from gsc_blocks.pdu_util import make_pdu
    tb = gr.top_block()
    encoder = semantic_encoder("deepjscc")
    store, events = blocks.message_debug(), blocks.message_debug()
    tb.msg_connect(encoder, "out", store, "store")
    tb.msg_connect(encoder, "events", events, "store")
    files = sorted(samples.glob("cifar_*.png"))[:6]
    images = [load_image(f) for f in files]
    tb.start()
    for i, image in enumerate(images):
        if i == 3:
            encoder.to_basic_block()._post(pmt.intern("in"), make_pdu(
                {"image_id": 99, "height": 30, "width": 30}, np.zeros(30 * 30 * 3, np.uint8)))
        encoder.to_basic_block()._post(pmt.intern("in"), make_pdu(
            {"image_id": i, "height": 32, "width": 32}, image.reshape(-1)))
    encoder.to_basic_block()._post(pmt.intern("in"), make_pdu({"end_of_stream": True, "next_image_id": 6},
                                                             np.zeros(0, np.uint8)))
    fragments = _collect(store, len(images) + 3)
    tb.stop()
    tb.wait()
    codec = make_codec("deepjscc", None)
    assert [m["image_id"] for m, _ in fragments] == list(range(len(images))) + [6, 6, 6]
    for (meta, symbols), image in zip(fragments, images):
        assert np.allclose(symbols, codec.encode(image, 10.0, 0), atol=1e-5)
    assert events.num_messages() == 1 and encoder.images_handled == len(images) + 1
    assert pmt.to_python(events.get_message(0))["image_id"] == 99


def test_uhd_event_counter_counts_underflows_from_the_usrp_sinks_async_messages():
    """The USRP sink's async_msgs (as gr-uhd publishes them: a pair of uhd_async_msg and a dict
    with event_code) counted without a radio: underflows apart from other errors; bursts acks
    and junk are not counted."""
    from gsc_blocks.apps.flowgraphs import uhd_event_counter

    def event(code):
        fields = pmt.dict_add(pmt.make_dict(), pmt.intern("channel"), pmt.from_long(0))
        fields = pmt.dict_add(fields, pmt.intern("event_code"), pmt.intern(code))
        return pmt.cons(pmt.intern("uhd_async_msg"), fields)
    counter = uhd_event_counter()
    for code in ("underflow", "underflow_in_packet", "burst_ack", "time_error", "underflow"):
        counter.handle(event(code))
    counter.handle(pmt.intern("junk"))
    assert (counter.underflows, counter.errors) == (3, 1)


def test_rx_time_counter_counts_overflows_from_the_usrp_sources_rx_time_tags():
    """The USRP source tags rx_time on its first sample and after each overflow: two overflows
    here; tags of other keys are not counted."""
    from gsc_blocks.apps.flowgraphs import rx_time_counter
    tags = [gr.tag_utils.python_to_tag((offset, pmt.intern(key), pmt.from_long(0)))
            for offset, key in ((0, "rx_time"), (4000, "rx_time"), (4500, "packet_len"), (9000, "rx_time"))]
    source = blocks.vector_source_c(np.zeros(10000, np.complex64).tolist(), False, 1, tags)
    counter = rx_time_counter()
    tb = gr.top_block()
    tb.connect(source, counter)
    tb.run()
    assert (counter.tags, counter.overflows) == (3, 2)


def test_history_keeps_the_last_values_line_after_line():
    from gsc_blocks.history import history
    from gsc_blocks.pdu_util import make_pdu
    block = history(length=3, lines=2)
    out = blocks.message_debug()
    tb = gr.top_block()
    tb.msg_connect(block, "out", out, "store")
    tb.start()
    for z, y in ((1, 10), (2, 20), (3, 30), (4, 40)):
        block.to_basic_block()._post(pmt.intern("in"), make_pdu({}, np.array([z, y], np.float32)))
    block.to_basic_block()._post(pmt.intern("in"), make_pdu({}, np.array([5], np.float32)))   # wrong size: ignored
    deadline = time.time() + 5
    while out.num_messages() < 4 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    tb.stop()
    tb.wait()
    windows = [list(split_pdu(out.get_message(i))[1]) for i in range(out.num_messages())]
    assert windows[0] == [1, 1, 1, 10, 10, 10]           # padded with the first value until full
    assert windows[-1] == [2, 3, 4, 20, 30, 40] and len(windows) == 4


def test_pdu_split_gives_what_pmt_to_python_gives():
    """split_pdu's direct conversions (scalars, an image's bytes) against pmt's own."""
    from gsc_blocks.pdu_util import make_pdu
    meta = {"a": 1, "b": 2.5, "c": "x", "d": True, "e": False, "f": [1, 2], "g": [], "h": -3, "j": 2 ** 40}
    for payload in (np.arange(300, dtype=np.uint8), np.ones(5, np.complex64), np.ones(3, np.float32),
                    np.zeros(0, np.uint8)):
        msg = make_pdu(meta, payload)
        got, symbols = split_pdu(msg)
        assert got == pmt.to_python(pmt.car(msg)) and type(got["d"]) is bool
        assert symbols.dtype == payload.dtype and np.array_equal(symbols, payload)
    assert split_pdu(pmt.cons(pmt.PMT_NIL, pmt.init_u8vector(2, [1, 2])))[0] == {}


def test_image_sink_writes_a_batch_with_the_metrics_of_each_image_and_counts_a_bad_one(tmp_path):
    """The sink's thread takes the images that waited as one batch: every image is written and
    measured as it would be alone (sizes mixed), in arrival order; an image that cannot be
    written is logged and counted and the others go on."""
    import json

    from gsc_blocks.core.images import save_png
    from gsc_blocks.core.metrics import ms_ssim, psnr_db
    from gsc_blocks.image_sink import image_sink
    from gsc_blocks.pdu_util import make_pdu
    rng = np.random.default_rng(3)
    manifest, msgs, expected = tmp_path / "tx_manifest.jsonl", [], []
    with manifest.open("w") as fh:
        for image_id, (h, w) in enumerate([(32, 32), (48, 64), (32, 32), (32, 32), (48, 64)]):
            original = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
            save_png(tmp_path / f"o{image_id}.png", original)
            fh.write(json.dumps({"image_id": image_id, "session": 7, "name": f"o{image_id}", "status": "sent",
                                 "path": str(tmp_path / f"o{image_id}.png"), "height": h, "width": w}) + "\n")
            received = np.clip(original + rng.normal(0, 5 + 5 * image_id, original.shape), 0, 255).astype(np.uint8)
            pixels = received.reshape(-1)[:-3] if image_id == 3 else received.reshape(-1)   # 3: wrong size
            msgs.append(make_pdu({"image_id": image_id, "session": 7, "height": h, "width": w}, pixels))
            if image_id != 3:
                expected.append((image_id, psnr_db(original, received), ms_ssim(original, received)))
    out = tmp_path / "rx"
    sink = image_sink(str(out), str(manifest))
    reports = blocks.message_debug()
    tb = gr.top_block()
    tb.msg_connect(sink, "report", reports, "store")
    tb.start()
    sink.stop()                         # the writer thread ends: the batch below is written inline
    sink._write_batch(msgs)
    deadline = time.time() + 10
    while reports.num_messages() < 4 and time.time() < deadline:
        time.sleep(0.02)                # the reports reach message_debug in its own thread
    tb.stop()
    tb.wait()
    records = [json.loads(line) for line in (out / "received.jsonl").read_text().splitlines()]
    assert sink.count == 4 and sink.write_failures == 1
    assert [r["image_id"] for r in records] == [e[0] for e in expected]
    for record, (image_id, psnr, ssim) in zip(records, expected):
        assert record["psnr_db"] == psnr and record["ms_ssim"] == ssim
        assert (out / record["file"]).is_file()
    got = [pmt.to_python(reports.get_message(i)) for i in range(reports.num_messages())]
    assert [(r["image_id"], r["psnr_db"]) for r in got] == [(e[0], e[1]) for e in expected]
