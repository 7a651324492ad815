import numpy as np

from gsc_blocks.core.reassembly import Reassembler, fragment_sizes
from gsc_blocks.semantic_encoder import fragment


def _meta(index, count, snr=10.0):
    return {"image_id": 7, "fragment_index": index, "fragment_count": count, "codec_id": 1, "rate_index": 0,
            "power_level": 0, "refine_steps": 0, "height": 64, "width": 64, "snr_est_db": snr, "snr_eff_db": snr}


def test_fragment_sizes_match_the_encoder_split():
    symbols = np.arange(2048, dtype=np.complex64)
    parts = fragment(symbols, 700)
    assert [p.size for p in parts] == fragment_sizes(2048, len(parts)) == [683, 683, 682]


def test_lost_fragment_becomes_an_erasure_after_timeout():
    total = 2048
    parts = fragment(np.ones(total, np.complex64), 700)
    r = Reassembler(timeout_s=1.0, image_symbols=lambda meta: total)
    assert r.add(_meta(0, 3), parts[0], now=0.0) == []
    assert r.add(_meta(2, 3), parts[2], now=0.1) == []
    assert r.expired(now=0.5) == []
    (image,) = r.expired(now=1.2)
    assert image.meta["fragments_lost"] == 1 and image.meta["fragments_received"] == 2
    assert image.symbols.size == total
    assert np.all(image.symbols[683:1366] == 0) and np.all(image.symbols[:683] == 1)


def test_complete_image_is_released_at_once_with_mean_noise_snr():
    total = 2048
    parts = fragment(np.ones(total, np.complex64), 1024)
    r = Reassembler(timeout_s=5.0, image_symbols=lambda meta: total)
    assert r.add(_meta(1, 2, snr=10.0), parts[1], now=0.0) == []
    (image,) = r.add(_meta(0, 2, snr=20.0), parts[0], now=0.1)
    assert image.meta["fragments_lost"] == 0
    assert abs(image.snr_eff_db - (-10 * np.log10((0.1 + 0.01) / 2))) < 1e-6


def test_damaged_fragments_are_erasures_and_never_count_as_received():
    """A fragment of the wrong size, or indexed beyond the image's fragment count, is
    zero-filled and listed as damaged: it never counts as received."""
    total = 2048
    parts = fragment(np.ones(total, np.complex64), 1024)
    r = Reassembler(timeout_s=1.0, image_symbols=lambda meta: total)
    assert r.add(_meta(5, 2), parts[1], now=0.0) == [] and not r.pending   # of no image: dropped
    assert r.add(_meta(0, 2), parts[0], now=0.1) == []
    assert r.add(_meta(5, 2), parts[1], now=0.2) == []                # index beyond the count
    (image,) = r.add(_meta(1, 2), parts[1][:100], now=0.3)            # truncated
    assert image.meta["fragments_received"] == 1 and image.meta["fragments_lost"] == 1
    assert image.meta["fragments_missing"] == [1] and image.meta["fragments_damaged"] == [1, 5]
    assert np.all(image.symbols[1024:] == 0) and np.all(image.symbols[:1024] == 1)


def test_a_restarted_transmitter_or_another_rate_never_merges_with_the_run_before():
    """Same image id, another session (a restarted transmitter) or another rate or fragment
    count: two images, each complete on its own."""
    total = 2048
    parts = fragment(np.ones(total, np.complex64), 1024)
    r = Reassembler(timeout_s=5.0, image_symbols=lambda meta: total // (1 + int(meta["rate_index"])))
    assert r.add(_meta(0, 2) | {"session": 3}, parts[0], now=0.0) == []
    assert r.add(_meta(0, 2) | {"session": 4}, parts[0] * 2, now=0.1) == []
    half = fragment(np.ones(total // 2, np.complex64), 1024)
    (other_rate,) = r.add(_meta(0, 1) | {"session": 4, "rate_index": 1}, half[0], now=0.2)
    assert other_rate.symbols.size == 1024 and other_rate.meta["fragments_lost"] == 0
    (first,) = r.add(_meta(1, 2) | {"session": 3}, parts[1], now=0.3)
    (second,) = r.add(_meta(1, 2) | {"session": 4}, parts[1] * 2, now=0.4)
    assert first.meta["session"] == 3 and np.all(first.symbols == 1)
    assert second.meta["session"] == 4 and np.all(second.symbols[:1024] == 2)
    assert not r.pending


def test_a_held_up_handler_does_not_time_out_the_fragment_waiting_behind_it():
    """The receiver's timer thread expires images counted from when its fragment handler was last free
    (`since`): a handler held up by the decoder longer than the timeout has the image's next fragment
    in its queue, and that image must not be split into two halves each missing a fragment."""
    total = 2048
    parts = fragment(np.ones(total, np.complex64), 1100)
    r = Reassembler(timeout_s=1.0, image_symbols=lambda meta: total)
    assert r.add(_meta(0, 2), parts[0], now=0.0) == []
    # the handler returned at 2.0 after 2 s held up: at 2.5 the first fragment is 2.5 s old, but the
    # handler has been free only 0.5 s
    assert r.expired(now=2.5, since=2.0) == []
    (image,) = r.add(_meta(1, 2), parts[1], now=2.6)
    assert image.meta["fragments_lost"] == 0 and np.all(image.symbols == 1)
    # with nothing more arriving, the timeout still applies from the handler's last return
    assert r.add(_meta(0, 2) | {"image_id": 8}, parts[0], now=3.0) == []
    assert r.expired(now=3.9, since=3.0) == []
    (lost,) = r.expired(now=4.1, since=3.0)
    assert lost.meta["fragments_lost"] == 1


def test_a_fragment_after_its_image_timed_out_is_dropped_as_late_not_decoded_again():
    """The image went to the decoder with the fragment as an erasure; the fragment, coming after
    all, must not start a second copy of the image (missing the other fragments) that is decoded
    and reported again."""
    total = 2048
    parts = fragment(np.ones(total, np.complex64), 1100)
    r = Reassembler(timeout_s=1.0, image_symbols=lambda meta: total)
    assert r.add(_meta(0, 2), parts[0], now=0.0) == []
    (image,) = r.expired(now=1.5)
    assert image.meta["fragments_missing"] == [1]
    assert r.add(_meta(1, 2), parts[1], now=2.0) == [] and r.late == 1
    assert r.add(_meta(0, 2), parts[0], now=2.1) == [] and r.late == 2      # a copy of one it had
    assert not r.pending and r.expired(now=10.0) == [] and r.drain() == []
    # the next image, and the same id from a restarted transmitter, are new images
    assert r.add(_meta(0, 2) | {"image_id": 8}, parts[0], now=3.0) == [] and len(r.pending) == 1
    (restarted,) = r.add(_meta(0, 1) | {"session": 9}, np.ones(total, np.complex64), now=3.1)
    assert restarted.meta["session"] == 9 and restarted.meta["fragments_lost"] == 0 and r.late == 2
