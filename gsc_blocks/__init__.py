"""gr-gsc: generative semantic image communication blocks for GNU Radio 3.10.

Blocks are thin GNU Radio adapters over the numpy cores in gsc_blocks.core.
This package never imports torch: models arrive as ONNX files with cards.
"""
