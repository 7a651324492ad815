"""Run the TX or RX flowgraph as a process, or both over ZMQ as a link.

    python -m gsc_blocks.apps.run tx --config radio_config/zmq_loopback.yaml --images DIR --out OUT
    python -m gsc_blocks.apps.run rx --config radio_config/zmq_loopback.yaml --out OUT
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..core.codec import CodecError
from ..core.config import ConfigError, load_config
from ..core.images import ImageError, list_images

TX_MANIFEST = "tx_manifest.jsonl"
RX_LOG = "received.jsonl"
DONE_FILE = "tx_done"
SENT_FILE = "tx_sent.json"      # TX -> RX: samples that must arrive before the TX may close ZMQ
DRAINED_FILE = "rx_drained"     # RX -> TX: they did


def parse_overrides(pairs) -> dict:
    """['channel.snr_db=5', ...] -> {'channel.snr_db': 5.0}; values parsed as YAML scalars."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. channel.snr_db=5")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _image_list(spec: str) -> list[Path]:
    path = Path(spec)
    if path.suffix == ".txt" and path.is_file():
        return [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    return list_images(path)


def run_tx(args) -> int:
    from .flowgraphs import tx_top
    config = load_config(args.config, parse_overrides(args.set))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = _image_list(args.images)
    top = tx_top(config, images, str(out / TX_MANIFEST), start_delay_s=args.start_delay,
                 interval_s=args.interval, first_id=args.first_id)
    t_start = time.time()
    top.start()
    deadline = time.time() + args.max_seconds
    if top.controller is not None:
        _closed_loop(top, config["controller"], deadline)
    while not top.all_framed() and time.time() < deadline:
        time.sleep(0.02)
    top.flush()
    while not top.tx.flusher.idle and time.time() < deadline:
        time.sleep(0.02)
    if args.wait_rx:
        # Closing the ZMQ socket drops whatever the receiver has not read yet (queues and
        # TCP buffers hold megabytes), so wait until the receiver says it has the frames.
        (out / DRAINED_FILE).unlink(missing_ok=True)
        frames_and_idle = top.builder.samples_queued + top.builder.frames_built * top.builder.idle_zeros
        (out / SENT_FILE).write_text(json.dumps({"samples": frames_and_idle}))
        while not (out / DRAINED_FILE).exists() and time.time() < deadline:
            time.sleep(0.05)
    time.sleep(args.linger)
    top.stop()
    top.wait()
    stats = {"images_offered": len(images), "images_encoded": top.encoder.images_encoded,
             "fragments": top.encoder.fragments_out, "frames": top.builder.frames_built,
             "samples": top.builder.samples_queued, "encode_ms": top.encoder.encode_ms,
             "events": top.event_list(), "t_start": t_start, "t_end": time.time(),
             "completed": top.all_framed()}
    (out / "tx_stats.json").write_text(json.dumps(stats))
    if top.controller is not None:
        with (out / "tx_controller.jsonl").open("w") as fh:
            for record in top.controller.slots:
                fh.write(json.dumps(record) + "\n")
    return 0


def _closed_loop(top, ctrl, deadline):
    """Wait for one report per image; an image with none slot_timeout_s after it was sent counts as lost."""
    import pmt
    controller, source = top.controller, top.source
    charged = -1
    while time.time() < deadline:
        sent = [r for r in source.records if r["status"] == "sent"]
        done = len(controller.slots)
        if source.finished.is_set() and done >= len(sent):
            return
        pending = sent[done] if done < len(sent) else None
        if pending and pending["slot"] != charged and time.time() - pending["t_sent"] > ctrl["slot_timeout_s"]:
            last_snr = controller.slots[-1]["snr_db"] if controller.slots else 0.0
            controller.to_basic_block()._post(pmt.intern("report"), pmt.to_pmt({
                "lost": True, "slot": int(pending["slot"]), "image_id": int(pending["image_id"]),
                "snr_est_db": last_snr, "delay_ms": ctrl["slot_timeout_s"] * 1e3}))
            charged = pending["slot"]
        time.sleep(0.005)


def run_rx(args) -> int:
    from .flowgraphs import rx_top
    config = load_config(args.config, parse_overrides(args.set))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = args.manifest or str(out / TX_MANIFEST)
    top = rx_top(config, str(out), manifest if not args.no_metrics else "")
    stopping = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stopping.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
    t_start = time.time()
    top.start()
    done_file = out / DONE_FILE
    sent_file, drained_file = out / SENT_FILE, out / DRAINED_FILE
    last_count, last_change = -1, time.time()
    while not stopping["now"] and time.time() - t_start < args.max_seconds:
        if sent_file.exists() and not drained_file.exists():
            expected = json.loads(sent_file.read_text())["samples"]
            if top.radio.nitems_written(0) >= expected + RELEASE_SAMPLES:
                drained_file.write_text(str(top.radio.nitems_written(0)))
        # Activity: samples still reaching the demux, frames, decoded images.
        count = top.rx.hpd.nitems_read(0) + top.fragments_received + len(top.sink.received)
        if count != last_count:
            last_count, last_change = count, time.time()
        if not top.decoder.idle:
            last_change = time.time()
        if done_file.exists() and time.time() - last_change > args.idle:
            break
        time.sleep(0.05)
    top.decoder.flush()
    drain_deadline = time.time() + 60
    while len(top.sink.received) < top.decoder.images_out and time.time() < drain_deadline:
        time.sleep(0.05)     # the sink still writes images the flush decoded
    top.stop()
    top.wait()
    stats = {"frames_ok": top.rx.header_decoder.frames_ok,
             "header_failures": top.rx.header_decoder.frames_failed,
             "images_decoded": len(top.sink.received), "decode_ms": top.decoder.decode_ms,
             "events": top.event_list(), "t_start": t_start, "t_end": time.time()}
    (out / "rx_stats.json").write_text(json.dumps(stats, default=str))
    return 0


# Zeros past the last frame that release it from the receiver's correlator and demux.
RELEASE_SAMPLES = 32768


class LinkError(RuntimeError):
    pass


def run_link(config_path, images, out_dir, overrides=(), timeout_s=600, quiet=True) -> Path:
    """RX and TX as two processes over ZMQ; returns the output folder when both ended.

    The setup and the model are checked here first, so a bad YAML value or a
    missing/tampered model stops with one clear message before anything starts.
    """
    from ..core.codec import make_codec
    config = load_config(config_path, parse_overrides(overrides))
    if config["link"] != "zmq":
        raise ConfigError(f"{config_path}: link is {config['link']!r}; the two-process runner needs link: zmq "
                          "(run the TX and RX flowgraphs on their hosts for USRPs)")
    codec = make_codec(config["codec"]["name"], config["codec"]["models_dir"] or None)
    if hasattr(codec, "groups_sent"):
        try:
            codec.groups_sent(config["codec"]["rate_index"])
        except ValueError as err:
            raise ConfigError(f"{config_path}: key codec.rate_index: {err}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (TX_MANIFEST, RX_LOG, DONE_FILE, SENT_FILE, DRAINED_FILE, "tx_stats.json", "rx_stats.json",
                 "tx_controller.jsonl"):
        (out / name).unlink(missing_ok=True)
    if not isinstance(images, (str, Path)):
        listing = out / "images.txt"
        listing.write_text("\n".join(str(p) for p in images) + "\n")
        images = listing
    common = ["--config", str(config_path)] + [x for pair in overrides for x in ("--set", pair)] + ["--out", str(out)]
    python = sys.executable
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(out / "rx.log", "w") as rx_log, open(out / "tx.log", "w") as tx_log:
        rx = subprocess.Popen([python, "-m", "gsc_blocks.apps.run", "rx"] + common, stdout=rx_log,
                              stderr=subprocess.STDOUT, env=env)
        tx = subprocess.Popen([python, "-m", "gsc_blocks.apps.run", "tx"] + common
                              + ["--images", str(images), "--wait-rx"],
                              stdout=tx_log, stderr=subprocess.STDOUT, env=env)
        try:
            tx_rc = tx.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            tx.kill()
            tx_rc = -9
        (out / DONE_FILE).write_text(str(tx_rc))
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="role", required=True)
    for role in ("tx", "rx"):
        q = sub.add_parser(role)
        q.add_argument("--config", required=True, help="radio setup YAML (radio_config/)")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setup key")
        q.add_argument("--out", required=True, help="output folder (shared by TX and RX on one host)")
        q.add_argument("--max-seconds", type=float, default=3600)
        if role == "tx":
            q.add_argument("--images", required=True, help="image folder, image file, or .txt list of paths")
            q.add_argument("--first-id", type=int, default=0)
            q.add_argument("--interval", type=float, default=0.0, help="seconds between images")
            q.add_argument("--start-delay", type=float, default=0.5, help="seconds before the first image")
            q.add_argument("--linger", type=float, default=0.5, help="seconds to keep the link up after the flush")
            q.add_argument("--wait-rx", action="store_true",
                           help="after the flush, wait until an RX sharing --out confirms it read every frame")
        else:
            q.add_argument("--manifest", default="", help="TX manifest JSONL (default OUT/tx_manifest.jsonl)")
            q.add_argument("--no-metrics", action="store_true", help="do not compare with originals")
            q.add_argument("--idle", type=float, default=2.0,
                           help="after TX is done (OUT/tx_done exists), stop once idle this long")
    args = p.parse_args(argv)
    try:
        return run_tx(args) if args.role == "tx" else run_rx(args)
    except (ConfigError, CodecError, ImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
