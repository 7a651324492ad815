"""Block fading shared by the emulated channel and the ideal-channel benchmark."""
import numpy as np


def block_fading_gains(n_slots: int, seed: int) -> np.ndarray:
    """Rayleigh block fading: one complex gain CN(0, 1) per image slot (unit mean power).

    The same seed gives the same gains in gsc_channel (rayleigh_block) and in
    bench link's ideal point, so both see the same fades image by image.
    """
    rng = np.random.default_rng([int(seed), 0xFADE])
    pairs = rng.standard_normal((n_slots, 2))       # slot i's gain does not depend on n_slots
    return ((pairs[:, 0] + 1j * pairs[:, 1]) * np.sqrt(0.5)).astype(np.complex64)
