"""What each process run did and when it was alive, for the report.

Each scripts/gsc tx or rx run keeps one JSON file in OUT/runs/, rewritten every
second while the process lives (t_alive) and once more when it ends (t_end, its
stats). A process that was killed leaves its last t_alive behind, so the report
can tell images sent while the receiver was down from images the channel lost,
across any number of restarts into the same folder.
"""
import json
import os
import threading
import time
from pathlib import Path

RUNS_DIR = "runs"
HEARTBEAT_S = 1.0


class RunLog:
    def __init__(self, out_dir, side: str, **fields):
        now = time.time()
        folder = Path(out_dir) / RUNS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{side}-{int(now * 1000)}-{os.getpid()}.json"
        self.events_path = self.path.with_suffix(".events.jsonl")     # the flowgraph's event log writes it
        self.record = {"side": side, "pid": os.getpid(), "t_start": now, "t_alive": now, **fields}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._write()
        self.thread = threading.Thread(target=self._beat, name=f"gsc runlog {side}", daemon=True)
        self.thread.start()

    def _write(self):
        with self.lock:
            self.record["t_alive"] = time.time()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.record, default=str))
            os.replace(tmp, self.path)

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            self._write()

    def update(self, **fields):
        with self.lock:
            self.record.update(fields)

    def close(self, **stats):
        self._stop.set()
        self.thread.join(timeout=2)
        with self.lock:
            self.record.update({k: v for k, v in stats.items() if k != "events"})    # those are in events_path
            self.record["t_end"] = time.time()
        self._write()


def read_runs(out_dir) -> dict:
    """{'tx': [run, ...], 'rx': [run, ...]} in start order. A folder written before
    runs/ existed gives its tx_stats.json and rx_stats.json as one run each."""
    out = Path(out_dir)
    runs = {"tx": [], "rx": []}
    for path in sorted((out / RUNS_DIR).glob("*-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue           # a half-written file of a run killed mid-write: its other fields are lost
        events = path.with_suffix(".events.jsonl")
        if events.is_file():       # written as they came: complete even for a killed process
            record["events"] = [json.loads(line) for line in events.read_text().splitlines()
                                if line.strip().endswith("}")]
        if record.get("side") in runs:
            runs[record["side"]].append(record)
    for side in runs:
        if not runs[side] and (out / f"{side}_stats.json").is_file():
            record = json.loads((out / f"{side}_stats.json").read_text())
            runs[side].append(record | {"side": side, "legacy": True})
        runs[side].sort(key=lambda r: r.get("t_start", 0.0))
    return runs
