"""gsc command line (run through scripts/gsc, which sets up the environment first)."""
import argparse
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


def cmd_test(args) -> int:
    return subprocess.call([sys.executable, "-m", "pytest", str(REPO / "tests"), "-q", "-p", "no:cacheprovider"]
                           + args.pytest_args, cwd=REPO)


def cmd_bench(args) -> int:
    from .bench import bench_link, format_link_table
    if args.what != "link":
        print(f"error: unknown benchmark {args.what!r}; available: link", file=sys.stderr)
        return 2
    snrs = [float(s) for s in args.snr.split(",")]
    result = bench_link(args.codec, snrs, args.images, args.data, args.config, args.json, args.plot)
    print(format_link_table(result))
    t = result["throughput"]
    print(f"throughput: {t['samples_per_s'] / 1e3:.0f} kS/s, {t['images_per_s']:.1f} images/s, "
          f"RX latency p50 {t['latency_ms_p50']:.1f} ms, p99 {t['latency_ms_p99']:.1f} ms")
    return 0


def cmd_models(args, module) -> int:
    return subprocess.call([sys.executable, "-m", f"gsc_models.{module}"] + args.rest, cwd=REPO / "models")


def main(argv=None) -> int:
    from .core.codec import CodecError
    from .core.config import ConfigError
    from .core.images import ImageError
    p = argparse.ArgumentParser(prog="gsc", description="gr-gsc: generative semantic communication over GNU Radio")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="send the sample images over the two-process ZMQ loopback")
    d.add_argument("--config", default=str(REPO / "radio_config" / "zmq_loopback.yaml"))
    d.add_argument("--images", default=str(REPO / "tests" / "data" / "samples"))
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setup key")
    d.add_argument("--out", default=None)
    t = sub.add_parser("test", help="run the test suite")
    t.add_argument("pytest_args", nargs=argparse.REMAINDER)
    b = sub.add_parser("bench", help="benchmarks (writes JSON and a PNG plot)")
    b.add_argument("what", choices=["link"])
    b.add_argument("--codec", default="deepjscc")
    b.add_argument("--snr", default="0,5,10,15,20")
    b.add_argument("--images", type=int, default=200)
    b.add_argument("--data", default=None, help="folder holding cifar10/ (default ../shared/datasets)")
    b.add_argument("--config", default=str(REPO / "radio_config" / "zmq_loopback.yaml"))
    b.add_argument("--json", default="out/bench_link.json")
    b.add_argument("--plot", default="out/bench_link.png")
    for name, module in (("train", "train"), ("export", "export")):
        q = sub.add_parser(name, help=f"models/gsc_models/{module}.py (arguments passed through)")
        q.add_argument("rest", nargs=argparse.REMAINDER)
    for role in ("tx", "rx"):
        q = sub.add_parser(role, help=f"run the {role.upper()} flowgraph alone (see --help)")
        q.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    try:
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "test":
            return cmd_test(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command in ("train", "export"):
            return cmd_models(args, args.command)
        from .apps.run import main as run_main
        return run_main([args.command] + args.rest)
    except (ConfigError, CodecError, ImageError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
