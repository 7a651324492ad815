"""The benchmarks behind `scripts/gsc bench`, one module each: link, calibrate, control, frames.

Each writes JSON whose 'provenance' names the commit, the exact command, the setup and
the SHA-256 of every model it ran (common.provenance).
"""
