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
    half = len(sync1_time) // 2
    corr = np.sum(np.conj(sync1_time[:half]) * sync1_time[half:])
    return float(np.angle(-corr) / half)


def refine_cfo(time_symbols: np.ndarray, numerology: Numerology, cfo: float) -> float:
    """Refine a coarse CFO with the phase between sync words 1 and 2.

    The coarse estimate uses 32 sample pairs; sync word 1 against the channel
    seen on sync word 2 spans a whole symbol (80 samples) over 26 carriers, so
    the residual is several times more accurate; the coarse value resolves its
    ambiguity (+-0.4 carrier spacings).
    """
    sync1, sync2 = numerology.sync_words
    fd = to_frequency(time_symbols[:2], numerology, cfo, 0)
    bins2 = np.nonzero(sync2)[0]
    h2 = np.zeros(numerology.fft_len, dtype=np.complex64)
    h2[bins2] = fd[1, bins2] / sync2[bins2]
    bins1 = np.nonzero(sync1)[0]
    phase = np.angle(np.sum(np.conj(sync1[bins1] * h2[bins1]) * fd[0, bins1]))
    return float(cfo - phase / numerology.symbol_len)


def to_frequency(time_symbols: np.ndarray, numerology: Numerology, cfo: float,
                 first_symbol: int) -> np.ndarray:
    """CP-free time-domain symbols [n, fft_len] -> centred FFT bins, CFO removed.

    first_symbol is the index of time_symbols[0] in the frame (0 = sync word 1):
    the derotation phase runs continuously from the frame's first sample.
    """
    n_sym = len(time_symbols)
    index = (first_symbol + np.arange(n_sym))[:, None] * numerology.symbol_len \
        + numerology.cp_len + np.arange(numerology.fft_len)[None, :]
    derotated = time_symbols * np.exp(-1j * cfo * index)
    return np.fft.fftshift(np.fft.fft(derotated, axis=1), axes=1).astype(np.complex64)


def _delay_matrix(carriers: np.ndarray, delays: np.ndarray, fft_len: int) -> np.ndarray:
    return np.exp(-2j * np.pi * np.outer(carriers, delays) / fft_len)


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
    n = numerology.fft_len
    max_delay = numerology.cp_len if max_delay is None else max_delay
    sync1, sync2 = numerology.sync_words
    centre = n // 2
    obs, known, carriers = [], [], []
    for rx, ref in ((sync1_rx, sync1), (sync2_rx, sync2)):
        bins = np.nonzero(ref)[0]
        obs.append(rx[bins])
        known.append(ref[bins])
        carriers.append(bins - centre)
    obs, known, carriers = map(np.concatenate, (obs, known, carriers))
    delays = np.arange(min_delay, max_delay)
    dictionary = known[:, None] * _delay_matrix(carriers, delays, n)
    column_energy = np.sum(np.abs(dictionary) ** 2, axis=0)

    selected: list[int] = []
    residual = obs
    energy = float(np.sum(np.abs(obs) ** 2))
    taps = np.zeros(0, dtype=np.complex128)
    while len(selected) < max_taps:
        score = np.abs(dictionary.conj().T @ residual) ** 2 / column_energy
        score[selected] = -1.0
        candidate = selected + [int(np.argmax(score))]
        design = dictionary[:, candidate]
        new_taps, *_ = np.linalg.lstsq(design, obs, rcond=None)
        new_residual = obs - design @ new_taps
        new_energy = float(np.sum(np.abs(new_residual) ** 2))
        per_dof = new_energy / max(len(obs) - len(candidate), 1)
        if selected and energy - new_energy < tap_threshold * per_dof:
            break
        selected, taps, residual, energy = candidate, new_taps, new_residual, new_energy
    noise_var = energy / max(len(obs) - len(selected), 1)

    active = np.nonzero(sync2)[0]
    response = np.zeros(n, dtype=np.complex64)
    response[active] = _delay_matrix(active - centre, delays[selected], n) @ taps
    return ChannelEstimate(response=response, noise_var=max(noise_var, 1e-20), taps=delays[selected])


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
    symbols_fd = np.asarray(symbols_fd, dtype=np.complex64).reshape(-1, numerology.fft_len)
    n_sym = len(symbols_fd)
    pilots_known = numerology.pilot_symbols
    rows = (first_symbol_index + np.arange(n_sym)) % len(pilots_known)
    pilot_h = channel.response[numerology.pilot_bins]
    pilot_rx = symbols_fd[:, numerology.pilot_bins]
    corr = np.sum(np.conj(pilot_h[None, :] * pilots_known[rows]) * pilot_rx, axis=1)
    if slope is None:
        slope = float(np.angle(np.sum(corr[1:] * np.conj(corr[:-1])))) if n_sym > 1 else 0.0
    index = np.arange(n_sym)
    lag = index[None, :] - index[:, None]                 # [n, m] = m - n
    weights = (np.abs(lag) <= window) * np.exp(-1j * slope * lag)
    phase = np.angle(weights @ corr)
    data_h = channel.response[numerology.data_bins][None, :] * np.exp(1j * phase)[:, None]
    equalized = symbols_fd[:, numerology.data_bins] / data_h
    noise = np.broadcast_to(channel.noise_var / np.abs(data_h) ** 2, equalized.shape)
    return EqualizedFrame(symbols=equalized.reshape(-1).astype(np.complex64),
                          noise_var=noise.reshape(-1).astype(np.float32), phase_slope=float(slope))


def decision_directed_refinement(symbols_fd: np.ndarray, known_data: np.ndarray, channel: ChannelEstimate,
                                 numerology: Numerology, first_symbol_index: int, preamble_dof: int = 70):
    """Residual CFO (rad/sample) and a better noise variance from symbols known after decoding.

    Once the header passes its CRC its BPSK symbols are known: with the pilots they
    give every header symbol a phase reference over all carriers, so the residual
    frequency offset is measured far better than from 4 pilots, and the residuals
    add hundreds of observations to the noise estimate.
    """
    symbols_fd = np.asarray(symbols_fd, dtype=np.complex64).reshape(-1, numerology.fft_len)
    n_sym = len(symbols_fd)
    known = np.zeros_like(symbols_fd)
    known[:, numerology.data_bins] = known_data.reshape(n_sym, -1)
    rows = (first_symbol_index + np.arange(n_sym)) % len(numerology.pilot_symbols)
    known[:, numerology.pilot_bins] = numerology.pilot_symbols[rows]
    reference = known * channel.response[None, :]
    z = np.sum(np.conj(reference) * symbols_fd, axis=1)
    slope = float(np.angle(np.sum(z[1:] * np.conj(z[:-1])))) if n_sym > 1 else 0.0
    index = np.arange(n_sym)
    offset = np.angle(np.sum(z * np.exp(-1j * slope * index)))
    predicted = reference * np.exp(1j * (offset + slope * index))[:, None]
    used = np.abs(known) > 0
    residual = np.sum(np.abs(symbols_fd - predicted)[used] ** 2)
    observations = int(used.sum())
    noise_var = (residual + channel.noise_var * preamble_dof) / (observations + preamble_dof)
    return slope / numerology.symbol_len, float(noise_var)


def header_soft_bits(frame: EqualizedFrame) -> np.ndarray:
    """BPSK log-likelihood ratios (+ for bit 0) for the header decoder."""
    return (4.0 * frame.symbols.real / frame.noise_var).astype(np.float32) / 2.0
