"""Training side of gr-gsc: torch codecs, datasets, training loops, ONNX export.

Never imports gnuradio: this package runs on GPU hosts that have no GNU Radio.
The runtime side (gsc_blocks) only ever sees the exported ONNX files and cards.
"""
