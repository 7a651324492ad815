"""Emulated channel from a radio setup's 'channel' section, built from gr-channels."""
import numpy as np
from gnuradio import channels, gr

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


class gsc_channel(gr.hier_block2):
    """AWGN at a per-carrier SNR, CFO, multipath taps and flat Rayleigh/Rician fading.

    Args:
        snr_db: per-carrier SNR at full transmit power.
        cfo: carrier frequency offset in carrier spacings.
        taps: sample-spaced multipath taps (normalized here to unit energy).
        fading: 'none', 'rayleigh' or 'rician' (gr-channels fading_model, unit mean power).
        doppler: max Doppler frequency normalized to the sample rate.
        k_factor: Rician K.
        amplitude, fft_len, cp_len: the transmitter's settings (to place the noise).
        seed: noise/fading seed.
    """

    def __init__(self, snr_db=10.0, cfo=0.0, taps=(1.0,), fading="none", doppler=1e-5, k_factor=4.0,
                 amplitude=0.1, fft_len=64, cp_len=16, seed=42):
        gr.hier_block2.__init__(self, "gsc_channel", gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self.numerology = Numerology(fft_len=fft_len, cp_len=cp_len)
        self.amplitude = amplitude
        taps = np.asarray(taps, dtype=complex)
        taps = taps / np.linalg.norm(taps)
        self.model = channels.channel_model(noise_voltage(snr_db, amplitude, self.numerology),
                                            cfo / fft_len, 1.0, list(taps), int(seed), True)
        chain = [self]
        if fading != "none":
            chain.append(channels.fading_model(8, float(doppler), fading == "rician", float(k_factor), int(seed)))
        chain += [self.model, self]
        self.connect(*chain)

    def set_snr_db(self, snr_db):
        self.model.set_noise_voltage(noise_voltage(snr_db, self.amplitude, self.numerology))


def from_config(config: dict) -> gsc_channel:
    ch, ofdm = config["channel"], config["ofdm"]
    return gsc_channel(snr_db=ch["snr_db"], cfo=ch["cfo"], taps=ch["multipath_taps"], fading=ch["fading"],
                       doppler=ch["doppler"], k_factor=ch["k_factor"], amplitude=ofdm["amplitude"],
                       fft_len=ofdm["fft_len"], cp_len=ofdm["cp_len"], seed=ch["seed"])
