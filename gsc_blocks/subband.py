"""Sub-bands of one stream (MU-GSC): the filters of the loopback air and of the receiver's
channelizer, and where each user's sub-band lies."""
from gnuradio import filter as grfilter

# Sub-band filter: flat to 0.42 of the user's band (OFDM's outermost carrier sits at 26/64 = 0.406),
# stopped from 0.58 on, where the next user's carriers begin; 80 dB.
SUBBAND_CUTOFF, SUBBAND_TRANSITION, SUBBAND_ATTENUATION_DB = 0.5, 0.16, 80.0


def subband_taps(users: int) -> list[float]:
    """The channelizer's prototype low-pass (sample rate = users, a user's band = 1)."""
    return list(grfilter.firdes.low_pass_2(1.0, users, SUBBAND_CUTOFF, SUBBAND_TRANSITION, SUBBAND_ATTENUATION_DB))


def air_taps(users: int) -> list[float]:
    """The air's interpolation filter: the same low-pass at gain `users` (amplitude kept), led by
    zeros to a multiple of `users` taps, so the air and the channelizer delay a user's samples by a
    whole number of them (a half-sample delay would cost the sparse channel estimate about 1 dB
    of SNR; measured)."""
    taps = list(grfilter.firdes.low_pass_2(users, users, SUBBAND_CUTOFF, SUBBAND_TRANSITION, SUBBAND_ATTENUATION_DB))
    return [0.0] * (-len(taps) % users) + taps


def subband_offset_hz(user: int, users: int, user_rate: float) -> float:
    """Where user k's sub-band sits from the receive stream's centre (the channelizer's channel k)."""
    k = user if user <= users // 2 else user - users
    return k * user_rate
