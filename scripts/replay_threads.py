"""Replay one recording of `bench multiuser` through the embedded decode service, three times per
setting, and print images/s: how ONNX Runtime's threads per session play against the batches
decoded at once. Used for docs/performance.md.

    GSC_ORT_THREADS=1 .venv/bin/python scripts/replay_threads.py --mode batched --workers 2
    GSC_ORT_THREADS=2 .venv/bin/python scripts/replay_threads.py --mode sync

Reads out/bench_multiuser/u8_fragments.npz and radio_u8_batched/ (left by
`scripts/gsc bench multiuser --users 1,2,4,8 --images 40 --work-dir out/bench_multiuser`).
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gsc_blocks.bench.multiuser import _passes, originals_of, replay  # noqa: E402
from gsc_blocks.core.decode_service import load_fragments  # noqa: E402
from gsc_blocks.core.service_backends import make_service  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["batched", "sync"], default="batched")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--work-dir", default=str(REPO / "out" / "bench_multiuser"))
    args = parser.parse_args()
    work = Path(args.work_dir)
    fragments = load_fragments((work / f"u{args.users}_fragments.npz").resolve())
    originals = originals_of(work / f"radio_u{args.users}_batched")
    rates = []
    for _ in range(3):
        service = make_service("embedded", None, 1 / 6, args.mode, 8, 2.0, args.workers)
        rates.append(replay(fragments, originals, service=service, passes=_passes(originals))["images_per_s"])
        service.close()
    print(f"{args.mode}, {args.workers} batch(es) at once: " + ", ".join(f"{r:.1f}" for r in rates) + " images/s")


if __name__ == "__main__":
    main()
