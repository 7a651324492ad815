"""Top-level flowgraphs (TX, RX) built from a radio setup, and the two-process link runner."""
