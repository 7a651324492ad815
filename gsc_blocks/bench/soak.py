"""`scripts/gsc bench soak`: a long run of the two-process ZMQ loopback, watched from outside.

Every second it samples each process's resident memory (VmRSS) and open file descriptors
from /proc, and the images decoded so far (lines of received.jsonl). At the end every image
is accounted for (core/report.reconcile), the rate is bench link's (first image sent to last
decoded; `wall_s` also counts the processes' start-up), and each process's memory growth is given from
the sample at the 1,000th decoded image (start-up and warm-up done) to about the last.
"""
import os
import time
from pathlib import Path

from ..apps.run import run_link
from ..core.registry import make_codec
from ..core.report import account, reconcile, summarize
from .common import DEFAULT_DATA, cifar_test_images, load_setup, models_of, provenance, write_json

GROWTH_FROM = 1000          # images decoded before the reference sample of memory growth


def proc_sample(pid: int) -> tuple[float | None, int | None]:
    """(resident memory in MB, open file descriptors) of a live process; (None, None) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return rss_kb / 1024.0, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None, None


class LineCounter:
    """Lines of a file that grows, counted from where the last call stopped."""

    def __init__(self, path):
        self.path, self.offset, self.count = Path(path), 0, 0

    def __call__(self) -> int:
        if self.path.is_file():
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
            self.count += chunk.count(b"\n")
            self.offset += len(chunk)
        return self.count


def rss_growth(samples, side: str, start_images: int = GROWTH_FROM) -> float | None:
    """RSS growth as a fraction, from the first sample with at least start_images decoded to the
    last sample before the last image was counted (at the end the receiver stops and reconciles the
    whole run's records, which is not the run's memory; the images counted lag the decoder by the
    writes, so the sample that sees the last image may already be in that); None when the run never
    got that far."""
    alive = [s for s in samples if s["rss_mb"][side] is not None]      # None: gone
    start = next((s for s in alive if s["images"] >= start_images), None)
    if start is None:
        return None
    before = [s for s in alive if s["images"] < alive[-1]["images"]]
    end = before[-1] if before else alive[-1]
    if end["images"] <= start["images"]:
        return None
    return end["rss_mb"][side] / start["rss_mb"][side] - 1.0


def bench_soak(n_images=10000, snr_db=10.0, data_dir=None, config="radio_config/zmq_loopback.yaml",
               json_path="out/bench_soak.json", plot_path="out/bench_soak.png", work_dir="out/bench_soak",
               overrides=(), command=None, growth_from=GROWTH_FROM) -> dict:
    files = cifar_test_images(data_dir or DEFAULT_DATA, n_images)
    if len(files) < n_images:      # fewer test images than asked: go round them again
        files = (files * (n_images // len(files) + 1))[:n_images]
    setup_overrides = [f"channel.snr_db={snr_db}", f"codec.encoder_snr_db={snr_db}", *overrides]
    setup = load_setup(config, setup_overrides)
    codec = make_codec(setup["codec"]["name"], setup["codec"]["models_dir"] or None)
    out = Path(work_dir)
    decoded = LineCounter(out / "received.jsonl")
    samples, t0 = [], time.time()

    def monitor(tx, rx):
        (tx_rss, tx_fds), (rx_rss, rx_fds) = proc_sample(tx.pid), proc_sample(rx.pid)
        samples.append({"t_s": round(time.time() - t0, 2), "images": decoded(),
                        "rss_mb": {"tx": tx_rss, "rx": rx_rss}, "fds": {"tx": tx_fds, "rx": rx_fds}})

    run_link(config, files, out, setup_overrides, timeout_s=max(600, n_images), monitor=monitor)
    report = reconcile(out)
    growth = {side: rss_growth(samples, side, growth_from) for side in ("tx", "rx")}
    result = {
        "n_images": n_images, "decoded": report["decoded"], "lost": report["lost"],
        "unaccounted": report["unaccounted"], "by_reason": report["by_reason"], "rss_growth": growth,
        "growth_from_images": growth_from, "snr_db": snr_db, "samples": samples,
        # bench link's rate: first image handed to the encoder to last image decoded; the wall
        # time from the processes' start (model loading, flowgraph start-up) is kept beside it.
        "images_per_s": summarize(account(out), out).get("images_per_s"),
        "wall_s": samples[-1]["t_s"] if samples else None,
    }
    prov = provenance(command, setup, models_of(codec))
    result.update(commit=prov["commit"], command=prov["command"], provenance=prov)
    write_json(json_path, result)
    plot_soak(result, plot_path)
    return result


def plot_soak(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    samples = result["samples"]
    t = [s["t_s"] for s in samples]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for side in ("tx", "rx"):
        axes[0].plot([s["images"] for s in samples], _nan([s["rss_mb"][side] for s in samples]), label=side)
        axes[1].plot(t, _nan([s["fds"][side] for s in samples]), label=side)
    axes[0].axvline(result["growth_from_images"], color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="images decoded", ylabel="RSS (MB)", title="resident memory")
    axes[1].set(xlabel="time (s)", ylabel="open file descriptors", title="file descriptors")
    rate = [(b["images"] - a["images"]) / max(b["t_s"] - a["t_s"], 1e-9) for a, b in zip(samples, samples[1:])]
    axes[2].plot(t[1:], rate)
    axes[2].set(xlabel="time (s)", ylabel="images/s", title="images decoded per second")
    for ax in axes[:2]:
        ax.legend()
    growth = result["rss_growth"]
    fig.suptitle(f"bench soak: {result['n_images']} images at {result['snr_db']:g} dB: {result['decoded']} decoded, "
                 f"{result['lost']} lost, {result['unaccounted']} unaccounted; RSS growth from image "
                 f"{result['growth_from_images']}: tx {_pct(growth['tx'])}, rx {_pct(growth['rx'])}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _nan(values):
    return [float("nan") if v is None else v for v in values]


def _pct(value):
    return "n/a" if value is None else f"{100 * value:+.1f} %"
