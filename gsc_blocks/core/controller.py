"""Lyapunov drift-plus-penalty allocation of rate, power and decoding effort per image.

Per image slot t the transmitter sees the fed-back SNR (at reference power) and
picks an action a = (rate_index, power_level, refine_steps) minimizing

    V * E(a) + Z * D(a) - Y * Q(a, snr)

over a finite action set, then updates the virtual queues with what the slot
really cost and delivered:

    Z <- max(0, Z + D - D_target)      (average delay constraint)
    Y <- max(0, Y + Q_target - Q)      (average quality constraint)

E = transmit power x airtime, D = airtime + decode time, Q = expected quality
from a calibration table Q(snr, rate, steps) measured by the benchmarks.
"""
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .frame import power_gain


@dataclass(frozen=True)
class Action:
    rate_index: int
    power_level: int
    refine_steps: int


class CalibrationTable:
    """Expected quality (PSNR, dB) and costs per action, from a benchmark's JSON.

    {"snr_db": [..], "rates": {"<rate_index>": {"symbols": n, "steps": {"<steps>":
      {"psnr_db": [.. one per snr ..], "decode_ms": float}}}}}
    Quality is interpolated linearly in the effective SNR and clamped at the ends.
    """

    def __init__(self, data: dict):
        self.snr_db = np.asarray(data["snr_db"], dtype=float)
        if np.any(np.diff(self.snr_db) <= 0):
            raise ValueError("calibration snr_db must increase")
        self.rates = {int(r): v for r, v in data["rates"].items()}
        for rate, entry in self.rates.items():
            for steps, point in entry["steps"].items():
                if len(point["psnr_db"]) != len(self.snr_db):
                    raise ValueError(f"calibration rate {rate} steps {steps}: {len(point['psnr_db'])} PSNR values "
                                     f"for {len(self.snr_db)} SNR points")

    @classmethod
    def load(cls, path) -> "CalibrationTable":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no calibration table at {path}: measure one with "
                                    "`scripts/gsc bench calibrate --codec NAME` (writes models/NAME/calibration.json)")
        try:
            return cls(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a calibration table ({err!r}); remeasure it with "
                             "`scripts/gsc bench calibrate`") from None

    def symbols(self, rate_index: int) -> int:
        return int(self.rates[rate_index]["symbols"])

    def decode_ms(self, rate_index: int, steps: int) -> float:
        return float(self.rates[rate_index]["steps"][str(steps)]["decode_ms"])

    def quality(self, rate_index: int, steps: int, snr_db: float) -> float:
        curve = self.rates[rate_index]["steps"][str(steps)]["psnr_db"]
        return float(np.interp(snr_db, self.snr_db, curve))

    def actions(self, power_levels) -> list[Action]:
        return [Action(rate, power, int(steps)) for rate, entry in sorted(self.rates.items())
                for steps in sorted(entry["steps"], key=int) for power in power_levels]


@dataclass
class SlotCosts:
    energy: float        # transmit power (relative to full) x airtime (s)
    delay_ms: float
    quality_db: float    # expected quality for the decision


@dataclass
class CostModel:
    """Expected energy, delay and quality of an action at a given SNR.

    The calibration table is measured on an ideal channel. Over the radio a frame
    is lost (preamble not detected or header failing its CRC) with a probability
    that rises as the effective SNR falls: logistic, one half at loss_snr_db,
    loss_width_db per e-fold. Measured once on the one-process link (known symbols,
    40 frames per point): 5% lost at -2 dB, 25% at -3 dB, 72% at -4 dB, 95% at -5 dB, which
    -3.5 dB and 0.5 dB fit. A lost image costs lost_quality_db and lost_delay_ms.
    Being smooth, the expectation always pays more power back in a fade, instead
    of giving the image up as a hard threshold would.
    """
    table: CalibrationTable
    symbol_rate: float = 1e6 * 48 / 80     # data carriers per second at 1 MS/s, fft 64 + cp 16
    overhead_symbols: int = 13 * 48        # preamble, header and guard per image, in data-symbol slots
    loss_snr_db: float = -3.5
    lost_quality_db: float = 11.0
    lost_delay_ms: float = 1000.0
    loss_width_db: float = 0.5

    def airtime_s(self, action: Action) -> float:
        return (self.table.symbols(action.rate_index) + self.overhead_symbols) / self.symbol_rate

    def loss_probability(self, effective_snr_db: float) -> float:
        z = float(np.clip((effective_snr_db - self.loss_snr_db) / self.loss_width_db, -60.0, 60.0))
        return 1.0 / (1.0 + np.exp(z))

    def costs(self, action: Action, snr_db: float) -> SlotCosts:
        airtime = self.airtime_s(action)
        gain = power_gain(action.power_level)
        effective_snr = snr_db + 10 * np.log10(gain)
        p = self.loss_probability(effective_snr)
        delay = airtime * 1e3 + self.table.decode_ms(action.rate_index, action.refine_steps)
        quality = self.table.quality(action.rate_index, action.refine_steps, effective_snr)
        return SlotCosts(energy=gain * airtime, delay_ms=p * self.lost_delay_ms + (1 - p) * delay,
                         quality_db=p * self.lost_quality_db + (1 - p) * quality)


@dataclass
class LyapunovController:
    """Drift-plus-penalty decisions with virtual queues Z (delay) and Y (quality).

    The reported SNR is one slot old when the next image goes out. With robust on,
    each action's cost is its expectation over the next slot's SNR, taken as the
    last report plus a Gaussian change whose spread is the std of the last `window`
    slot-to-slot changes (5-point Gauss-Hermite). With no spread it is the plain
    cost at the report.
    """
    model: CostModel
    actions: list
    V: float
    delay_target_ms: float
    quality_target_db: float
    Z: float = 0.0
    Y: float = 0.0
    robust: bool = True
    window: int = 16
    history: list = field(default_factory=list)
    snr_reports: list = field(default_factory=list)

    def snr_spread_db(self) -> float:
        recent = self.snr_reports[-self.window:]
        return float(np.std(np.diff(recent))) if len(recent) > 2 else 0.0

    def decide(self, snr_db: float) -> Action:
        self.snr_reports.append(float(snr_db))
        spread = self.snr_spread_db() if self.robust else 0.0
        points = [(snr_db, 1.0)] if spread == 0.0 else \
            [(snr_db + spread * node, weight) for node, weight in zip(_GH_NODES, _GH_WEIGHTS)]

        def objective(action):
            total = 0.0
            for snr, weight in points:
                c = self.model.costs(action, snr)
                total += weight * (self.V * c.energy + self.Z * c.delay_ms - self.Y * c.quality_db)
            return total
        return min(self.actions, key=objective)

    def update(self, delay_ms: float, quality_db: float):
        """Virtual queue update with what the slot really delivered."""
        self.Z = max(0.0, self.Z + delay_ms - self.delay_target_ms)
        self.Y = max(0.0, self.Y + self.quality_target_db - quality_db)
        self.history.append((self.Z, self.Y))


_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(5)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def fixed_policy(action: Action):
    return lambda model, snr_db: action


def greedy_policy(actions, delay_target_ms, quality_target_db):
    """Threshold adaptation: the least-energy action expected to meet both targets at this SNR,
    else the best-quality one."""
    def choose(model: CostModel, snr_db: float) -> Action:
        feasible = [a for a in actions if model.costs(a, snr_db).quality_db >= quality_target_db
                    and model.costs(a, snr_db).delay_ms <= delay_target_ms]
        if feasible:
            return min(feasible, key=lambda a: model.costs(a, snr_db).energy)
        return max(actions, key=lambda a: model.costs(a, snr_db).quality_db)
    return choose


def clairvoyant_bound(model: CostModel, actions, trace_db, quality_target_db: float, delay_target_ms: float,
                      iterations: int = 60) -> dict:
    """The least average energy any policy over these actions could spend on this trace while
    meeting both average targets in the cost model, knowing every slot's SNR in advance.

    Per slot it takes argmin E - lam * Q + mu * D (the Lagrangian of the average-constrained
    problem): lam by bisection until the quality average is met, mu over a log grid for
    the delay average. Without time-sharing, and with mu on a grid, this estimates the
    optimum rather than proving a bound. Slots the model expects
    lost whatever the action (deep fades at full power) cost their delay to every policy, so
    the delay target is raised to that floor when it lies above it. Returns the energy,
    quality and delay averages, or {"feasible": False} when even the best-quality choice in
    every slot misses the quality target.
    """
    trace_db = np.asarray(trace_db, dtype=float)
    costs = [[model.costs(a, float(snr)) for a in actions] for snr in trace_db]
    energy = np.array([[c.energy for c in row] for row in costs])
    quality = np.array([[c.quality_db for c in row] for row in costs])
    delay = np.array([[c.delay_ms for c in row] for row in costs])
    rows = np.arange(len(trace_db))
    delay_floor = float(delay.min(axis=1).mean())
    delay_target_ms = max(delay_target_ms, delay_floor)

    def solve(lam, mu):
        pick = np.argmin(energy - lam * quality + mu * delay, axis=1)
        return pick, quality[rows, pick].mean(), delay[rows, pick].mean()

    if quality.max(axis=1).mean() < quality_target_db:
        return {"feasible": False}
    scale = float(energy.max())
    best = None
    for mu in [0.0] + list(scale * np.logspace(-4, 1, 11)):
        lo, hi = 0.0, scale * 1e3
        if solve(hi, mu)[1] < quality_target_db:
            continue
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            if solve(mid, mu)[1] >= quality_target_db:
                hi = mid
            else:
                lo = mid
        pick, q, d = solve(hi, mu)
        if d <= delay_target_ms + 1e-9:
            e = float(energy[rows, pick].mean())
            if best is None or e < best["energy_per_image"]:
                best = {"feasible": True, "energy_per_image": e, "avg_psnr_db": float(q), "avg_delay_ms": float(d),
                        "delay_floor_ms": delay_floor}
    return best or {"feasible": False}


def jakes_snr_trace(n_slots: int, mean_snr_db: float, doppler_per_slot: float, seed: int = 0,
                    sinusoids: int = 16) -> np.ndarray:
    """Rayleigh block-fading SNR per slot (dB) from a sum-of-sinusoids (Jakes/Clarke) model.

    doppler_per_slot is the maximum Doppler frequency times the slot duration; the
    power gain |h|^2 has unit mean, so the trace's linear mean is mean_snr_db.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_slots)
    alpha = (2 * np.pi * (np.arange(sinusoids) + rng.uniform(0, 1, sinusoids))) / sinusoids
    phase_i, phase_q = rng.uniform(0, 2 * np.pi, (2, sinusoids))
    arg = 2 * np.pi * doppler_per_slot * np.outer(t, np.cos(alpha))
    h = (np.cos(arg + phase_i).sum(axis=1) + 1j * np.cos(arg + phase_q).sum(axis=1)) / np.sqrt(sinusoids)
    return mean_snr_db + 10 * np.log10(np.maximum(np.abs(h) ** 2, 1e-6))


def write_trace(path, snr_db: np.ndarray):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["snr_db"])
        writer.writerows([[f"{v:.3f}"] for v in snr_db])


def read_trace(path) -> np.ndarray:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "snr_db" not in reader.fieldnames:
            raise ValueError(f"{path}: a trace needs one column named snr_db")
        try:
            return np.array([float(row["snr_db"]) for row in reader])
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
