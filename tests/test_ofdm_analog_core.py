"""Receiver numerics on synthetic frames (numpy only)."""
import numpy as np
import pytest

from gsc_blocks.core.frame import Numerology
from gsc_blocks.core.ofdm_analog import equalize, estimate_cfo, estimate_channel, refine_cfo, to_frequency

N = Numerology()


def _time_symbols(fd_symbols):
    return np.fft.ifft(np.fft.ifftshift(fd_symbols, axes=1), axis=1)


def _frame(rng, n_payload=11):
    sync1, sync2 = N.sync_words
    payload = np.zeros((n_payload, 64), complex)
    payload[:, N.data_bins] = (rng.standard_normal((n_payload, 48)) + 1j * rng.standard_normal((n_payload, 48))) / np.sqrt(2)
    payload[:, N.pilot_bins] = N.pilot_symbols[np.arange(n_payload) % len(N.pilot_symbols)]
    return np.vstack([sync1, sync2, payload]), payload


def _through_channel(fd, taps, snr_db, cfo, rng):
    """OFDM with CP through taps, CFO and AWGN at a per-carrier SNR; returns CP-free symbols."""
    td = _time_symbols(fd)
    tx = np.concatenate([np.concatenate([s[-16:], s]) for s in td])
    rx = np.convolve(tx, taps)[:tx.size] * np.exp(1j * cfo * np.arange(tx.size))
    sigma2 = 64 / 64 * 10 ** (-snr_db / 10) / 64     # ifft scales carriers by 1/64 in power per sample
    rx = rx + np.sqrt(sigma2 / 2) * (rng.standard_normal(rx.size) + 1j * rng.standard_normal(rx.size))
    return rx.reshape(-1, 80)[:, 16:]


def test_flat_channel_estimate_and_snr():
    rng = np.random.default_rng(1)
    fd, _ = _frame(rng)
    estimates = []
    for _ in range(40):
        t = _through_channel(fd, [0.8j], 15.0, 0.0, rng)
        chan = estimate_channel(*to_frequency(t[:2], N, 0.0, 0), N)
        estimates.append(chan.snr_db)
        assert list(chan.taps) == [0]
        assert np.allclose(chan.response[N.data_bins], 0.8j, atol=0.05)
    assert abs(np.mean(estimates) - (15.0 + 20 * np.log10(0.8))) < 0.5


def test_cfo_is_estimated_and_removed():
    rng = np.random.default_rng(2)
    fd, payload = _frame(rng, 30)
    cfo = 2 * np.pi * 0.07 / 64         # 0.07 carrier spacings
    t = _through_channel(fd, [1.0, 0.3, 0.1j], 25.0, cfo, rng)
    coarse = estimate_cfo(t[0])
    fine = refine_cfo(t, N, coarse)
    assert abs(fine - cfo) < abs(coarse - cfo) + 1e-4 and abs(fine - cfo) < 2e-4
    fdr = to_frequency(t, N, fine, 0)
    chan = estimate_channel(fdr[0], fdr[1], N)
    eq = equalize(fdr[2:], chan, N, 0)
    mse = np.mean(np.abs(eq.symbols - payload[:, N.data_bins].reshape(-1)) ** 2)
    assert abs(-10 * np.log10(mse) - eq.snr_eff_db) < 1.0


def test_numerics_over_many_frames_equal_the_one_frame_numerics():
    """The batch forms (what frame_receiver runs) give per frame what the one-frame forms give."""
    from gsc_blocks.core.ofdm_analog import (decision_directed_refinement, decision_directed_refinements,
                                             equalize_frames, estimate_cfos, estimate_channels, refine_cfos,
                                             to_frequencies)
    rng = np.random.default_rng(4)
    frames = []
    for k, taps in enumerate(([1.0], [1.0, 0.3, 0.1j], [0.5j, 0.0, 0.0, 0.2], [0.9, 0.35j, 0.15])):
        fd, _ = _frame(rng, 11)
        frames.append(_through_channel(fd, taps, 5.0 + 5 * k, 2 * np.pi * 0.01 * k / 64, rng))
    t = np.array(frames, np.complex64)
    coarse = estimate_cfos(t[:, 0])
    fine = refine_cfos(t, N, coarse)
    fd = to_frequencies(t, N, fine, 0)
    response, noise_var, taps = estimate_channels(fd[:, 0], fd[:, 1], N)
    symbols, noise, slope = equalize_frames(fd[:, 2:], response, noise_var, N, 0)
    known = np.sign(symbols.real).astype(np.complex64)
    cfo_dd, noise_dd = decision_directed_refinements(fd[:, 2:], known, response, noise_var, N, 0)
    for k in range(len(t)):
        assert coarse[k] == pytest.approx(estimate_cfo(t[k, 0]), abs=1e-9)
        assert fine[k] == pytest.approx(refine_cfo(t[k], N, coarse[k]), abs=1e-9)
        one = to_frequency(t[k], N, fine[k], 0)
        assert np.allclose(fd[k], one, atol=1e-5)
        chan = estimate_channel(one[0], one[1], N)
        assert list(taps[k]) == list(chan.taps)
        assert np.allclose(response[k], chan.response, atol=1e-5)
        assert noise_var[k] == pytest.approx(chan.noise_var, rel=1e-5)
        eq = equalize(one[2:], chan, N, 0)
        assert np.allclose(symbols[k], eq.symbols, atol=1e-4) and slope[k] == pytest.approx(eq.phase_slope)
        dd = decision_directed_refinement(one[2:], known[k], chan, N, 0)
        assert (cfo_dd[k], noise_dd[k]) == pytest.approx(dd, rel=1e-5)
