"""Lyapunov controller block: per-image RX reports in, encoder commands out."""
import json
import threading

import pmt
from gnuradio import gr

from .core.controller import CalibrationTable, CostModel, LyapunovController


class lyapunov_controller(gr.basic_block):
    """Drift-plus-penalty choice of (rate, power, refinement steps) per image slot.

    Args:
        calibration: JSON calibration table Q(snr, rate, steps) (see core/controller.py).
        V: energy weight; larger V saves more energy at the cost of constraint slack.
        delay_target_ms, psnr_target_db: the long-term average constraints.
        power_levels: transmit power levels allowed (2 dB per level below full power).
    Message ports: report in (dict with snr_db at reference power, delay_ms and
    quality_db of the last image); command out (dict rate_index, power_level,
    refine_steps, for the semantic encoder's control port); state out (dict with
    the virtual queues Z, Y and the last action, for plots and GUIs).
    """

    def __init__(self, calibration, V=1e4, delay_target_ms=50.0, psnr_target_db=25.0, power_levels=(0, 1, 2, 3, 4)):
        gr.basic_block.__init__(self, name="gsc_lyapunov_controller", in_sig=None, out_sig=None)
        table = CalibrationTable.load(calibration) if not isinstance(calibration, CalibrationTable) else calibration
        model = CostModel(table)
        self.core = LyapunovController(model, table.actions(list(power_levels)), float(V),
                                       float(delay_target_ms), float(psnr_target_db))
        self.lock = threading.Lock()
        self.message_port_register_in(pmt.intern("report"))
        for port in ("command", "state"):
            self.message_port_register_out(pmt.intern(port))
        self.set_msg_handler(pmt.intern("report"), self.handle_report)

    def set_V(self, V):
        with self.lock:
            self.core.V = float(V)

    def handle_report(self, msg):
        report = pmt.to_python(msg)
        if not isinstance(report, dict) or "snr_db" not in report:
            gr.log.warn(f"gsc lyapunov_controller: report must be a dict with snr_db; got {report!r}")
            return
        with self.lock:
            if "delay_ms" in report and "quality_db" in report:
                self.core.update(float(report["delay_ms"]), float(report["quality_db"]))
            action = self.core.decide(float(report["snr_db"]))
            state = {"Z": self.core.Z, "Y": self.core.Y, "snr_db": float(report["snr_db"])}
        command = {"rate_index": action.rate_index, "power_level": action.power_level,
                   "refine_steps": action.refine_steps}
        state.update(command)
        self.message_port_pub(pmt.intern("command"), pmt.to_pmt(command))
        self.message_port_pub(pmt.intern("state"), pmt.to_pmt(state))
