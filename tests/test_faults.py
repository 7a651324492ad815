"""Faults on the two-process ZMQ loopback: after each the link keeps going, and every image
the transmitter sent is accounted for by scripts/gsc report as decoded or lost with a cause."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gsc_blocks.apps.run import free_port
from gsc_blocks.core.report import RX_DOWN

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "radio_config" / "zmq_loopback.yaml")
SAMPLES = REPO / "tests" / "data" / "samples"


def side(role, out, port, *args):
    """scripts/gsc tx or rx as its own process (the module, as scripts/gsc runs it)."""
    command = [sys.executable, "-m", "gsc_blocks.apps.run", role, "--config", CONFIG, "--out", str(out),
               "--set", f"zmq.address=tcp://127.0.0.1:{port}", "--set", "channel.snr_db=20", *map(str, args)]
    log = open(Path(out) / f"{role}-{time.time():.3f}.log", "w")
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def wait_for(condition, timeout_s, what):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def link_folder(tmp_path, copies):
    """An empty folder for both sides, and a list of the CIFAR samples repeated `copies` times."""
    out = tmp_path / "link"
    out.mkdir()
    images = sorted(SAMPLES.glob("cifar_*.png")) * copies
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(map(str, images)) + "\n")
    return out, listing, images


def report(out):
    result = subprocess.run([sys.executable, "-m", "gsc_blocks.cli", "report", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "report.json").read_text())


def test_receiver_killed_and_restarted_mid_stream_loses_only_what_was_in_flight(tmp_path):
    """200 images at 20/s into one folder; the receiver is killed (SIGKILL) once it has decoded
    20 and restarted a second later. ZMQ holds what the transmitter pushes meanwhile, so the
    second receiver decodes the rest; the images the first one held when it died are lost as
    'receiver down', and none is unaccounted."""
    out, listing, images = link_folder(tmp_path, 25)
    port = free_port()
    first = side("rx", out, port, "--idle", 0)
    tx = side("tx", out, port, "--images", listing, "--interval", 0.05)
    try:
        wait_for(lambda: len(lines(out / "received.jsonl")) >= 20, 120, "20 images at the first receiver")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        t_killed = time.time()
        time.sleep(1.0)
        second = side("rx", out, port, "--idle", 0, "--max-seconds", 300)
        assert tx.wait(timeout=300) == 0
        assert second.wait(timeout=120) == 0
    finally:
        for process in (first, tx, locals().get("second")):
            if process is not None:
                process.kill()
    rep = report(out)
    assert rep["n_sent"] == len(images) and rep["unaccounted"] == 0
    assert rep["decoded"] + rep["lost"] == len(images)
    assert set(rep["by_reason"]) <= {RX_DOWN}, rep["by_reason"]
    manifest = lines(out / "tx_manifest.jsonl")
    # In flight at the kill: sent within the receiver's last heartbeat and reassembly window.
    in_flight = sum(1 for r in manifest if t_killed - 3.0 <= r["t_sent"] <= t_killed)
    assert rep["lost"] <= in_flight, (rep["lost"], in_flight)
    assert len({r["session"] for r in manifest}) == 1 and len(list((out / "runs").glob("rx-*.json"))) == 2


def test_transmitter_killed_and_restarted_mid_stream_is_a_new_session_and_nothing_merges(tmp_path):
    """The transmitter is killed (SIGKILL) after 20 images reach the receiver and restarted
    into the same folder with the same images (ids from 0 again, a new session id). The
    receiver keeps running; the report accounts for both runs: the second decoded but for at
    most its first image, the first's images after the kill lost as 'transmitter down',
    nothing unaccounted, and no image of one run taken for the other's."""
    from gsc_blocks.core.report import NO_FRAME, TX_DOWN
    out, listing, images = link_folder(tmp_path, 8)
    port = free_port()
    rx = side("rx", out, port, "--idle", 0, "--max-seconds", 300)
    first = side("tx", out, port, "--images", listing, "--interval", 0.05)
    try:
        wait_for(lambda: len(lines(out / "received.jsonl")) >= 20, 120, "20 images at the receiver")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = side("tx", out, port, "--images", listing, "--interval", 0.02)
        assert second.wait(timeout=300) == 0
        assert rx.wait(timeout=120) == 0
    finally:
        for process in (first, rx, locals().get("second")):
            if process is not None:
                process.kill()
    rep = report(out)
    manifest = lines(out / "tx_manifest.jsonl")
    sessions = [r["session"] for r in manifest]
    assert len(set(sessions)) == 2
    assert rep["n_sent"] == len(manifest) and rep["unaccounted"] == 0
    by_session = {}
    for image in rep["images"]:
        by_session.setdefault(image["session"], []).append(image)
    later = by_session[sessions[-1]]
    # The killed run's last frame, cut short, can swallow the start of the new run's first frame
    # in the receiver (its demux takes a whole frame's worth of samples): at most that one lost.
    assert len(later) == len(images) and sum(i["status"] == "lost" for i in later) <= 1
    assert {i["reason"] for i in later if i["status"] == "lost"} <= {NO_FRAME}
    earlier = by_session[sessions[0]]
    assert sum(i["status"] == "decoded" for i in earlier) >= 20
    assert {i["reason"] for i in earlier if i["status"] == "lost"} <= {TX_DOWN}
    # Each decoded image was matched to its own original: same name, and it looks like it.
    received = {(r["session"], r["image_id"]): r for r in lines(out / "received.jsonl")}
    names = {(r["session"], r["image_id"]): r["name"] for r in manifest}
    for key, record in received.items():
        assert record["file"].endswith(f"_{names[key]}.png")
        assert record["psnr_db"] > 24.0, record


class FaultyAir(threading.Thread):
    """The air between the two processes, as a ZMQ relay (PULL from the transmitter's port,
    PUSH to the receiver's) that damages one message of samples once `after_s` seconds of
    traffic have passed: 'random' sends a message of random bytes (float32 garbage: huge
    values, infinities, NaN) before it, 'truncate' cuts it in half, 'bitflip' flips 64 random
    bits in it."""

    def __init__(self, fault, tx_port, rx_port, after_s=1.0):
        threading.Thread.__init__(self, daemon=True)
        import zmq
        self.fault, self.after_s, self.done = fault, after_s, threading.Event()
        self.context = zmq.Context()
        self.pull = self.context.socket(zmq.PULL)
        self.pull.connect(f"tcp://127.0.0.1:{tx_port}")
        self.push = self.context.socket(zmq.PUSH)
        self.push.bind(f"tcp://127.0.0.1:{rx_port}")
        self.damaged = False

    def run(self):
        import zmq
        rng = np.random.default_rng(0)
        first = None
        while not self.done.is_set():
            if not self.pull.poll(100):
                continue
            message = self.pull.recv()
            first = first or time.time()
            if not self.damaged and time.time() - first > self.after_s:
                self.damaged = True
                if self.fault == "random":
                    self.push.send(rng.integers(0, 256, 8 * 4096, dtype=np.uint8).tobytes())
                elif self.fault == "truncate":
                    message = message[:len(message) // 16 * 8]
                elif self.fault == "bitflip":
                    bits = np.frombuffer(message, np.uint8).copy()
                    at = rng.integers(0, bits.size * 8, 64)
                    np.bitwise_xor.at(bits, at // 8, (1 << (at % 8)).astype(np.uint8))
                    message = bits.tobytes()
            self.push.send(message)
        self.pull.close(0)
        self.push.close(linger=5000)


@pytest.mark.parametrize("fault", ["random", "truncate", "bitflip"])
def test_link_recovers_from_damaged_samples(tmp_path, fault):
    """One damaged ZMQ message of samples between the two processes (random bytes, a frame cut
    short, flipped bits): the receiver recovers at once; only images with samples in that
    message are lost, each with a channel cause; every image is accounted for."""
    from gsc_blocks.core.report import FRAGMENTS_MISSING, NO_FRAME, PAYLOAD_CRC
    out, listing, images = link_folder(tmp_path, 10)
    tx_port, rx_port = free_port(), free_port()
    air = FaultyAir(fault, tx_port, rx_port)
    air.start()
    rx = side("rx", out, rx_port, "--idle", 0, "--max-seconds", 300)
    tx = side("tx", out, tx_port, "--images", listing, "--interval", 0.03)
    try:
        assert tx.wait(timeout=300) == 0
        assert rx.wait(timeout=120) == 0
    finally:
        air.done.set()
        for process in (tx, rx):
            process.kill()
    assert air.damaged
    rep = report(out)
    assert rep["n_sent"] == len(images) and rep["unaccounted"] == 0
    assert rep["lost"] <= 2, rep["by_reason"]          # a message of samples spans at most two images here
    assert set(rep["by_reason"]) <= {NO_FRAME, FRAGMENTS_MISSING, PAYLOAD_CRC}
    assert [i["status"] for i in rep["images"][-20:]] == ["decoded"] * 20     # the link went on
    psnr = [r["psnr_db"] for r in lines(out / "received.jsonl")[-20:]]
    assert min(psnr) > 24.0, psnr


def test_deep_fade_loses_the_images_in_it_and_nothing_after(tmp_path):
    """-20 dB for 50 image slots in the middle of 64 (the SNR trace, one value per slot): the
    50 are lost to the channel (no header survives), the 14 around them decode, and the report
    says so."""
    from gsc_blocks.apps.run import run_link
    from gsc_blocks.core.controller import write_trace
    from gsc_blocks.core.report import NO_FRAME, reconcile
    snrs = [20.0] * 7 + [-20.0] * 50 + [20.0] * 7
    trace = tmp_path / "fade.csv"
    write_trace(trace, np.array(snrs))
    images = (sorted(SAMPLES.glob("cifar_*.png")) * 8)[:len(snrs)]
    out = run_link(CONFIG, images, tmp_path / "out", [f"channel.snr_trace={trace}"], timeout_s=300)
    rep = reconcile(out)
    assert rep["unaccounted"] == 0 and rep["by_reason"] == {NO_FRAME: 50}
    status = [i["status"] for i in rep["images"]]
    assert status == ["decoded"] * 7 + ["lost"] * 50 + ["decoded"] * 7


def test_a_message_of_partial_samples_stops_the_receiver_with_the_reason_and_a_restart_recovers(tmp_path):
    """A stray program binds the receiver's port first and pushes 13 bytes (not whole complex
    samples): gr-zeromq's PULL source thread ends on it. The receiver notices within seconds,
    says why and exits 3 instead of listening to nothing; restarted, it receives a real
    transmitter's images, every one accounted for."""
    import zmq
    out, listing, images = link_folder(tmp_path, 2)
    port = free_port()
    context = zmq.Context()
    stray = context.socket(zmq.PUSH)
    stray.bind(f"tcp://127.0.0.1:{port}")
    first = side("rx", out, port, "--idle", 0, "--max-seconds", 120)
    try:
        time.sleep(4)                      # the receiver connects to the stray socket
        stray.send(b"\x00" * 13)
        assert first.wait(timeout=60) == 3
    finally:
        first.kill()
        stray.close(linger=0)
        context.term()
    log = "".join(p.read_text() for p in out.glob("rx-*.log"))
    assert "the radio source (pull_source0) stopped" in log and "8 bytes each" in log, log[-3000:]
    second = side("rx", out, port, "--idle", 0, "--max-seconds", 300)
    tx = side("tx", out, port, "--images", listing)
    try:
        assert tx.wait(timeout=300) == 0 and second.wait(timeout=120) == 0
    finally:
        for process in (tx, second):
            process.kill()
    rep = report(out)
    assert rep["unaccounted"] == 0 and rep["decoded"] == len(images), rep["by_reason"]
