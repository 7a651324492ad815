"""Receiver numerics for the analog OFDM frame, per frame, on FFT-domain symbols.

Input is a frame's CP-free time-domain symbols as header_payload_demux cuts
them; to_frequency derotates the CFO and transforms them to centred FFT bins
(bin = carrier + fft_len/2, as gr-digital's fft_vcc(shift=True) gives).

Why not ofdm_chanest_vcvc + ofdm_frame_equalizer_vcvc: the static equalizer
divides by a raw one-symbol LS estimate, which doubles the noise on an analog
payload (3 dB lost), and simpledfe tracks by slicing to a constellation, which
analog symbols do not follow. Here the estimate uses both sync words and a
sparse least-squares fit of the channel impulse response (taps inside the
cyclic prefix), which removes most of the estimation noise, and the phase is
tracked over the frame from the pilots without any decision.
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .frame import Numerology


@dataclass
class ChannelEstimate:
    response: np.ndarray      # complex [fft_len], centred bins; zero off the active carriers
    noise_var: float          # complex noise variance per carrier, same scale as response
    taps: np.ndarray          # delays (samples) kept in the fit

    @property
    def snr_db(self) -> float:
        """Mean per-carrier SNR at the preamble's power (|H|^2 averaged over active carriers)."""
        active = np.abs(self.response) > 0
        power = float(np.mean(np.abs(self.response[active]) ** 2))
        return 10.0 * np.log10(max(power, 1e-20) / max(self.noise_var, 1e-20))


def preamble_waveform(numerology: Numerology) -> np.ndarray:
    """Time-domain sync words 1 and 2 with their cyclic prefixes, as ofdm_analog_tx sends them
    (up to scale): the template the receiver correlates with to find frames."""
    out = []
    for word in numerology.sync_words:
        symbol = np.fft.ifft(np.fft.ifftshift(word))
        out.append(np.concatenate([symbol[-numerology.cp_len:], symbol]))
    waveform = np.concatenate(out)
    return (waveform / np.sqrt(np.mean(np.abs(waveform) ** 2))).astype(np.complex64)


def estimate_cfo(sync1_time: np.ndarray) -> float:
    """Carrier frequency offset in rad/sample from the received sync word 1.

    Sync word 1 occupies odd carriers only, so its second half is the negated
    first half; the phase between them is pi * (offset in carrier spacings).
    Unambiguous for offsets within +-1 carrier spacing.
    """
    return float(estimate_cfos(np.asarray(sync1_time)[None])[0])


def estimate_cfos(sync1_time: np.ndarray) -> np.ndarray:
    """estimate_cfo of each row of [k, fft_len] received sync words 1."""
    half = sync1_time.shape[-1] // 2
    corr = np.sum(np.conj(sync1_time[:, :half]) * sync1_time[:, half:], axis=1)
    return np.angle(-corr) / half


def refine_cfo(time_symbols: np.ndarray, numerology: Numerology, cfo: float) -> float:
    """Refine a coarse CFO with the phase between sync words 1 and 2.

    The coarse estimate uses 32 sample pairs; sync word 1 against the channel
    seen on sync word 2 spans a whole symbol (80 samples) over 26 carriers, so
    the residual is several times more accurate; the coarse value resolves its
    ambiguity (+-0.4 carrier spacings).
    """
    return float(refine_cfos(np.asarray(time_symbols)[None], numerology, np.array([cfo]))[0])


def refine_cfos(time_symbols: np.ndarray, numerology: Numerology, cfo: np.ndarray) -> np.ndarray:
    """refine_cfo of k frames at once: time_symbols [k, >= 2, fft_len], cfo [k]."""
    sync1, sync2 = numerology.sync_words
    fd = to_frequencies(time_symbols[:, :2], numerology, cfo, 0)
    bins2 = np.nonzero(sync2)[0]
    h2 = np.zeros((len(fd), numerology.fft_len), dtype=np.complex64)
    h2[:, bins2] = fd[:, 1, bins2] / sync2[bins2]
    bins1 = np.nonzero(sync1)[0]
    phase = np.angle(np.sum(np.conj(sync1[bins1] * h2[:, bins1]) * fd[:, 0, bins1], axis=1))
    return cfo - phase / numerology.symbol_len


def to_frequency(time_symbols: np.ndarray, numerology: Numerology, cfo: float,
                 first_symbol: int) -> np.ndarray:
    """CP-free time-domain symbols [n, fft_len] -> centred FFT bins, CFO removed.

    first_symbol is the index of time_symbols[0] in the frame (0 = sync word 1):
    the derotation phase runs continuously from the frame's first sample.
    """
    return to_frequencies(np.asarray(time_symbols)[None], numerology, np.array([cfo]), first_symbol)[0]


def to_frequencies(time_symbols: np.ndarray, numerology: Numerology, cfo: np.ndarray,
                   first_symbol: int) -> np.ndarray:
    """to_frequency of k frames at once: time_symbols [k, n, fft_len], cfo [k]."""
    n_sym = time_symbols.shape[1]
    index = (first_symbol + np.arange(n_sym))[:, None] * numerology.symbol_len \
        + numerology.cp_len + np.arange(numerology.fft_len)[None, :]
    derotated = time_symbols * np.exp(-1j * np.asarray(cfo, dtype=float)[:, None, None] * index[None])
    return np.fft.fftshift(np.fft.fft(derotated, axis=2), axes=2).astype(np.complex64)


def _delay_matrix(carriers: np.ndarray, delays: np.ndarray, fft_len: int) -> np.ndarray:
    return np.exp(-2j * np.pi * np.outer(carriers, delays) / fft_len)


@lru_cache(maxsize=16)
def _preamble_fit(numerology: Numerology, min_delay: int, max_delay: int):
    """The sparse fit's constants for a numerology: the preamble's carriers (bins into the two sync
    words), the dictionary of delays over them, its column energies, and the delays' response on
    the active carriers."""
    sync1, sync2 = numerology.sync_words
    centre = numerology.fft_len // 2
    bins = [np.nonzero(ref)[0] for ref in (sync1, sync2)]
    known = np.concatenate([sync1[bins[0]], sync2[bins[1]]])
    carriers = np.concatenate(bins) - centre
    delays = np.arange(min_delay, max_delay)
    dictionary = known[:, None] * _delay_matrix(carriers, delays, numerology.fft_len)
    active = np.nonzero(sync2)[0]
    return (bins, delays, dictionary, np.sum(np.abs(dictionary) ** 2, axis=0), active,
            _delay_matrix(active - centre, delays, numerology.fft_len).T)


def estimate_channel(sync1_rx: np.ndarray, sync2_rx: np.ndarray, numerology: Numerology,
                     min_delay: int = -4, max_delay: int | None = None,
                     tap_threshold: float = 10.0, max_taps: int = 12) -> ChannelEstimate:
    """Channel response and noise variance from the two received sync words.

    The impulse response is fitted over the 78 known preamble carriers with
    greedy sparse least squares (orthogonal matching pursuit over delays
    [min_delay, max_delay)): a tap is added while it removes more than
    tap_threshold times the per-degree-of-freedom residual power. A flat channel
    then costs one tap of estimation noise instead of one per carrier, and the
    null guard carriers cannot inflate the fit the way a full-window LS does.
    Negative delays absorb a timing point a few samples early.
    """
    response, noise_var, taps = estimate_channels(np.asarray(sync1_rx)[None], np.asarray(sync2_rx)[None],
                                                  numerology, min_delay, max_delay, tap_threshold, max_taps)
    return ChannelEstimate(response=response[0], noise_var=float(noise_var[0]), taps=taps[0])


def estimate_channels(sync1_rx: np.ndarray, sync2_rx: np.ndarray, numerology: Numerology,
                      min_delay: int = -4, max_delay: int | None = None,
                      tap_threshold: float = 10.0, max_taps: int = 12):
    """estimate_channel of k frames at once (sync words [k, fft_len], centred bins), the pursuit
    run on all of them together: -> (responses [k, fft_len], noise variances [k], the delays each
    kept: a list of k arrays)."""
    max_delay = numerology.cp_len if max_delay is None else max_delay
    bins, delays, dictionary, column_energy, active, response_of = _preamble_fit(numerology, min_delay, max_delay)
    obs = np.concatenate([sync1_rx[:, bins[0]], sync2_rx[:, bins[1]]], axis=1).astype(np.complex128)
    k, m = obs.shape
    selected = np.zeros((k, max_taps), dtype=int)
    taps = np.zeros((k, max_taps), dtype=np.complex128)
    count = np.zeros(k, dtype=int)
    residual = obs.copy()
    energy = np.sum(np.abs(obs) ** 2, axis=1)
    rows = np.arange(k)
    for t in range(max_taps):
        if rows.size == 0:
            break
        score = np.abs(residual[rows] @ dictionary.conj()) ** 2 / column_energy
        score[np.arange(rows.size)[:, None], selected[rows, :t]] = -1.0
        candidate = np.concatenate([selected[rows, :t], np.argmax(score, axis=1)[:, None]], axis=1)
        design = np.transpose(dictionary[:, candidate], (1, 0, 2))               # [rows, m, t + 1]
        gram = np.conj(np.transpose(design, (0, 2, 1))) @ design
        new_taps = np.linalg.solve(gram, np.einsum("rmt,rm->rt", design.conj(), obs[rows]))
        new_residual = obs[rows] - np.einsum("rmt,rt->rm", design, new_taps)
        new_energy = np.sum(np.abs(new_residual) ** 2, axis=1)
        per_dof = new_energy / max(m - (t + 1), 1)
        keep = np.ones(rows.size, bool) if t == 0 else energy[rows] - new_energy >= tap_threshold * per_dof
        grown = rows[keep]
        selected[grown, :t + 1] = candidate[keep]
        taps[grown, :t + 1] = new_taps[keep]
        count[grown] = t + 1
        residual[grown], energy[grown] = new_residual[keep], new_energy[keep]
        rows = grown
    noise_var = np.maximum(energy / np.maximum(m - count, 1), 1e-20)
    response = np.zeros((k, numerology.fft_len), dtype=np.complex64)
    response[:, active] = np.einsum("kj,kja->ka", taps, response_of[selected])
    return response, noise_var, [delays[selected[i, :count[i]]] for i in range(k)]


@dataclass
class EqualizedFrame:
    symbols: np.ndarray       # complex64 [n_sym * n_data], data carriers in allocator order
    noise_var: np.ndarray     # float32 per symbol slot: noise variance after equalization
    phase_slope: float        # residual CFO tracked from pilots, rad per OFDM symbol

    @property
    def snr_eff_db(self) -> float:
        """AWGN-equivalent SNR of the equalized symbols (unit-power transmit symbols)."""
        return float(-10.0 * np.log10(np.mean(self.noise_var)))


def equalize(symbols_fd: np.ndarray, channel: ChannelEstimate, numerology: Numerology,
             first_symbol_index: int, slope: float | None = None, window: int = 8) -> EqualizedFrame:
    """Zero-forcing equalization of [n_sym, fft_len] symbols with pilot phase tracking.

    first_symbol_index is the position of symbols_fd[0] after the sync words; it
    selects the pilot values (gr-digital's allocator cycles them per symbol).
    The common phase of symbol n is the pilots' phase averaged over symbols
    n-window..n+window after removing a linear drift of `slope` rad/symbol; when
    slope is None it is first estimated from the pilots themselves. No decisions
    on the analog data.
    """
    symbols_fd = np.asarray(symbols_fd, dtype=np.complex64).reshape(1, -1, numerology.fft_len)
    symbols, noise, slopes = equalize_frames(symbols_fd, channel.response[None], np.array([channel.noise_var]),
                                             numerology, first_symbol_index, slope, window)
    return EqualizedFrame(symbols=symbols[0], noise_var=noise[0], phase_slope=float(slopes[0]))


def equalize_frames(symbols_fd: np.ndarray, response: np.ndarray, noise_var: np.ndarray, numerology: Numerology,
                    first_symbol_index: int, slope: float | None = None, window: int = 8):
    """equalize of k frames of the same length at once: symbols_fd [k, n_sym, fft_len], channel
    responses [k, fft_len] and noise variances [k] -> (symbols complex64 [k, n_sym * n_data], noise
    variances float32 [k, n_sym * n_data], phase slopes [k])."""
    k, n_sym = symbols_fd.shape[:2]
    pilots_known = numerology.pilot_symbols
    rows = (first_symbol_index + np.arange(n_sym)) % len(pilots_known)
    pilot_h = response[:, numerology.pilot_bins]
    pilot_rx = symbols_fd[:, :, numerology.pilot_bins]
    corr = np.sum(np.conj(pilot_h[:, None, :] * pilots_known[rows][None]) * pilot_rx, axis=2)
    if slope is None:
        slope = np.angle(np.sum(corr[:, 1:] * np.conj(corr[:, :-1]), axis=1)) if n_sym > 1 else np.zeros(k)
    slope = np.broadcast_to(np.asarray(slope, dtype=float), (k,))
    index = np.arange(n_sym)
    lag = index[None, :] - index[:, None]                 # [n, m] = m - n
    weights = (np.abs(lag) <= window)[None] * np.exp(-1j * slope[:, None, None] * lag[None])
    phase = np.angle(np.einsum("knm,km->kn", weights, corr))
    data_h = response[:, None, numerology.data_bins] * np.exp(1j * phase)[:, :, None]
    equalized = symbols_fd[:, :, numerology.data_bins] / data_h
    noise = np.asarray(noise_var, dtype=float)[:, None, None] / np.abs(data_h) ** 2
    return (equalized.reshape(k, -1).astype(np.complex64), noise.reshape(k, -1).astype(np.float32),
            slope.astype(float))


def decision_directed_refinement(symbols_fd: np.ndarray, known_data: np.ndarray, channel: ChannelEstimate,
                                 numerology: Numerology, first_symbol_index: int, preamble_dof: int = 70):
    """Residual CFO (rad/sample) and a better noise variance from symbols known after decoding.

    Once the header passes its CRC its BPSK symbols are known: with the pilots they
    give every header symbol a phase reference over all carriers, so the residual
    frequency offset is measured far better than from 4 pilots, and the residuals
    add hundreds of observations to the noise estimate.
    """
    symbols_fd = np.asarray(symbols_fd, dtype=np.complex64).reshape(1, -1, numerology.fft_len)
    cfo, noise_var = decision_directed_refinements(symbols_fd, np.asarray(known_data)[None], channel.response[None],
                                                   np.array([channel.noise_var]), numerology, first_symbol_index,
                                                   preamble_dof)
    return float(cfo[0]), float(noise_var[0])


def decision_directed_refinements(symbols_fd: np.ndarray, known_data: np.ndarray, response: np.ndarray,
                                  noise_var: np.ndarray, numerology: Numerology, first_symbol_index: int,
                                  preamble_dof: int = 70):
    """decision_directed_refinement of k frames at once: symbols_fd [k, n_sym, fft_len], known data
    [k, n_sym * n_data], responses [k, fft_len], noise variances [k] -> (residual CFOs [k], noise
    variances [k])."""
    k, n_sym = symbols_fd.shape[:2]
    known = np.zeros_like(symbols_fd)
    known[:, :, numerology.data_bins] = known_data.reshape(k, n_sym, -1)
    rows = (first_symbol_index + np.arange(n_sym)) % len(numerology.pilot_symbols)
    known[:, :, numerology.pilot_bins] = numerology.pilot_symbols[rows]
    reference = known * response[:, None, :]
    z = np.sum(np.conj(reference) * symbols_fd, axis=2)
    slope = np.angle(np.sum(z[:, 1:] * np.conj(z[:, :-1]), axis=1)) if n_sym > 1 else np.zeros(k)
    index = np.arange(n_sym)
    offset = np.angle(np.sum(z * np.exp(-1j * slope[:, None] * index[None]), axis=1))
    predicted = reference * np.exp(1j * (offset[:, None] + slope[:, None] * index[None]))[:, :, None]
    used = np.abs(known[0]) > 0
    residual = np.sum((np.abs(symbols_fd - predicted) ** 2)[:, used], axis=1)
    observations = int(used.sum())
    noise = (residual + np.asarray(noise_var, dtype=float) * preamble_dof) / (observations + preamble_dof)
    return slope / numerology.symbol_len, noise


def header_soft_bits(frame: EqualizedFrame) -> np.ndarray:
    """BPSK log-likelihood ratios (+ for bit 0) for the header decoder."""
    return soft_bits(frame.symbols, frame.noise_var)


def soft_bits(symbols: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    """header_soft_bits of equalized BPSK symbols and their noise variances, any shape."""
    return (4.0 * symbols.real / noise_var).astype(np.float32) / 2.0
