"""Emulated channel from a radio setup's 'channel' section, built from gr-channels."""
import numpy as np
import pmt
from gnuradio import channels, gr

from .core.fading import block_fading_gains
from .core.frame import Numerology


def noise_voltage(snr_db: float, amplitude: float, numerology: Numerology) -> float:
    """Complex noise std per sample giving snr_db per carrier at the TX's full power.

    ofdm_analog_tx scales unit-power carriers by amplitude / sqrt(n_active) before
    an unnormalized IFFT, and the RX FFT is unnormalized too, so per-carrier
    SNR = fft_len * scale^2 / sigma^2.
    """
    n_active = numerology.n_data + len(numerology.pilot_carriers)
    scale = amplitude / np.sqrt(n_active)
    return float(scale * np.sqrt(numerology.fft_len / 10.0 ** (snr_db / 10.0)))


class _per_slot(gr.sync_block):
    """Base of the blocks that change the channel per image slot.

    The slot comes from the 'gsc_slot' tag that ofdm_analog_tx puts on each
    frame's first sample; samples before the first tag use slot 0; the table
    repeats when the slots outrun it.
    """

    def __init__(self, name, table):
        gr.sync_block.__init__(self, name=name, in_sig=[np.complex64], out_sig=[np.complex64])
        self.table = table
        self.slot = 0

    def per_sample(self, n):
        start = self.nitems_read(0)
        values = np.empty(n, self.table.dtype)
        cursor = 0
        for tag in self.get_tags_in_window(0, 0, n, pmt.intern("gsc_slot")):
            at = tag.offset - start
            values[cursor:at] = self.table[self.slot % len(self.table)]
            self.slot, cursor = int(pmt.to_python(tag.value)), at
        values[cursor:] = self.table[self.slot % len(self.table)]
        return values


class slot_noise(_per_slot):
    """AWGN whose level follows an SNR trace, one value per image slot.

    The trace is the SNR at full transmit power, so a lower power level lowers
    the received SNR as it physically would.
    """

    def __init__(self, snr_trace, amplitude, numerology, seed=42):
        _per_slot.__init__(self, "gsc_slot_noise", np.array(
            [noise_voltage(s, amplitude, numerology) for s in snr_trace], dtype=np.float32))
        self.rng = np.random.default_rng(seed)

    def work(self, input_items, output_items):
        x = input_items[0]
        sigma = self.per_sample(len(x))
        noise = (self.rng.standard_normal(len(x)) + 1j * self.rng.standard_normal(len(x))).astype(np.complex64)
        output_items[0][:] = x + noise * (sigma * np.float32(np.sqrt(0.5)))
        return len(x)


class slot_fading(_per_slot):
    """Block fading: the signal times one complex gain per image slot (block_fading_gains).

    The receiver's preamble channel estimate removes the gain's phase; its
    magnitude shows in the per-frame SNR estimate, as over a real fading link.
    """

    def __init__(self, n_slots=100000, seed=42):
        _per_slot.__init__(self, "gsc_slot_fading", block_fading_gains(n_slots, seed))

    def work(self, input_items, output_items):
        x = input_items[0]
        output_items[0][:] = x * self.per_sample(len(x))
        return len(x)


class gsc_channel(gr.hier_block2):
    """AWGN at a per-carrier SNR, CFO, multipath taps and flat Rayleigh/Rician fading.

    Args:
        snr_db: per-carrier SNR at full transmit power.
        cfo: carrier frequency offset in carrier spacings.
        taps: sample-spaced multipath taps (normalized here to unit energy).
        fading: 'none', 'rayleigh' or 'rician' (gr-channels fading_model, unit mean power),
            or 'rayleigh_block' (one Rayleigh gain per image slot, see slot_fading).
        doppler: max Doppler frequency normalized to the sample rate.
        k_factor: Rician K.
        amplitude, fft_len, cp_len: the transmitter's settings (to place the noise).
        seed: noise/fading seed.
        snr_trace: optional SNR per image slot (dB, full power); replaces snr_db and
            changes the noise at each frame's slot tag (see slot_noise).
    """

    def __init__(self, snr_db=10.0, cfo=0.0, taps=(1.0,), fading="none", doppler=1e-5, k_factor=4.0,
                 amplitude=0.1, fft_len=64, cp_len=16, seed=42, snr_trace=None):
        gr.hier_block2.__init__(self, "gsc_channel", gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self.numerology = Numerology(fft_len=fft_len, cp_len=cp_len)
        self.amplitude = amplitude
        taps = np.asarray(taps, dtype=complex)
        taps = taps / np.linalg.norm(taps)
        traced = snr_trace is not None and len(snr_trace) > 0
        self.model = channels.channel_model(0.0 if traced else noise_voltage(snr_db, amplitude, self.numerology),
                                            cfo / fft_len, 1.0, list(taps), int(seed), not traced)
        chain = [self]
        if fading == "rayleigh_block":
            self.block_fading = slot_fading(seed=seed)
            chain.append(self.block_fading)
        elif fading != "none":
            chain.append(channels.fading_model(8, float(doppler), fading == "rician", float(k_factor), int(seed)))
        chain.append(self.model)
        if traced:
            self.trace_noise = slot_noise(snr_trace, amplitude, self.numerology, seed)
            chain.append(self.trace_noise)
        chain.append(self)
        self.connect(*chain)

    def set_snr_db(self, snr_db):
        self.model.set_noise_voltage(noise_voltage(snr_db, self.amplitude, self.numerology))


def from_config(config: dict, snr_db: float | None = None, seed_offset: int = 0) -> gsc_channel:
    """The setup's channel; snr_db, given, is one user's SNR (MU-GSC's air) in place of channel.snr_db
    and its trace, and seed_offset gives that user noise of its own."""
    from .core.controller import read_trace
    ch, ofdm = config["channel"], config["ofdm"]
    trace = read_trace(ch["snr_trace"]) if ch["snr_trace"] and snr_db is None else None
    return gsc_channel(snr_db=ch["snr_db"] if snr_db is None else snr_db, cfo=ch["cfo"], taps=ch["multipath_taps"],
                       fading=ch["fading"], doppler=ch["doppler"], k_factor=ch["k_factor"],
                       amplitude=ofdm["amplitude"], fft_len=ofdm["fft_len"], cp_len=ofdm["cp_len"],
                       seed=ch["seed"] + seed_offset, snr_trace=trace)
