"""Keeps the last N values of float PDUs and publishes them as one PDU, for a QT GUI time
sink (type msg_float) to draw a trace instead of a single point."""
import collections

import numpy as np
import pmt
from gnuradio import gr

from .pdu_util import make_pdu, split_pdu


class history(gr.basic_block):
    """Each float PDU in (one value per line, e.g. [Z, Y] from the controller's 'queues') is
    appended to a window of the last `length` messages; out publishes the window as a flat
    PDU, line after line: [line 0's values..., line 1's values...], each `length` long (older
    values first, padded with the first value seen until the window fills).

    Args:
        length: how many messages the window holds.
        lines: values per message (the input PDU's length).
    """

    def __init__(self, length=100, lines=1):
        gr.basic_block.__init__(self, name="gsc_history", in_sig=None, out_sig=None)
        if int(length) < 1 or int(lines) < 1:
            raise ValueError(f"history: length {length} and lines {lines} must be at least 1")
        self.length, self.lines = int(length), int(lines)
        self.window = collections.deque(maxlen=self.length)
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self.handle)

    def handle(self, msg):
        try:
            _, values = split_pdu(msg)
            values = np.asarray(values, np.float32).reshape(-1)
        except (TypeError, ValueError) as err:
            gr.log.warn(f"gsc history: not a float PDU ({err}); ignored")
            return
        if values.size != self.lines:
            gr.log.warn(f"gsc history: {values.size} values, expected {self.lines}; ignored")
            return
        self.window.append(values)
        rows = np.array(self.window, np.float32)
        if len(rows) < self.length:
            rows = np.concatenate([np.repeat(rows[:1], self.length - len(rows), axis=0), rows])
        self.message_port_pub(pmt.intern("out"), make_pdu({}, rows.T.reshape(-1).astype(np.float32)))
