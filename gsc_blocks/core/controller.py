"""Lyapunov drift-plus-penalty allocation of rate, power and decoding effort per image.

Per image slot t the transmitter sees the fed-back SNR (at reference power) and
picks an action a = (rate_index, power_level, refine_steps) minimizing

    V * E(a) + Z * (1 - p(a, snr)) * (D(a) - D_target) - Y * Q(a, snr) + L * p(a, snr)

over a finite action set, then updates the virtual queues with what the slot
really cost and delivered:

    Z <- max(0, Z + D - D_target)      (average delay of the delivered images; a lost slot leaves Z)
    Y <- max(0, Y + Q_target - Q)      (average quality of all images, a lost one at the lost quality)
    L <- max(0, L + lost - L_target)   (loss rate: lost is 1 for a lost image, else 0)

A lost image has no delay: charging it the slot timeout would make the delay
constraint measure outages rather than the controller's choices, so losses
get their own constraint, L_target (controller.loss_target).

E = transmit power x airtime, D = airtime + decode time, p = the probability
the image is lost (CostModel.loss_probability), Q = expected quality
from a calibration table Q(snr, rate, steps) measured by the benchmarks, in one
of the metrics of QUALITY_METRICS: PSNR (dB), MS-SSIM in dB (-10 log10(1 - MS-SSIM)),
the semantic accuracy (% of CIFAR-10 images the classifier labels right) or the
CamVid segmenter's mIoU (%). For a digital codec the rate is the MCS; for sqgan
and spic an MCS also sets the level each image goes at (sqgan: the kept fraction). The
refiner's steps cost decode time and lower PSNR slightly, but raise MS-SSIM and
accuracy at low SNR: with those metrics decoding effort competes with
transmit power.
"""
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .frame import HEADER_OFDM_SYMBOLS, power_gain


@dataclass(frozen=True)
class Action:
    rate_index: int
    power_level: int
    refine_steps: int


# metric name -> (the calibration table's column, its conversion to the controller's unit)
# (elementwise on numpy arrays)
QUALITY_METRICS = {
    "psnr_db": ("psnr_db", lambda v: v),
    "ms_ssim_db": ("ms_ssim", lambda v: -10.0 * np.log10(np.maximum(1.0 - v, 1e-6))),
    "accuracy_pct": ("accuracy", lambda v: 100.0 * v),
    "miou_pct": ("miou", lambda v: 100.0 * v),
}


def to_metric(metric: str, value: float) -> float:
    """A measurement in the calibration table's unit (PSNR dB, MS-SSIM, accuracy or a 0/1
    right-or-wrong label) -> the controller's unit for metric."""
    return float(QUALITY_METRICS[metric][1](float(value)))


def check_metric(metric: str) -> str:
    if metric not in QUALITY_METRICS:
        raise ValueError(f"quality metric {metric!r}: expected one of {', '.join(QUALITY_METRICS)}")
    return metric


class CalibrationTable:
    """Expected quality and costs per action, from `gsc bench calibrate`'s JSON.

    {"snr_db": [..], "lost": {"psnr_db": q, "ms_ssim": q, "accuracy" or "miou": q},
     "rates": {"<rate_index>": {"symbols": n, "steps": {"<steps>":
      {"psnr_db": [.. one per snr ..], "ms_ssim": [..], "accuracy" or "miou": [..], "decode_ms": float}}}}}
    Quality, in the chosen metric's unit, is interpolated linearly in the effective
    SNR and clamped at the ends. "lost" (the dataset mean image's scores) is what a
    lost image is charged unless the setup says otherwise.
    """

    def __init__(self, data: dict, metric: str = "psnr_db", where: str = "calibration"):
        self.metric = check_metric(metric)
        self.column, self._convert = QUALITY_METRICS[metric]
        self.snr_db = np.asarray(data["snr_db"], dtype=float)
        if np.any(np.diff(self.snr_db) <= 0):
            raise ValueError("calibration snr_db must increase")
        self.rates = {int(r): v for r, v in data["rates"].items()}
        for rate, entry in self.rates.items():
            for steps, point in entry["steps"].items():
                if self.column not in point:
                    raise ValueError(f"{where}: rate {rate} steps {steps} has no {self.column} column, which "
                                     f"quality metric {metric} needs; remeasure it with `scripts/gsc bench calibrate`")
                if len(point[self.column]) != len(self.snr_db):
                    raise ValueError(f"{where}: rate {rate} steps {steps}: {len(point[self.column])} "
                                     f"{self.column} values for {len(self.snr_db)} SNR points")
        lost = data.get("lost", {})
        self.lost_quality = float(self._convert(float(lost[self.column]))) if self.column in lost else None

    @classmethod
    def load(cls, path, metric: str = "psnr_db") -> "CalibrationTable":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no calibration table at {path}: measure one with "
                                    "`scripts/gsc bench calibrate --codec NAME` (writes models/NAME/calibration.json)")
        try:
            return cls(json.loads(path.read_text()), metric, str(path))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a calibration table ({err!r}); remeasure it with "
                             "`scripts/gsc bench calibrate`") from None

    def steps_of(self, rate_index: int) -> list[int]:
        return sorted(int(k) for k in self.rates[rate_index]["steps"])

    def symbols(self, rate_index: int) -> int:
        return int(self.rates[rate_index]["symbols"])

    def decode_ms(self, rate_index: int, steps: int) -> float:
        return float(self.rates[rate_index]["steps"][str(steps)]["decode_ms"])

    def quality(self, rate_index: int, steps: int, snr_db: float) -> float:
        curve = self.rates[rate_index]["steps"][str(steps)][self.column]
        return float(self._convert(np.interp(snr_db, self.snr_db, curve)))

    def curve(self, rate_index: int, steps: int) -> np.ndarray:
        """The metric's column for (rate, steps), in the table's unit, one value per snr_db."""
        return np.asarray(self.rates[rate_index]["steps"][str(steps)][self.column], dtype=float)

    def actions(self, power_levels, refine_steps=None) -> list[Action]:
        """Every (rate, power level, steps) of the table, the steps limited to refine_steps when given."""
        actions = [Action(rate, power, steps) for rate in sorted(self.rates) for steps in self.steps_of(rate)
                   if refine_steps is None or steps in refine_steps for power in power_levels]
        if not actions:
            raise ValueError(f"refine steps {sorted(refine_steps)}: the calibration table has "
                             f"{sorted({k for r in self.rates for k in self.steps_of(r)})}")
        return actions


@dataclass
class SlotCosts:
    energy: float        # transmit power (relative to full) x airtime (s)
    delay_ms: float      # if delivered: airtime + decode time
    quality: float       # expected quality for the decision, in the table's metric (a loss at the lost quality)
    loss: float = 0.0    # probability the image is lost
    # (each an array, one value per action, from CostModel.costs_many)


def _interp_rows(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp(x[i], xp, fp[i]) for every row i at once (the same arithmetic, clamped at the ends)."""
    j = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, len(xp) - 2)
    rows = np.arange(len(x))
    slope = (fp[rows, j + 1] - fp[rows, j]) / (xp[j + 1] - xp[j])
    y = slope * (x - xp[j]) + fp[rows, j]
    return np.where(x <= xp[0], fp[:, 0], np.where(x >= xp[-1], fp[:, -1], y))


@dataclass
class CostModel:
    """Expected energy, delay and quality of an action at a given SNR.

    The calibration table is measured on an ideal channel. Over the radio a frame
    is lost (preamble not detected or header failing its CRC) with a probability
    that rises as the effective SNR falls: logistic, one half at loss_snr_db,
    loss_width_db per e-fold. `scripts/gsc bench frames` fits both on a setup's one-process
    link (docs/results/frames.md); set them with controller.loss_snr_db and
    controller.loss_width_db. A lost image costs lost_quality; it has no delay (the
    controller's loss queue counts it instead). lost_delay_ms is the slot timeout.
    Being smooth, the expectation always pays more power back in a fade, instead
    of giving the image up as a hard threshold would. lost_quality None or < 0: the table's.

    Decode time is the table's until the receiver has reported some: observe_decode()
    keeps a running mean of the measured decode time per (rate, steps), since the
    table was timed with the decoder alone and a receiver shares its CPU with the
    rest of the flowgraph.
    """
    table: CalibrationTable
    symbol_rate: float = 1e6 * 48 / 80     # data carriers per second at 1 MS/s, fft 64 + cp 16
    # two sync words, the header and a guard symbol per image, in data-symbol slots
    overhead_symbols: int = (3 + HEADER_OFDM_SYMBOLS) * 48
    loss_snr_db: float = -3.5
    lost_quality: float | None = None
    lost_delay_ms: float = 1000.0
    loss_width_db: float = 0.5
    decode_weight: float = 0.05             # running-mean weight of each new measurement
    decode_seen: dict = field(default_factory=dict)
    # A shared decode service (MU-GSC): the wait its queue adds to every image, from the reports.
    service_wait_ms: float = 0.0
    _static: dict = field(default_factory=dict, repr=False)   # per action list: its fixed arrays

    def observe_decode(self, action: "Action", decode_ms: float):
        key = (action.rate_index, action.refine_steps)
        old = self.decode_seen.get(key)
        self.decode_seen[key] = float(decode_ms) if old is None else old + self.decode_weight * (decode_ms - old)

    def observe_service(self, wait_ms: float):
        """The decode service's queueing wait, as an image's report gives it (running mean)."""
        self.service_wait_ms += self.decode_weight * 4 * (float(wait_ms) - self.service_wait_ms)

    def decode_ms(self, action: "Action") -> float:
        seen = self.decode_seen.get((action.rate_index, action.refine_steps))
        return seen if seen is not None else self.table.decode_ms(action.rate_index, action.refine_steps)

    def __post_init__(self):
        if self.lost_quality is None or self.lost_quality < 0:
            if self.table.lost_quality is None:
                raise ValueError(f"the calibration table has no lost-image {self.table.column}: remeasure it with "
                                 "`scripts/gsc bench calibrate` or set controller.lost_quality")
            self.lost_quality = self.table.lost_quality

    def airtime_s(self, action: Action) -> float:
        return (self.table.symbols(action.rate_index) + self.overhead_symbols) / self.symbol_rate

    def loss_probability(self, effective_snr_db):
        """Elementwise on an array of effective SNRs."""
        z = np.clip((effective_snr_db - self.loss_snr_db) / self.loss_width_db, -60.0, 60.0)
        return 1.0 / (1.0 + np.exp(z))

    def costs(self, action: Action, snr_db: float) -> SlotCosts:
        c = self.costs_many((action,), snr_db)
        return SlotCosts(float(c.energy[0]), float(c.delay_ms[0]), float(c.quality[0]), float(c.loss[0]))

    def costs_many(self, actions, snr_db: float) -> SlotCosts:
        """The costs of every action at snr_db, as arrays (one decision evaluates them all)."""
        actions = tuple(actions)
        if actions not in self._static:
            gain = np.array([power_gain(a.power_level) for a in actions])
            self._static[actions] = (
                np.array([self.airtime_s(a) for a in actions]), gain, 10 * np.log10(gain),
                np.array([self.table.curve(a.rate_index, a.refine_steps) for a in actions]))
        airtime, gain, gain_db, curves = self._static[actions]
        effective_snr = snr_db + gain_db
        p = self.loss_probability(effective_snr)
        delay = airtime * 1e3 + self.service_wait_ms + np.array([self.decode_ms(a) for a in actions])
        quality = self.table._convert(_interp_rows(effective_snr, self.table.snr_db, curves))
        return SlotCosts(energy=gain * airtime, delay_ms=delay, quality=p * self.lost_quality + (1 - p) * quality,
                         loss=p)


@dataclass
class LyapunovController:
    """Drift-plus-penalty decisions with virtual queues Z (delay), Y (quality) and L (loss rate).

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
    quality_target: float
    loss_target: float = 1.0          # 1: no loss constraint
    Z: float = 0.0
    Y: float = 0.0
    L: float = 0.0
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

        total = np.zeros(len(self.actions))
        for snr, weight in points:
            c = self.model.costs_many(self.actions, snr)
            total += weight * (self.V * c.energy + self.Z * (1 - c.loss) * (c.delay_ms - self.delay_target_ms)
                               - self.Y * c.quality + self.L * c.loss)
        return self.actions[int(np.argmin(total))]

    def update(self, delay_ms: float, quality: float, lost: bool = False):
        """Virtual queue update with what the slot really delivered (a lost slot's delay is not used)."""
        if not lost:
            self.Z = max(0.0, self.Z + delay_ms - self.delay_target_ms)
        self.Y = max(0.0, self.Y + self.quality_target - quality)
        self.L = max(0.0, self.L + float(bool(lost)) - self.loss_target)
        self.history.append((self.Z, self.Y, self.L))


_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(5)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def fixed_policy(action: Action):
    return lambda model, snr_db: action


def greedy_policy(actions, delay_target_ms, quality_target, loss_target=1.0):
    """Threshold adaptation: the least-energy action expected to meet every target at this SNR
    (ties: the shorter delay), else the best-quality one."""
    def choose(model: CostModel, snr_db: float) -> Action:
        c = model.costs_many(actions, snr_db)
        feasible = np.flatnonzero((c.quality >= quality_target) & (c.delay_ms <= delay_target_ms)
                                  & (c.loss <= loss_target))
        if feasible.size:
            return actions[min(feasible, key=lambda i: (c.energy[i], c.delay_ms[i]))]
        return actions[int(np.argmax(c.quality))]
    return choose


def clairvoyant_bound(model: CostModel, actions, trace_db, quality_target: float, delay_target_ms: float,
                      iterations: int = 60, loss_target: float = 1.0) -> dict:
    """The least average energy any policy over these actions could spend on this trace while
    meeting the average targets in the cost model, knowing every slot's SNR in advance.

    Per slot it takes argmin E - lam * Q + mu * D + nu * p (the Lagrangian of the
    average-constrained problem): lam by bisection until the quality average is met, mu and nu
    over log grids for the delay average (over the images expected delivered) and the loss
    rate. Without time-sharing, and with mu and nu on grids, this estimates the optimum rather
    than proving a bound. Slots the model expects lost whatever the action (deep fades at full
    power) are lost to every policy, so the loss target is raised to that floor when it lies
    below it (and the delay target to the fastest action's). Returns the energy, quality,
    delay and loss averages, or {"feasible": False} when even the best-quality choice in every
    slot misses the quality target.
    """
    trace_db = np.asarray(trace_db, dtype=float)
    costs = [model.costs_many(actions, float(snr)) for snr in trace_db]
    energy = np.array([c.energy for c in costs])
    quality = np.array([c.quality for c in costs])
    delay = np.array([c.delay_ms for c in costs])
    loss = np.array([c.loss for c in costs])
    rows = np.arange(len(trace_db))
    delay_floor = float(delay.min(axis=1).mean())
    loss_floor = float(loss.min(axis=1).mean())
    delay_target_ms = max(delay_target_ms, delay_floor)
    loss_target = max(loss_target, loss_floor)

    def solve(lam, mu, nu):
        pick = np.argmin(energy - lam * quality + mu * delay + nu * loss, axis=1)
        kept = 1.0 - loss[rows, pick]
        return (pick, quality[rows, pick].mean(), float((kept * delay[rows, pick]).sum() / max(kept.sum(), 1e-12)),
                loss[rows, pick].mean())

    if quality.max(axis=1).mean() < quality_target:
        return {"feasible": False}
    scale = float(energy.max())
    best = None
    nus = [0.0] + list(scale * np.logspace(-2, 3, 6)) if loss_target < 1.0 else [0.0]
    for mu in [0.0] + list(scale * np.logspace(-4, 1, 11)):
        for nu in nus:
            lo, hi = 0.0, scale * 1e3
            if solve(hi, mu, nu)[1] < quality_target:
                continue
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                if solve(mid, mu, nu)[1] >= quality_target:
                    hi = mid
                else:
                    lo = mid
            pick, q, d, lost = solve(hi, mu, nu)
            if d <= delay_target_ms + 1e-9 and lost <= loss_target + 1e-9:
                e = float(energy[rows, pick].mean())
                if best is None or e < best["energy_per_image"]:
                    best = {"feasible": True, "energy_per_image": e, "avg_quality": float(q),
                            "avg_delay_ms": float(d), "loss_rate": float(lost), "delay_floor_ms": delay_floor,
                            "loss_floor": loss_floor}
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
