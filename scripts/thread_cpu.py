"""CPU seconds per thread of the two loopback processes over one run, from /proc/PID/task.

    .venv/bin/python scripts/thread_cpu.py --images 4000 --out out/thread_cpu [--set KEY=VALUE ...]

Runs N CIFAR-10 test images (deepjscc, 10 dB, no refiner) through radio_config/zmq_loopback.yaml
as `scripts/gsc bench soak` does, samples every thread's utime + stime five times a second, and
prints the images per second (first image sent to last decoded), each process's CPU per image,
the CPU of its busiest threads (GNU Radio names each block's thread after the block; Python's
own threads, ONNX Runtime's and the decode service's show as "python"), and the decode
service's batch size, queue and time per batch. Used for docs/performance.md.
"""
import argparse
import collections
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gsc_blocks.apps.run import run_link  # noqa: E402
from gsc_blocks.bench.common import cifar_test_images  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--out", default="out/thread_cpu")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--set", action="append", default=[], help="a setup change, KEY=VALUE")
    args = parser.parse_args()
    files = cifar_test_images(args.data, args.images)
    tick = os.sysconf("SC_CLK_TCK")
    last = {}

    def monitor(tx, rx):
        for side, proc in (("tx", tx), ("rx", rx)):
            try:
                for task in os.listdir(f"/proc/{proc.pid}/task"):
                    name = Path(f"/proc/{proc.pid}/task/{task}/comm").read_text().strip()
                    fields = Path(f"/proc/{proc.pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
                    last[(side, task)] = (name, (int(fields[11]) + int(fields[12])) / tick)
            except OSError:
                pass            # the process or thread has ended: its last sample stands

    out = Path(args.out)
    run_link(REPO / "radio_config/zmq_loopback.yaml", files, out,
             ["channel.snr_db=10", "codec.encoder_snr_db=10", *args.set], timeout_s=600, monitor=monitor,
             monitor_s=0.2)
    received = [json.loads(line) for line in (out / "received.jsonl").read_text().splitlines()]
    sent = [json.loads(line) for line in (out / "tx_manifest.jsonl").read_text().splitlines()]
    span = max(r["t_decoded"] for r in received) - min(r["t_sent"] for r in sent)
    print(f"{len(received)} of {len(sent)} images decoded, {len(received) / span:.1f} images/s")
    for side in ("tx", "rx"):
        threads = collections.Counter()
        for (s, _), (name, cpu) in last.items():
            if s == side:
                threads[name] += cpu
        total = sum(threads.values())
        print(f"{side}: {total:.2f} CPU s, {1e3 * total / len(sent):.2f} ms per image; "
              + ", ".join(f"{name} {cpu:.2f}" for name, cpu in threads.most_common(8)))
    for key in ("service_batch", "service_queue", "service_ms"):
        values = [r[key] for r in received if key in r]
        if values:
            print(f"{key} p10/p50/p90/p99: " + " / ".join(f"{v:.1f}" for v in np.percentile(values, [10, 50, 90, 99])))


if __name__ == "__main__":
    main()
