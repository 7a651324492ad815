"""Qt image display: the latest received image beside its original, with PSNR."""
import threading

import numpy as np
import pmt
from gnuradio import gr

from .core.images import ImageError, load_image
from .core.metrics import psnr_db
from .image_sink import ManifestReader
from .pdu_util import split_pdu


def _qt():
    from PyQt5 import QtCore, QtGui, QtWidgets
    return QtCore, QtGui, QtWidgets


def _pixmap(image: np.ndarray, size: int):
    """uint8 HxWx3 -> a QPixmap scaled (nearest: a 32x32 image stays crisp) to fit size x size."""
    QtCore, QtGui, _ = _qt()
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    qimage = QtGui.QImage(image.data, w, h, 3 * w, QtGui.QImage.Format_RGB888).copy()
    return QtGui.QPixmap.fromImage(qimage).scaled(size, size, QtCore.Qt.KeepAspectRatio, QtCore.Qt.FastTransformation)


def _make_widget(title: str, size: int):
    QtCore, _, QtWidgets = _qt()

    class ImageWidget(QtWidgets.QWidget):
        shown = QtCore.pyqtSignal(object)       # (original or None, received, caption): GUI thread only

        def __init__(self):
            QtWidgets.QWidget.__init__(self)
            grid = QtWidgets.QGridLayout(self)
            heading = QtWidgets.QLabel(f"<b>{title}</b>")
            grid.addWidget(heading, 0, 0, 1, 2)
            self.images = []
            for col, label in enumerate(("sent", "received")):
                view = QtWidgets.QLabel(f"({label}: waiting)")
                view.setAlignment(QtCore.Qt.AlignCenter)
                view.setMinimumSize(size, size)
                grid.addWidget(view, 1, col)
                grid.addWidget(QtWidgets.QLabel(label), 2, col, alignment=QtCore.Qt.AlignCenter)
                self.images.append(view)
            self.caption = QtWidgets.QLabel("no image yet")
            grid.addWidget(self.caption, 3, 0, 1, 2)
            self.shown.connect(self._show)

        def _show(self, item):
            original, received, caption = item
            if original is not None:
                self.images[0].setPixmap(_pixmap(original, size))
            else:
                self.images[0].setText("(original unknown)")
            self.images[1].setPixmap(_pixmap(received, size))
            self.caption.setText(caption)

    return ImageWidget()


class image_display(gr.basic_block):
    """Shows the latest decoded image (connect the semantic decoder's 'out') beside its
    original, found through the transmitter's manifest (session and id), with PSNR, the
    receiver's SNR estimate and how many images were shown. A Qt widget for any
    QT GUI flowgraph (qwidget()); the images reach it through a Qt signal, so the
    flowgraph's threads never touch the GUI.

    Args:
        manifest: the TX manifest JSONL ('' = show the received image alone).
        title: the heading above the two images.
        size: the side, in pixels, each image is scaled to fit.
    """

    def __init__(self, manifest="", title="Latest image", size=192):
        gr.basic_block.__init__(self, name="gsc_image_display", in_sig=None, out_sig=None)
        self.references = ManifestReader(manifest) if manifest else None
        self.size = int(size)
        self.widget = _make_widget(str(title), self.size)
        self.images_shown = 0
        self.last = None            # (image_id, psnr_db) of the latest image
        self.lock = threading.Lock()
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self.handle)

    def qwidget(self):
        return self.widget

    def handle(self, msg):
        try:
            meta, pixels = split_pdu(msg)
            h, w = int(meta["height"]), int(meta["width"])
            received = np.asarray(pixels, np.uint8).reshape(h, w, 3)
        except (KeyError, TypeError, ValueError) as err:
            gr.log.warn(f"gsc image_display: not a decoded image PDU ({err}); ignored")
            return
        image_id, session = int(meta.get("image_id", -1)), int(meta.get("session", 0))
        original, psnr = None, None
        reference = self.references.take((session, image_id)) if self.references is not None else None
        if reference is not None and reference.get("status") == "sent":
            try:
                original = load_image(reference["path"])
                if original.shape == received.shape:
                    psnr = psnr_db(original, received)
            except ImageError:
                original = None
        name = reference["name"] if reference else str(image_id)
        snr = meta.get("snr_est_db")
        with self.lock:
            self.images_shown += 1
            self.last = (image_id, psnr)
            count = self.images_shown
        caption = (f"#{image_id} {name}: " + (f"PSNR {psnr:.2f} dB" if psnr is not None else "PSNR n/a")
                   + (f", SNR estimate {float(snr):.1f} dB" if snr is not None else "") + f"  ({count} shown)")
        self.widget.shown.emit((original, received, caption))
