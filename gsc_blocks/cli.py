"""gsc command line (run through scripts/gsc, which sets up the environment first)."""
import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cmd_demo(args) -> int:
    from .apps.run import LinkError, run_link
    from .core.report import account, format_table, write_report
    out = Path(args.out or REPO / "out" / time.strftime("demo-%Y%m%d-%H%M%S"))
    overrides = list(args.set)
    print(f"gsc demo: {args.images} -> {args.config} (two processes over ZMQ on 127.0.0.1) -> {out}")
    try:
        run_link(args.config, args.images, out, overrides)
    except LinkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = write_report(out, title=f"gsc demo: {Path(args.config).stem} {' '.join(overrides)}")
    print(format_table(account(out), summary))
    if summary.get("samples_per_s"):
        print(f"link: {summary['samples_per_s'] / 1e3:.0f} kS/s, {summary['images_per_s']:.1f} images/s; "
              f"mean SNR estimate {summary['snr_est_db']:.2f} dB")
    print(f"outputs: {out}/ (metrics.jsonl, summary.json, sheet.png, rx_*.png)")
    return 0


def cmd_report(args) -> int:
    """Reconcile the transmitter's manifest with what the receiver wrote (any number of
    restarts of either side into the folder): every image decoded or lost with a cause."""
    import json
    from .core.report import account, format_reconciliation, format_table, reconcile, write_report
    out = Path(args.out)
    if not (out / "tx_manifest.jsonl").is_file():
        print(f"error: {out / 'tx_manifest.jsonl'} not found: --out must be the folder the transmitter wrote "
              "(scripts/gsc tx --out), with the receiver's received.jsonl beside it", file=sys.stderr)
        return 2
    summary = write_report(out, title=f"gsc report: {out}")
    report = reconcile(out)
    path = Path(args.json) if args.json else out / "report.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    if args.table:
        print(format_table(account(out), summary))
    print(format_reconciliation(report))
    print(f"report: {path}")
    return 0 if report["unaccounted"] == 0 else 1


def cmd_test(pytest_args) -> int:
    """pytest on tests/ (or on the test files or folders named), its options passed through."""
    named = [a for a in pytest_args if not a.startswith("-") and (REPO / a.split("::")[0]).exists()]
    where = [] if named else [str(REPO / "tests")]
    return subprocess.call([sys.executable, "-m", "pytest"] + where + ["-q", "-p", "no:cacheprovider"]
                           + pytest_args, cwd=REPO)


def parse_levels(values) -> dict:
    """--levels '0,1' (every SPIC codec) and 'cspic=2,3' (one) -> {codec or '': [levels]}."""
    out = {}
    for value in values:
        name, _, levels = value.rpartition("=")
        try:
            out[name] = [int(v) for v in levels.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--levels {value!r}: expected comma-separated level numbers, e.g. 0,3 or "
                             "cspic=2,3") from None
    return out


def cmd_bench(args) -> int:
    if args.what != "codec":
        args.codec = args.codec or "deepjscc"
    if args.what == "codec":
        if (args.dataset or "camvid") != "camvid":
            raise ValueError(f"--dataset {args.dataset}: bench codec runs on camvid (its segmenters' dataset)")
        from .bench.camvid import bench_codec
        codecs = [c.strip() for c in (args.codec or "spic,cspic,webp,avif,jpeg2000").split(",") if c.strip()]
        bench_codec(codecs, args.images, args.data, args.json or "out/bench_codec.json",
                    args.plot or "out/bench_codec.png",
                    bpp_targets=[float(b) for b in args.bpp.split(",")] if args.bpp else None,
                    steps_list=[int(k) for k in (args.refine_steps or "4").split(",")],
                    levels=parse_levels(args.levels),
                    command=args.command_line)
        return 0
    if args.what == "calibrate":
        args.images = args.images or 300
        out = args.out or str(REPO / "models" / args.codec / "calibration.json")
        steps = [int(k) for k in args.refine_steps.split(",")] if args.refine_steps else None
        from .bench.calibrate import bench_calibrate
        from .bench.control import CAMVID_CODECS
        dataset = args.dataset or ("camvid" if args.codec.split("-")[0] in CAMVID_CODECS else "cifar10")
        table = bench_calibrate(args.codec, [float(s) for s in args.snr.split(",")] if args.snr else None,
                                args.images, args.data, out, refine_steps=steps, command=args.command_line,
                                dataset=dataset, cbr=args.cbr)
        for rate, entry in table["rates"].items():
            for k, point in entry["steps"].items():
                print(f"rate {rate} ({entry.get('label', entry['symbols'])}{', ' + entry['sent_as'] if 'sent_as' in entry else ''})"
                      f", {k} steps: PSNR {point['psnr_db'][-1]} dB at {table['snr_db'][-1]:g} dB SNR")
        print(f"calibration written to {out}")
        return 0
    if args.what == "control":
        import json as _json
        args.images = args.images or 2000
        v_sweep = [float(v) for v in args.v_sweep.split(",")] if args.v_sweep else []
        levels = [int(v) for v in args.fixed_levels.split(",") if v.strip()]
        from .bench.control import bench_control
        result = bench_control(args.snr_trace, args.images, args.V, args.data, args.config,
                               args.json or "out/bench_control.json", args.plot or "out/bench_control.png",
                               v_sweep=v_sweep, fixed_levels=levels, codec=args.codec,
                               quality_metric=args.quality_metric, quality_target=args.quality_target,
                               overrides=args.set, work_dir=args.work_dir or "out/bench_control",
                               command=args.command_line, dataset=args.dataset)
        print(_json.dumps({k: v for k, v in result.items() if k != "trace"}, indent=1))
        return 0
    if args.what == "soak":
        from .bench.soak import bench_soak
        snr = float(args.snr or 10.0)
        result = bench_soak(args.images or 10000, snr, args.data, args.config, args.json or "out/bench_soak.json",
                            args.plot or "out/bench_soak.png", args.work_dir or "out/bench_soak", args.set,
                            command=args.command_line)
        growth = {k: "n/a" if v is None else f"{100 * v:+.1f} %" for k, v in result["rss_growth"].items()}
        print(f"soak: {result['n_images']} images: {result['decoded']} decoded, {result['lost']} lost "
              f"{result['by_reason']}, {result['unaccounted']} unaccounted; RSS growth from image "
              f"{result['growth_from_images']}: tx {growth['tx']}, rx {growth['rx']}")
        return 0
    if args.what == "multiuser":
        from .bench.multiuser import bench_multiuser
        users = [int(u) for u in (args.users or "1,2,4,8").split(",")]
        config = args.config if args.config != DEFAULT_CONFIG else str(REPO / "radio_config" / "zmq_multiuser.yaml")
        result = bench_multiuser(users, args.service, args.images or 40, float(args.snr or 10.0), args.batch_size,
                                 args.max_wait_ms, int(args.refine_steps or 0), args.data, config,
                                 args.json or "out/bench_multiuser.json", args.plot or "out/bench_multiuser.png",
                                 args.work_dir or "out/bench_multiuser", args.set, command=args.command_line)
        for run in result["runs"]:
            worst = max(u["latency_ms_p99"] for u in run["per_user"])
            print(f"{run['source']:>6} {run['mode']:>7} users {run['users']}: {run['images_per_s']:7.1f} images/s, "
                  f"worst p99 {worst:8.1f} ms, lost {sum(u['lost'] for u in run['per_user'])}, "
                  f"unaccounted {run['unaccounted']}")
        print("batched / sync:", {k: None if v is None else round(v, 2) for k, v in result["ratios"].items()})
        return 0
    if args.what == "frames":
        from .bench.frames import bench_frames
        snrs = [float(s) for s in (args.snr or "-6,-5,-4,-3,-2,-1,0,2").split(",")]
        result = bench_frames(snrs, args.frames, args.symbols, args.config, args.set,
                              args.json or "out/bench_frames.json", args.plot or "out/bench_frames.png",
                              command=args.command_line)
        fit, ctrl = result["fit"], result["controller"]
        print(f"fit: half the frames lost at {fit['loss_snr_db']} dB, {fit['loss_width_db']} dB per e-fold "
              f"(the setup's controller plans with {ctrl['loss_snr_db']} dB, {ctrl['loss_width_db']} dB: "
              "controller.loss_snr_db, controller.loss_width_db)")
        rate = result["receive_rate"]
        print(f"receiver ({rate['correlators']} correlators): {rate['frames_msps']} MS/s on back-to-back frames, "
              f"{rate['noise_msps']} MS/s on noise; one frame at a time (header_payload_demux): "
              f"{rate['demux_frames_msps']} MS/s")
        stock = result["stock_ofdm_rx_rate"]
        print(f"stock gr-digital ofdm_rx, same run: {stock['frames_msps']} MS/s on its back-to-back frames "
              f"({stock['frames_decoded']}/{stock['frames']} decoded): this receiver at "
              f"{result['receive_rate_vs_stock']:.2f}x")
        return 0
    snrs = [float(s) for s in (args.snr or "0,5,10,15,20").split(",")]
    args.images = args.images or 200
    from .bench.link import bench_link, format_link_table
    result = bench_link(args.codec, snrs, args.images, args.data, args.config,
                        args.json or "out/bench_link.json", args.plot or "out/bench_link.png", mcs=args.mcs,
                        cbr=args.cbr, fading=args.fading, dataset=args.dataset or "cifar10", refine_steps=args.refine_steps or "1",
                        command=args.command_line)
    print(format_link_table(result))
    t = result["throughput"]
    per = "".join(f", {tag} {rate:.1f}" for tag, rate in t["per_codec"].items())
    print(f"throughput: {t['samples_per_s'] / 1e3:.0f} kS/s, {t['images_per_s']:.1f} images/s{per}, "
          f"RX latency p50 {t['latency_ms_p50']:.1f} ms, p99 {t['latency_ms_p99']:.1f} ms")
    return 0


def cmd_docs(args) -> int:
    from .bench.tables import write_docs
    changed = write_docs(REPO, check=args.check)
    for path in changed:
        print(f"{'differs from its JSON' if args.check else 'written'}: {path}")
    if not changed:
        print("every results table matches its JSON")
    return 1 if args.check and changed else 0


def cmd_grc(args) -> int:
    """gnuradio-companion run by the venv's python, so the flowgraphs it starts find ONNX Runtime
    and the [GSC] blocks (scripts/gsc exports GRC_BLOCKS_PATH)."""
    import os
    grc = "/usr/bin/gnuradio-companion"
    if not Path(grc).is_file():
        print(f"error: {grc} is missing: run scripts/gsc once to install it", file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "models"),
                                                        os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.call([sys.executable, grc] + args.flowgraphs, cwd=REPO, env=env)


def cmd_models(module, rest) -> int:
    """A training-side command, its own options and --help passed through."""
    return subprocess.call([sys.executable, "-m", f"gsc_models.{module}"] + rest, cwd=REPO / "models")


class Parser(argparse.ArgumentParser):
    """Bad options end in one line (and exit code 2), naming the command's --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


PASS_THROUGH = {"train": "train", "export": "export", "train-refiner": "train_refiner",
                "train-segmenter": "train_segmenter", "train-spic": "train_spic", "train-sqgan": "train_sqgan"}


DEFAULT_CONFIG = str(REPO / "radio_config" / "zmq_loopback.yaml")


def build_parser() -> Parser:
    from .apps.run import add_rx_arguments, add_tx_arguments
    from .core.controller import QUALITY_METRICS
    p = Parser(prog="scripts/gsc", description="gr-gsc: generative semantic communication over GNU Radio")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    d = sub.add_parser("demo", help="send the sample images over the two-process ZMQ loopback")
    d.add_argument("--config", default=str(REPO / "radio_config" / "zmq_loopback.yaml"))
    d.add_argument("--images", default=str(REPO / "tests" / "data" / "samples"))
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setup key")
    d.add_argument("--out", default=None)
    r = sub.add_parser("report", help="account for every image the transmitter sent into a folder: "
                                      "decoded, or lost with a cause (across restarts of either side)")
    r.add_argument("--out", required=True, help="the folder scripts/gsc tx and rx wrote")
    r.add_argument("--json", default=None, help="default OUT/report.json")
    r.add_argument("--table", action="store_true", help="also print one line per image")
    u = sub.add_parser("gui", help="run a QT GUI flowgraph (default the loopback) for a while and save a "
                                   "screenshot of its tabs; headless without a display")
    u.add_argument("--flowgraph", default=str(REPO / "flowgraphs" / "gsc_loopback.grc"))
    u.add_argument("--seconds", type=float, default=20.0, help="how long it runs before the screenshot")
    u.add_argument("--out", default=str(REPO / "out" / "gui.png"), help="the screenshot (PNG)")
    sub.add_parser("test", help="run the test suite; pytest options pass through (e.g. -k frame, -x)",
                   add_help=False)
    b = sub.add_parser("bench", help="benchmarks (writes JSON and a PNG plot)")
    b.add_argument("what", choices=["link", "calibrate", "control", "frames", "codec", "soak", "multiuser"])
    b.add_argument("--codec", default=None, help="link: one codec or several, comma-separated "
                   "(deepjscc, deepjscc_sr, swinjscc, <codec>+refiner, separation, separation-webp|-jpeg2000|-avif); "
                   "calibrate, control: one (default deepjscc); codec: spic, cspic, webp, avif, jpeg2000 "
                   "(default all)")
    b.add_argument("--refine-steps", default=None, help="link, <codec>+refiner: diffusion refiner DDIM steps, "
                   "comma-separated, each its own curve (default 1; e.g. 1,4); codec: spic's and cspic's "
                   "regeneration steps (default 4); calibrate: the step counts "
                   "the controller may choose (default 0,1,2 when a refiner is trained for the codec)")
    b.add_argument("--mcs", default="oracle", help="link, separation: 'oracle' (best MCS per SNR), an MCS "
                   "name or index (e.g. 64qam-1/2), or several comma-separated, one curve each")
    b.add_argument("--cbr", default=None, help="link, successive-refinement codecs (deepjscc_sr, swinjscc): CBRs, "
                   "comma-separated, each its own curve (e.g. 1/24,1/12,1/6; default the full rate); with one "
                   "CBR the digital codecs (separation, spic, cspic) fill the same channel uses; calibrate: a digital "
                   "codec's CBR (default its own, 1/6)")
    b.add_argument("--fading", default="none", choices=["none", "rayleigh"],
                   help="link: rayleigh = block fading, one Rayleigh gain per image (same gains on both channels)")
    b.add_argument("--dataset", default=None, choices=["cifar10", "kodak", "camvid"],
                   help="link: test images (default cifar10); codec: camvid (the only one); calibrate, control: "
                        "cifar10, or camvid (the default for spic, cspic and sqgan)")
    b.add_argument("--bpp", default=None, help="codec: classical codecs at these bits per pixel (comma-separated; "
                                               "default: a sweep of their quality settings)")
    b.add_argument("--levels", action="append", default=[],
                   help="codec: spic/cspic/sqgan levels, comma-separated (default all); 'cspic=2,3,4' for one codec "
                        "(repeatable)")
    b.add_argument("--snr", default=None, help="link: channel SNRs (default 0,5,10,15,20); calibrate: "
                   "(default -10 to 30 in 2.5 dB steps); frames: "
                   "(default -6,-5,-4,-3,-2,-1,0,2); soak: one (default 10)")
    b.add_argument("--frames", type=int, default=200, help="frames: known-symbol frames per SNR")
    b.add_argument("--symbols", type=int, default=512, help="frames: payload symbols per frame (512: a CIFAR "
                   "image at CBR 1/6)")
    b.add_argument("--images", type=int, default=None, help="images (link 200, calibrate 300, control 2000, "
                                                             "soak 10000, multiuser 40 per user)")
    b.add_argument("--data", default=None, help="folder holding cifar10/ (default ../shared/datasets)")
    b.add_argument("--config", default=DEFAULT_CONFIG, help="the setup (multiuser: radio_config/zmq_multiuser.yaml)")
    b.add_argument("--users", default=None, help="multiuser: user counts, comma-separated (default 1,2,4,8)")
    b.add_argument("--service", default="embedded", choices=["embedded", "ray"],
                   help="multiuser: where the decode service runs")
    b.add_argument("--batch-size", type=int, default=8, help="multiuser: the batching service's batch size")
    b.add_argument("--max-wait-ms", type=float, default=2.0, help="multiuser: how long a batch waits to fill")
    b.add_argument("--json", default=None, help="default out/bench_<what>.json")
    b.add_argument("--plot", default=None, help="default out/bench_<what>.png")
    b.add_argument("--out", default=None, help="calibrate: table path (default models/<codec>/calibration.json)")
    b.add_argument("--snr-trace", default=None, help="control: CSV with column snr_db (default: Jakes, 12 dB)")
    b.add_argument("--V", type=float, default=2e4, help="control: drift-plus-penalty weight")
    b.add_argument("--v-sweep", default="", help="control: comma-separated V values for the sweep")
    b.add_argument("--fixed-levels", default="0",
                   help="control: power levels of the fixed policies to run ('' for none)")
    b.add_argument("--quality-metric", default=None, choices=list(QUALITY_METRICS),
                   help="control: what the quality constraint measures (default: the setup's "
                        "controller.quality_metric)")
    b.add_argument("--quality-target", type=float, default=None,
                   help="control: the average quality constraint in that metric's unit (default: the setup's)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="control, frames, soak: a setup change for every run (e.g. controller.calibration=FILE, "
                        "channel.cfo=0.2), repeatable")
    b.add_argument("--work-dir", default=None, help="control, soak: folder for the runs (default "
                                                    "out/bench_<what>)")
    for name, module in PASS_THROUGH.items():
        sub.add_parser(name, help=f"models/gsc_models/{module}.py; its options pass through "
                                  f"(scripts/gsc {name} --help lists them)", add_help=False)
    g = sub.add_parser("docs", help="regenerate the results tables (docs/results/, README headline) from "
                                    "the committed JSON in results/")
    g.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table differs from its JSON")
    q = sub.add_parser("grc", help="gnuradio-companion with the [GSC] blocks and the venv (flowgraphs/...)")
    q.add_argument("flowgraphs", nargs="*", help="flowgraphs to open (e.g. flowgraphs/gsc_loopback.grc)")
    add_tx_arguments(sub.add_parser("tx", help="the transmitter alone (one host of two, or over ZMQ)"))
    add_rx_arguments(sub.add_parser("rx", help="the receiver alone; ends at the transmitter's end-of-stream frame"))
    p.commands = sub.choices
    return p


def main(argv=None) -> int:
    from .core.models import CodecError
    from .core.config import ConfigError, RadioError
    from .core.images import ImageError
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    args, rest = p.parse_known_args(argv)
    if args.command == "test":
        return cmd_test(rest)
    if args.command in PASS_THROUGH:
        return cmd_models(PASS_THROUGH[args.command], rest)
    if rest:
        p.commands[args.command].error(f"unrecognized arguments: {' '.join(rest)}")
    args.command_line = " ".join(["scripts/gsc"] + [shlex.quote(a) for a in argv])
    try:
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "gui":
            from .apps.gui import main as gui_main
            return gui_main(["--flowgraph", args.flowgraph, "--seconds", str(args.seconds), "--out", args.out])
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "docs":
            return cmd_docs(args)
        if args.command == "grc":
            return cmd_grc(args)
        from .apps.run import run_rx, run_tx
        return run_tx(args) if args.command == "tx" else run_rx(args)
    except (ConfigError, CodecError, ImageError, FileNotFoundError, RadioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
