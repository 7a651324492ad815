"""Lyapunov controller block: per-image RX reports in, encoder commands out."""
import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from .core.frame import power_gain
from .pdu_util import make_pdu, split_pdu
from .core.controller import Action, CalibrationTable, CostModel, LyapunovController, greedy_policy, to_metric
from .worker import background_worker

POLICIES = ("lyapunov", "fixed", "greedy")


class lyapunov_controller(background_worker, gr.basic_block):
    """Drift-plus-penalty choice of (rate, power, refinement steps) per image slot.

    Each action's cost is averaged over the next slot's SNR: the last report plus
    a Gaussian change as spread as the recent slot-to-slot changes (see
    core/controller.py LyapunovController), since the report is a slot old.

    Args:
        calibration: JSON calibration table Q(snr, rate, steps) (see core/controller.py).
        V: energy weight; larger V saves more energy at the cost of constraint slack.
        delay_target_ms, quality_target, loss_target: the long-term average constraints: the
            delay of the images delivered, the quality of all images (quality_metric's unit; a
            lost one at lost_quality), and the fraction of images lost (1: none).
        power_levels: transmit power levels allowed (2 dB per level below full power).
        loss_snr_db, lost_quality, lost_delay_ms: the effective SNR at which half of
            the images are expected lost (logistic, loss_width_db per e-fold, see
            core/controller.py CostModel), and what a lost image costs (lost_quality < 0: the table's, the dataset mean image's).
            lost_delay_ms is also the slot timeout: an image sent (port 'sent') with no report
            this long after is charged as lost by the block itself.
        policy: lyapunov, fixed (always fixed_power_level at fixed_rate_index with
            fixed_refine_steps) or greedy (cheapest action expected to meet both targets
            at the reported SNR).
        fixed_rate_index: rate of the fixed policy; -1 = the table's full rate (most symbols).
        quality_metric: psnr_db, ms_ssim_db (-10 log10(1 - MS-SSIM)), accuracy_pct (% of
            images the CIFAR-10 classifier labels right) or miou_pct (CamVid segmenter mIoU, %;
            no receiver reports it, so each slot is charged the table's expectation): what Q measures.
        fixed_refine_steps: refiner steps of the fixed policy (and of the first image).
        refine_steps: the refiner step counts the other policies may choose (None: all the
            table has).
    Message ports: report in (an image sink's report: snr_est_db at reference
    power, decode_ms, and psnr_db, ms_ssim, correct when known; service_wait_ms, the
    queueing wait of a shared decode service, is learned apart from each action's decode
    time and charged to every action; or a dict with
    snr_db, delay_ms, quality); sent in (the image source's image PDUs: each starts
    a slot's timeout; optional); command out (dict rate_index, power_level, refine_steps, for the
    semantic encoder's control port); state out (queues Z, Y and the action);
    next out (after each command: lets a paced image source send the next image);
    queues and action out (float PDUs [Z, Y] and [power, rate, steps] for QT GUI
    time sinks).
    """

    def __init__(self, calibration, V=1e4, delay_target_ms=50.0, quality_target=25.0, power_levels=(0, 1, 2, 3, 4),
                 policy="lyapunov", fixed_power_level=0, initial_snr_db=10.0, loss_snr_db=-3.5,
                 lost_quality=-1.0, lost_delay_ms=1000.0, fixed_rate_index=-1, quality_metric="psnr_db",
                 fixed_refine_steps=0, refine_steps=None, loss_width_db=0.5, loss_target=1.0):
        gr.basic_block.__init__(self, name="gsc_lyapunov_controller", in_sig=None, out_sig=None)
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r}: expected one of {', '.join(POLICIES)}")
        table = calibration if isinstance(calibration, CalibrationTable) else \
            CalibrationTable.load(calibration, quality_metric)
        self.table = table
        self.metric = table.metric
        self.model = CostModel(table, loss_snr_db=float(loss_snr_db), lost_quality=float(lost_quality),
                               lost_delay_ms=float(lost_delay_ms), loss_width_db=float(loss_width_db))
        actions = table.actions(list(power_levels), None if refine_steps is None else list(refine_steps))
        if not 0.0 <= float(loss_target) <= 1.0:
            raise ValueError(f"loss_target {loss_target}: a fraction of the images, 0 to 1 (1: no loss constraint)")
        self.core = LyapunovController(self.model, actions, float(V), float(delay_target_ms), float(quality_target),
                                       float(loss_target))
        self.policy = policy
        full = max(table.rates, key=table.symbols)
        if int(fixed_rate_index) >= 0 and int(fixed_rate_index) not in table.rates:
            raise ValueError(f"fixed_rate_index {fixed_rate_index}: the calibration table has rates "
                             f"{sorted(table.rates)} (-1 = full rate)")
        fixed_rate = full if int(fixed_rate_index) < 0 else int(fixed_rate_index)
        if int(fixed_refine_steps) not in table.steps_of(fixed_rate):
            raise ValueError(f"fixed_refine_steps {fixed_refine_steps}: the calibration table has refiner steps "
                             f"{table.steps_of(fixed_rate)} (measure more with `scripts/gsc bench calibrate "
                             "--refine-steps`)")
        self.fixed = Action(fixed_rate, int(fixed_power_level), int(fixed_refine_steps))
        self.greedy = greedy_policy(actions, float(delay_target_ms), float(quality_target), float(loss_target))
        # Until the first report, send at full power and full rate: nothing is known of the channel yet.
        self.last_action = self.fixed if policy == "fixed" else Action(full, min(power_levels), int(fixed_refine_steps))
        self.slots = []                        # one record per reported slot
        self.lock = threading.Lock()
        self.lost_delay_ms = float(lost_delay_ms)
        self.pending = {}                      # slot -> (image_id, time sent): awaiting a report
        self.session = None                    # the source's session id, from its first image
        self._stop = threading.Event()
        self.message_port_register_in(pmt.intern("report"))
        self.message_port_register_in(pmt.intern("sent"))
        self.set_msg_handler(pmt.intern("sent"), self.handle_sent)
        for port in ("command", "state", "next", "queues", "action"):
            self.message_port_register_out(pmt.intern(port))
        self.set_msg_handler(pmt.intern("report"), self.handle_report)

    def handle_sent(self, msg):
        meta, _ = split_pdu(msg)
        if "session" in meta:
            self.session = int(meta["session"])
        if "slot" in meta:
            with self.lock:
                self.pending[int(meta["slot"])] = (int(meta.get("image_id", -1)), float(meta.get("t_sent", time.time())))

    def _work(self):
        """A slot with no report lost_delay_ms after its image was sent is charged as lost,
        with that delay, at the last SNR reported."""
        while not self._stop.wait(0.005):
            now = time.time()
            with self.lock:
                late = [(slot, image_id) for slot, (image_id, t_sent) in self.pending.items()
                        if now - t_sent > self.lost_delay_ms / 1e3]
                last_snr = self.slots[-1]["snr_db"] if self.slots else 0.0
            for slot, image_id in sorted(late):
                self.handle_report(pmt.to_pmt({"lost": True, "timeout": True, "slot": slot, "image_id": image_id,
                                               "snr_est_db": last_snr, "delay_ms": self.lost_delay_ms}))

    def _choose(self, snr_db: float) -> Action:
        if self.policy == "fixed":
            return self.fixed
        if self.policy == "greedy":
            return self.greedy(self.model, snr_db)
        return self.core.decide(snr_db)

    def initial_command(self) -> dict:
        a = self.last_action
        return {"rate_index": a.rate_index, "power_level": a.power_level, "refine_steps": a.refine_steps}

    def set_V(self, V):
        with self.lock:
            self.core.V = float(V)

    def handle_report(self, msg):
        try:
            report = pmt.to_python(msg)
            if (isinstance(report, dict) and self.session is not None and "session" in report
                    and int(report["session"]) != self.session):
                return          # a report on another transmitter's images (a run before a restart)
            if isinstance(report, dict) and "snr_db" not in report and "snr_est_db" in report:
                report = self.slot_costs(report)
            if not isinstance(report, dict) or "snr_db" not in report:
                raise ValueError("not a dict with snr_db or snr_est_db")
            self._apply(report)
        except (KeyError, TypeError, ValueError) as err:
            gr.log.warn(f"gsc lyapunov_controller: report ignored ({err}): {pmt.to_python(msg)!r:.200}; a report "
                        "is a dict with snr_est_db (an image sink's) or snr_db (a slot's costs)")

    def _apply(self, report: dict):
        with self.lock:
            image_id = report.get("image_id")
            if "slot" in report:
                slot = int(report["slot"])
            else:               # a receiver's report: its slot by image id (the header carries no slot)
                slot = next((k for k, (i, _) in self.pending.items() if i == image_id), None)
            charged = next((r for r in reversed(self.slots[-64:]) if image_id is not None
                            and r.get("image_id") == image_id), None)
            if (self.pending and slot not in self.pending) or charged is not None:
                # A late report for a slot already charged: when it was charged as lost at its
                # timeout and the receiver did deliver it, the loss was the timeout's, not the channel's.
                if charged is not None and charged.get("timeout") and not report.get("lost"):
                    charged["delivered_late"] = True
                return
            self.pending.pop(slot, None)
            if "delay_ms" in report and "quality" in report:
                self.core.update(float(report["delay_ms"]), float(report["quality"]), bool(report.get("lost")))
            action = self._choose(float(report["snr_db"]))
            state = {"Z": self.core.Z, "Y": self.core.Y, "L": self.core.L, "snr_db": float(report["snr_db"])}
            self.slots.append({**{k: v for k, v in report.items() if isinstance(v, (int, float, str, bool))},
                               "Z": self.core.Z, "Y": self.core.Y, "L": self.core.L,
                               "next_power_level": action.power_level,
                               "next_rate_index": action.rate_index, "next_refine_steps": action.refine_steps})
            self.last_action = action
        command = {"rate_index": action.rate_index, "power_level": action.power_level,
                   "refine_steps": action.refine_steps,
                   # the encoder is conditioned on the SNR it expects at the receiver
                   "snr_db": float(report["snr_db"]) + 10.0 * np.log10(power_gain(action.power_level))}
        state.update(command)
        self.message_port_pub(pmt.intern("command"), pmt.to_pmt(command))
        self.message_port_pub(pmt.intern("state"), pmt.to_pmt(state))
        self.message_port_pub(pmt.intern("next"), pmt.PMT_T)
        # For QT GUI time sinks (type msg_float): [Z, Y] and [power level, rate index, steps].
        self.message_port_pub(pmt.intern("queues"), make_pdu({}, np.array([state["Z"], state["Y"]], np.float32)))
        self.message_port_pub(pmt.intern("action"), make_pdu({}, np.array(
            [action.power_level, action.rate_index, action.refine_steps], np.float32)))

    def slot_costs(self, report: dict) -> dict:
        """An image sink's report (or a lost slot's) -> the slot's SNR, energy, delay and quality.

        Delay = airtime of the action used + the measured decode time; quality is the
        measured one when the receiver knows the original (psnr_db, ms_ssim, or correct:
        whether the classifier labels the received image right), else the calibration's
        expectation at the measured effective SNR; a lost image gets the lost quality.
        """
        action = Action(int(report.get("rate_index", self.last_action.rate_index)),
                        int(report.get("power_level", self.last_action.power_level)),
                        int(report.get("refine_steps", self.last_action.refine_steps)))
        costs = self.model.costs(action, float(report.get("snr_est_db", 0.0)))
        measured = report.get({"psnr_db": "psnr_db", "ms_ssim_db": "ms_ssim", "accuracy_pct": "correct",
                               "miou_pct": "miou"}[self.metric])
        if report.get("lost"):
            quality = self.model.lost_quality
            delay = float(report.get("delay_ms", costs.delay_ms))
        else:
            quality = to_metric(self.metric, measured) if measured is not None else \
                self.table.quality(action.rate_index, action.refine_steps, float(report.get("snr_eff_db", 0.0)))
            delay = self.model.airtime_s(action) * 1e3 + float(report.get("decode_ms", 0.0))
            if "decode_ms" in report:
                # A shared decode service reports its queueing wait apart: the action's own decode
                # time is learned per action, the wait (every action's) from the service's load.
                wait = float(report.get("service_wait_ms", 0.0))
                self.model.observe_decode(action, float(report["decode_ms"]) - wait)
                if "service_wait_ms" in report:
                    self.model.observe_service(wait)
        return {**report, "snr_db": float(report.get("snr_est_db", 0.0)), "energy": costs.energy,
                "delay_ms": delay, "quality": quality, "quality_metric": self.metric,
                "power_level": action.power_level, "refine_steps": action.refine_steps}
