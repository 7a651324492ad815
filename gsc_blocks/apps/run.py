"""Run the TX or RX flowgraph as a process, or both over ZMQ as a link.

    scripts/gsc rx --config radio_config/zmq_loopback.yaml --out OUT
    scripts/gsc tx --config radio_config/zmq_loopback.yaml --images DIR --out OUT

The transmitter closes its stream with an end-of-stream frame; a receiver
ends when it receives one (or once idle, see --idle), so the two sides need
nothing but the radio between them.
"""
import argparse
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..core.config import ConfigError, RadioError, load_config, parse_overrides  # noqa: F401 (parse_overrides: callers)
from ..core.images import ImageError, list_images
from ..core.models import CodecError
from .runlog import RUNS_DIR, RunLog

TX_MANIFEST = "tx_manifest.jsonl"
RX_LOG = "received.jsonl"
# Zeros after the end-of-stream frame. Over ZMQ they must outnumber what the link
# buffers between the two flowgraphs (ZMQ queues of ZMQ_HWM messages on each side,
# the kernel's TCP buffers, a few MB each on Linux): once the transmitter has pushed
# them all, every frame before them has reached the receiver, and only zeros can be
# lost when the socket closes. A radio needs just enough to release the last frame.
ZMQ_TAIL_SAMPLES = 1 << 21
RADIO_TAIL_SAMPLES = 131072
JEMALLOC = "libjemalloc.so.2"      # Debian's libjemalloc2 (scripts/gsc installs it)


def _image_list(spec: str) -> list[Path]:
    path = Path(spec)
    if path.suffix == ".txt" and path.is_file():
        return [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    return list_images(path)


def run_tx(args) -> int:
    from .flowgraphs import tx_top
    config = load_config(args.config, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = _image_list(args.images)
    (out / "tx_controller.jsonl").unlink(missing_ok=True)    # this run's controller slots
    # The manifest is appended to: a transmitter restarted into the same folder adds its
    # images under a new session id, and the report accounts for both runs.
    runlog = RunLog(out, "tx", images_offered=len(images) * config["multiuser"]["users"])
    if config["multiuser"]["users"] > 1:
        return run_mu_tx(args, config, images, out, runlog)
    try:
        top = tx_top(config, images, str(out / TX_MANIFEST), start_delay_s=args.start_delay,
                     interval_s=args.interval, first_id=args.first_id, events_path=str(runlog.events_path),
                     user=args.user)
    except Exception as err:
        runlog.close(failed=str(err), completed=False)
        raise
    runlog.update(session=top.source.session, user=top.source.user)
    t_start = time.time()
    top.start()
    deadline = time.time() + args.max_seconds
    if top.controller is not None:
        _closed_loop(top, deadline)
    taken, last_change, delivered = -1, time.time(), None
    while not (top.all_framed() and top.encoder.end_of_stream_sent) and time.time() < deadline:
        if top.radio_sink.nitems_read(0) != taken:
            taken, last_change = top.radio_sink.nitems_read(0), time.time()
        elif top.source.hold() and time.time() - last_change > args.stall_seconds:
            # The source waits for the radio (backpressure), and the radio takes nothing.
            print(f"gsc tx: error: the radio sink took no samples for {args.stall_seconds:g} s with "
                  f"{top.source.sent} of {len(images)} images handed over: is a receiver reading "
                  f"(scripts/gsc rx with the same {_peer(config)})?", file=sys.stderr, flush=True)
            delivered = "stalled"
            break
        time.sleep(0.02)
    if delivered is None:
        top.flush(ZMQ_TAIL_SAMPLES if config["link"] == "zmq" else RADIO_TAIL_SAMPLES)
        delivered = _wait_sent(top, deadline, args.linger, args.stall_seconds, _peer(config))
    top.stop()
    top.wait()
    stats = {"images_offered": len(images), "images_encoded": top.encoder.images_encoded,
             "fragments": top.encoder.fragments_out, "frames": top.builder.frames_built,
             "samples": top.builder.samples_queued, "encode_ms": list(top.encoder.encode_ms),
             "events": top.event_list(), "t_start": t_start, "t_end": time.time(),
             "completed": top.all_framed(), "stream": delivered, "malloc": allocator(), **top.uhd_counts()}
    (out / "tx_stats.json").write_text(json.dumps(stats))
    runlog.close(**stats)
    if top.controller is not None:
        with (out / "tx_controller.jsonl").open("w") as fh:
            for record in top.controller.slots:
                fh.write(json.dumps(record) + "\n")
    sent = top.source.sent
    outcome = {"complete": "every sample went out", "receiver_closed": "the receiver left after the last frame",
               "stalled": "the receiver stopped reading", "deadline": "--max-seconds passed"}[delivered]
    print(f"gsc tx: {sent} of {len(images)} images sent ({top.encoder.images_encoded} encoded) in "
          f"{top.builder.frames_built} frames, end-of-stream frame included; {outcome}"
          + "".join(f"; {v} {k[4:]}" for k, v in top.uhd_counts().items()), flush=True)
    return 0 if delivered != "stalled" else 1


def run_mu_tx(args, config, images, out, runlog) -> int:
    """The transmitters and the air until every user's frames are out (see apps/run.py run_tx)."""
    from .multiuser import mu_tx_top
    try:
        top = mu_tx_top(config, images, str(out / "tx_manifest.jsonl"), start_delay_s=args.start_delay,
                        interval_s=args.interval, first_id=args.first_id, events_path=str(runlog.events_path))
    except Exception as err:
        runlog.close(failed=str(err), completed=False)
        raise
    runlog.update(sessions=[u.source.session for u in top.users], users=len(top.users))
    t_start = time.time()
    top.start()
    deadline = time.time() + args.max_seconds
    delivered, warned = "deadline", False
    taken, last_change = -1, time.time()
    tail_from = None
    while time.time() < deadline:
        now = time.time()
        if top.radio_sink.nitems_read(0) != taken:
            taken, last_change = top.radio_sink.nitems_read(0), now
        if tail_from is None and top.all_framed() and top.frames_out():
            tail_from = top.adder.nitems_written(0)
        if tail_from is not None and taken >= tail_from + ZMQ_TAIL_SAMPLES:
            delivered = "complete"           # the zeros after the last frame pushed every frame through
            break
        idle = now - last_change
        if not warned and idle > PEER_WARN_S:
            warned = True
            print(f"gsc tx: no receiver has taken samples for {PEER_WARN_S:g} s: is scripts/gsc rx running "
                  f"with the same {_peer(config)}?", flush=True)
        if idle > (args.linger if tail_from is not None else args.stall_seconds):
            delivered = "receiver_closed" if tail_from is not None else "stalled"
            break
        time.sleep(0.02)
    top.stop()
    top.wait()
    sent = sum(u.source.sent for u in top.users)
    stats = {"users": len(top.users), "images_offered": len(images) * len(top.users), "images_sent": sent,
             "images_encoded": sum(u.encoder.images_encoded for u in top.users),
             "fragments": sum(u.encoder.fragments_out for u in top.users),
             "frames": sum(u.builder.frames_built for u in top.users),
             "sessions": [u.source.session for u in top.users], "events": top.event_list(),
             "t_start": t_start, "t_end": time.time(), "completed": top.all_framed(), "stream": delivered,
             "malloc": allocator()}
    (out / "tx_stats.json").write_text(json.dumps(stats))
    runlog.close(**stats)
    if any(user.controller is not None for user in top.users):
        with (out / "tx_controller.jsonl").open("w") as fh:     # each user's controller, its own slots
            for k, user in enumerate(top.users):
                for record in user.controller.slots:
                    fh.write(json.dumps({**record, "user": k}) + "\n")
    print(f"gsc tx: {len(top.users)} users, {sent} of {len(images) * len(top.users)} images sent "
          f"in {stats['frames']} frames; {delivered}", flush=True)
    return 0 if delivered in ("complete", "receiver_closed") else 1


def _wait_sent(top, deadline, linger_s, stall_s, address="zmq.address") -> str:
    """Keep the flowgraph up until the radio sink has taken every sample, tail included.

    Returns 'complete'; 'receiver_closed' when the sink stopped taking samples for
    linger_s after the frames had gone out (a receiver that saw the end-of-stream
    frame may leave before the tail's zeros); 'stalled' when it stopped for
    stall_s with frames still unsent (no receiver reading); 'deadline'.
    """
    # The emulated channel's filters hold a few samples back: allow one OFDM symbol (a
    # frame's last symbol is a guard symbol).
    held = top.tx.numerology.symbol_len
    last, last_change, warned = -1, time.time(), False
    while time.time() < deadline:
        produced = top.tx.flusher.nitems_written(0)
        taken = top.radio_sink.nitems_read(0) + held
        if top.tx.flusher.idle and taken >= produced:
            return "complete"
        if taken != last:
            last, last_change = taken, time.time()
        # Every frame sample is out once the flusher passed them all and the sink took
        # the stream up to the last one; zeros after it (a closed loop's idle zeros, the
        # tail) need not reach a receiver that left at the end-of-stream frame.
        frames_out = top.tx.flusher.passed >= top.builder.samples_queued and taken >= top.tx.flusher.frames_end
        if not frames_out and not warned and time.time() - last_change > min(PEER_WARN_S, stall_s / 2):
            warned = True
            print(f"gsc tx: no receiver has taken samples for {min(PEER_WARN_S, stall_s / 2):g} s: is scripts/gsc rx running "
                  f"with the same {address}? Waiting up to --stall-seconds {stall_s:g}", file=sys.stderr, flush=True)
        if time.time() - last_change > (linger_s if frames_out else stall_s):
            if not frames_out:
                unsent = top.builder.samples_queued - top.tx.flusher.passed + max(0, top.tx.flusher.frames_end - taken)
                print(f"gsc tx: error: the radio sink took no samples for {stall_s:g} s with "
                      f"{unsent} frame samples unsent: is a receiver reading "
                      "(scripts/gsc rx with the same zmq.address)?", file=sys.stderr, flush=True)
                return "stalled"
            return "receiver_closed"
        time.sleep(0.02)
    return "deadline"


def _closed_loop(top, deadline):
    """Wait for one controller record per image sent: a report, or the controller's own lost
    charge once its slot timeout passed."""
    while time.time() < deadline:
        sent = top.source.sent
        if top.source.finished.is_set() and len(top.controller.slots) >= sent:
            return
        time.sleep(0.01)


def run_rx(args) -> int:
    from .flowgraphs import rx_top
    config = load_config(args.config, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # received.jsonl is appended to: a receiver restarted into the same folder adds to it.
    manifest = args.manifest or str(out / TX_MANIFEST)
    runlog = RunLog(out, "rx")
    try:
        top = rx_top(config, str(out), manifest if not args.no_metrics else "", events_path=str(runlog.events_path))
    except Exception as err:
        runlog.close(failed=str(err))
        raise
    stopping = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stopping.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
    t_start = time.time()
    top.start()
    print(f"gsc rx: listening ({config['link']}); ends at the transmitter's end-of-stream frame"
          + (f", or {args.idle:g} s after the last frame" if args.idle > 0 else ""), flush=True)
    last_count, last_change = 0, time.time()
    told = False
    source_thread = SourceThread(top.radio)
    while True:
        if stopping["now"]:
            ended = "signal"
            break
        if source_thread.died():
            ended = "source_failed"
            print(f"gsc rx: error: the radio source ({top.radio.alias()}) stopped: its thread ended, so no "
                  "sample arrives any more (GNU Radio's error above says why; gr-zeromq's PULL source stops "
                  "on a message that is not whole complex samples, 8 bytes each, e.g. from another program "
                  f"pushing to {_peer(config)}). Restart the receiver; nothing it held is lost from the "
                  "accounting (scripts/gsc report)", file=sys.stderr, flush=True)
            break
        if top.decoder.end_of_stream.is_set():
            ended = "end_of_stream"
            break
        if time.time() - t_start > args.max_seconds:
            ended = "max_seconds"
            break
        # Activity: frames whose header passed its CRC (noise alone makes none) and images decoded.
        count = top.fragments_received + top.sink.count
        if count != last_count or not top.decoder.idle:
            last_count, last_change = count, time.time()
        if time.time() - runlog.record["t_alive"] > 1.0:
            # What a killed receiver leaves behind: its failures up to its last second.
            runlog.update(frames_ok=top.rx.header_decoder.frames_ok,
                          header_failures=top.rx.header_decoder.frames_failed)
        if not told and not last_count and top.rx.header_decoder.frames_failed == 0 \
                and time.time() - t_start > PEER_WARN_S:
            told = True
            print(f"gsc rx: no frame yet after {PEER_WARN_S:g} s: is the transmitter running with the same "
                  f"{_peer(config)}? Still listening", file=sys.stderr, flush=True)
        if args.idle > 0 and last_count and time.time() - last_change > args.idle:
            ended = "idle"
            break
        time.sleep(0.05)
    top.decoder.flush()
    drain_deadline = time.time() + 60
    while top.sink.count < top.decoder.images_out and time.time() < drain_deadline:
        time.sleep(0.05)     # the sink still writes images the flush decoded
    top.stop()
    top.wait()
    stats = {"frames_ok": top.rx.header_decoder.frames_ok,
             "header_failures": top.rx.header_decoder.frames_failed,
             "images_decoded": top.sink.count, "fragments_late": top.decoder.reassembler.late,
             "decode_ms": list(top.decoder.decode_ms),
             "ended": ended, "events": top.event_list(), "t_start": t_start, "t_end": time.time(),
             "malloc": allocator(), **top.uhd_counts()}
    (out / "rx_stats.json").write_text(json.dumps(stats, default=str))
    runlog.close(**stats)
    reason = {"end_of_stream": "the transmitter's end-of-stream frame",
              "idle": f"no frame for {args.idle:g} s (no end-of-stream frame received)",
              "max_seconds": f"--max-seconds {args.max_seconds:g}", "signal": "a signal",
              "source_failed": "its radio source failing"}[ended]
    print(f"gsc rx: {top.sink.count} images decoded from {top.rx.header_decoder.frames_ok} frames "
          f"({top.rx.header_decoder.frames_failed} header CRC failures"
          + "".join(f", {v} {k[4:]}" for k, v in top.uhd_counts().items()) + f"); ended by {reason}", flush=True)
    if Path(manifest).is_file() and Path(manifest).parent == out:
        from ..core.report import format_reconciliation, reconcile
        report = reconcile(out)
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"gsc rx: {format_reconciliation(report)} ({out / 'report.json'})", flush=True)
    return 3 if ended == "source_failed" else 0


PEER_WARN_S = 5.0       # a side that hears nothing from its peer this long says what to check


def _peer(config) -> str:
    """Where the other side must be, in the setup's words."""
    if config["link"] == "zmq":
        return f"zmq.address ({config['zmq']['address']})"
    u = config["usrp"]
    return f"usrp.center_freq ({u['center_freq'] / 1e6:g} MHz) and usrp.samp_rate ({u['samp_rate'] / 1e6:g} MS/s)"


class SourceThread:
    """Whether a source block's GNU Radio thread is still there. A block whose work throws ends its
    thread and nothing else notices: the flowgraph stays up with no samples. GNU Radio names each
    block's thread after the block (alias and id, cut to Linux's 15 characters), so its absence
    from /proc/self/task is the sign."""

    CHECK_EVERY_S = 1.0     # reading every thread's name costs: a profile caught it at 50 ms

    def __init__(self, block):
        self.name = f"{block.name()}{block.unique_id()}"[:15]
        self.seen = False
        self.checked = 0.0

    def _alive(self) -> bool | None:
        try:
            names = {(task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()}
        except OSError:
            return None                  # no /proc: cannot tell
        return self.name in names

    def died(self) -> bool:
        if time.time() - self.checked < self.CHECK_EVERY_S:
            return False
        self.checked = time.time()
        alive = self._alive()
        if alive:
            self.seen = True
        return self.seen and alive is False


class LinkError(RuntimeError):
    pass


IDLE_SLOTS = 40          # closed loop: the receiver stops after this many slot timeouts without a frame


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_port_overrides(config, overrides) -> list[str]:
    """The two processes of one link run talk over loopback ports picked free at start, so
    runs side by side on one host (tests, benchmarks, a demo) never collide; an address set
    with --set, or one off the loopback, is kept."""
    keys = {"zmq.address": config["zmq"]["address"], "controller.report_address": config["controller"]["report_address"]}
    extra = []
    for key, address in keys.items():
        host = address.rsplit(":", 1)[0]
        if any(o.split("=", 1)[0].strip() == key for o in overrides) or host not in ("tcp://127.0.0.1", "tcp://localhost"):
            continue
        extra.append(f"{key}={host}:{free_port()}")
    return extra


def child_env() -> dict:
    """The environment of run_link's two processes, as scripts/gsc sets it for tx and rx (see there):
    jemalloc preloaded where it is installed (GSC_MALLOC=glibc: glibc's malloc, two arenas). Each
    process's ONNX Runtime sessions get half this host's cores, since TX and RX share them: on 2
    cores one thread each took the loopback from 278 to 311 images/s, the second thread's hand-offs
    costing more CPU than it saved (docs/performance.md). GSC_ORT_THREADS, set, wins."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MALLOC_ARENA_MAX=os.environ.get("MALLOC_ARENA_MAX", "2"),
               GSC_ORT_THREADS=os.environ.get("GSC_ORT_THREADS", str(max(1, (os.cpu_count() or 2) // 2))))
    preload = env.get("LD_PRELOAD", "")
    if env.get("GSC_MALLOC", "jemalloc") != "glibc" and JEMALLOC not in preload and ctypes.util.find_library("jemalloc"):
        env["LD_PRELOAD"] = f"{JEMALLOC}:{preload}" if preload else JEMALLOC
    return env


def allocator() -> str:
    """The malloc this process runs on: what its stats record."""
    return "jemalloc" if JEMALLOC in os.environ.get("LD_PRELOAD", "") else "glibc"


def run_link(config_path, images, out_dir, overrides=(), timeout_s=600, quiet=True, monitor=None,
             monitor_s=1.0, rx_ready_first=False) -> Path:
    """RX and TX as two processes over ZMQ; returns the output folder when both ended.

    The setup and the model are checked here first, so a bad YAML value or a
    missing/tampered model stops with one clear message before anything starts.
    The receiver ends at the transmitter's end-of-stream frame. The two talk over
    loopback ports picked free at start (see _free_port_overrides). monitor(tx, rx), given,
    is called every monitor_s seconds with the two Popen objects while the transmitter runs.
    rx_ready_first: start the transmitter only once the receiver listens (its flowgraph and decode
    service up, e.g. Ray started), so a rate or latency measured over the run leaves its start-up out.
    """
    from ..core.registry import make_codec
    config = load_config(config_path, list(overrides))
    if config["link"] != "zmq":
        raise ConfigError(f"{config_path}: link is {config['link']!r}; the two-process runner needs link: zmq "
                          "(run scripts/gsc tx and rx on their hosts for USRPs)")
    codec = make_codec(config["codec"]["name"], config["codec"]["models_dir"] or None,
                       {key: config["codec"][key] for key in ("classes", "class_quality", "class_masks")}
                       | {"cbr": config["codec"]["digital_cbr"]})
    try:
        codec.check_rate(config["codec"]["rate_index"])
    except ValueError as err:
        raise ConfigError(f"{config_path}: key codec.rate_index: {err}") from None
    if config["controller"]["enabled"]:
        from .flowgraphs import check_calibration_cbr
        try:
            check_calibration_cbr(config)
        except ValueError as err:
            raise ConfigError(f"{config_path}: {err}") from None
    overrides = list(overrides) + _free_port_overrides(config, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # One link run per folder: the records of an earlier run there go (tx and rx started
    # by hand append to them instead, so their restarts are accounted together).
    for name in (TX_MANIFEST, RX_LOG, "tx_stats.json", "rx_stats.json"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / RUNS_DIR, ignore_errors=True)
    if not isinstance(images, (str, Path)):
        listing = out / "images.txt"
        listing.write_text("\n".join(str(p) for p in images) + "\n")
        images = listing
    common = ["--config", str(config_path)] + [x for pair in overrides for x in ("--set", pair)] + ["--out", str(out)]
    python = sys.executable
    env = child_env()
    with open(out / "rx.log", "w") as rx_log, open(out / "tx.log", "w") as tx_log:
        # In a closed loop a fade can hide frame after frame from the receiver while the controller
        # waits out each slot's timeout: the receiver's idle stop must outlast a long run of them.
        idle = max(10.0, IDLE_SLOTS * config["controller"]["slot_timeout_s"]) if config["controller"]["enabled"] \
            else 10.0
        rx = subprocess.Popen([python, "-m", "gsc_blocks.apps.run", "rx"] + common + ["--idle", f"{idle:g}"],
                              stdout=rx_log, stderr=subprocess.STDOUT, env=env)
        if rx_ready_first:
            ready_deadline = time.time() + 120
            while rx.poll() is None and time.time() < ready_deadline and \
                    "gsc rx: listening" not in (out / "rx.log").read_text():
                time.sleep(0.1)
        tx = subprocess.Popen([python, "-m", "gsc_blocks.apps.run", "tx"] + common + ["--images", str(images)],
                              stdout=tx_log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout_s
        while tx.poll() is None and time.time() < deadline:
            if monitor is not None:
                monitor(tx, rx)
            time.sleep(monitor_s if monitor is not None else 0.05)
        if tx.poll() is None:
            tx.kill()
        tx_rc = tx.wait()
        try:
            rx_rc = rx.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rx.send_signal(signal.SIGINT)
            rx_rc = rx.wait(timeout=30)
    for name, rc in (("tx", tx_rc), ("rx", rx_rc)):
        if rc != 0:
            tail = (out / f"{name}.log").read_text().strip().splitlines()[-5:]
            raise LinkError(f"{name.upper()} process exited with {rc}; last lines of {out / (name + '.log')}:\n  "
                            + "\n  ".join(tail))
    return out


def add_tx_arguments(q):
    q.add_argument("--config", required=True, help="radio setup YAML (radio_config/)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setup key, e.g. channel.snr_db=5 (repeatable)")
    q.add_argument("--out", required=True, help="output folder: tx_manifest.jsonl, tx_stats.json")
    q.add_argument("--images", required=True, help="image folder, image file, or .txt list of paths")
    q.add_argument("--first-id", type=int, default=0, help="image id of the first image (16-bit, wraps)")
    q.add_argument("--user", type=int, default=0, choices=range(8), metavar="0..7",
                   help="this transmitter's user id in every header (one radio of several on sub-bands of a "
                        "multi-user receiver, docs/multiuser.md)")
    q.add_argument("--interval", type=float, default=0.0, help="seconds between images")
    q.add_argument("--start-delay", type=float, default=0.5, help="seconds before the first image")
    q.add_argument("--linger", type=float, default=1.0,
                   help="after the last frame went out, stop once the radio sink took nothing for this long "
                        "(the receiver left after the end-of-stream frame)")
    q.add_argument("--stall-seconds", type=float, default=60.0,
                   help="give up (exit 1) when the radio sink takes nothing for this long with frames unsent")
    q.add_argument("--max-seconds", type=float, default=3600, help="stop after this long whatever happens")


def add_rx_arguments(q):
    q.add_argument("--config", required=True, help="radio setup YAML (radio_config/)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setup key, e.g. rx.refine_steps=2 (repeatable)")
    q.add_argument("--out", required=True, help="output folder: rx_*.png, received.jsonl, rx_stats.json")
    q.add_argument("--manifest", default="",
                   help="the transmitter's tx_manifest.jsonl, for PSNR and MS-SSIM against the originals "
                        "(default OUT/tx_manifest.jsonl, there when both sides share OUT)")
    q.add_argument("--no-metrics", action="store_true", help="do not compare with originals")
    q.add_argument("--idle", type=float, default=10.0,
                   help="without an end-of-stream frame, stop this long after the last frame (0: never)")
    q.add_argument("--max-seconds", type=float, default=3600, help="stop after this long whatever happens")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="role", required=True)
    add_tx_arguments(sub.add_parser("tx", help="the transmitter"))
    add_rx_arguments(sub.add_parser("rx", help="the receiver"))
    args = p.parse_args(argv)
    try:
        return run_tx(args) if args.role == "tx" else run_rx(args)
    except (ConfigError, CodecError, ImageError, RadioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
