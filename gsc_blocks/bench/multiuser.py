"""`scripts/gsc bench multiuser`: MU-GSC, N users through one receiver and one decode service.

For each user count it runs, in one invocation:
- source "radio": the two-process ZMQ loopback of radio_config/zmq_multiuser.yaml (N
  transmitters on sub-bands, the channelizer, N receivers, one decode service), once with
  the batching service and once with the synchronous one (one image at a time, in arrival
  order, the same sessions). The transmitters start once the receiver listens (its decode
  service up). Images/s = images decoded / (last decode - first image sent).
  On this 2-core host the radio processing of both processes bounds this figure.
- source "replay": the fragments the receivers handed over in the batched radio run
  (recorded by the decoder), fed through reassembly to a fresh service as fast as it takes
  them: the decode service alone. Latency there is from an image's submission to its
  decode, queueing included (everything arrives at once, so it grows with the backlog).
Then, at the largest user count, images/s of the replay against batch size, with one batch
decoded at a time (batching alone) and two (batching and overlap), and what loading a model
session costs against decoding with a cached one.
Every image sent is accounted for per user (decoded or lost with a reason).
"""
import time
from pathlib import Path

import numpy as np

from ..apps.multiuser import latency_summary, per_user
from ..apps.run import run_link
from ..core.decode_service import Decoders, Job, load_fragments
from ..core.service_backends import make_service
from ..core.frame import CONTROL_CODEC_ID
from ..core.images import load_image
from ..core.metrics import psnr_db
from ..core.reassembly import Reassembler
from ..core.registry import make_codec
from .common import DEFAULT_DATA, cifar_test_images, load_setup, models_of, provenance, write_json

SWEEP_BATCHES = (1, 2, 4, 8, 16, 32)
REPLAY_IMAGES = 2000        # a replay goes over its recording until it has decoded about this many


def _passes(originals, images=REPLAY_IMAGES) -> int:
    return max(1, -(-images // max(1, len(originals))))


def _radio_run(config, files, out, n_users, mode, args, record=None) -> dict:
    overrides = [f"multiuser.users={n_users}", "multiuser.snr_db=[]", f"channel.snr_db={args['snr_db']}",
                 f"codec.encoder_snr_db={args['snr_db']}", f"codec.refine_steps={args['refine_steps']}",
                 f"decode_service.mode={mode}", f"decode_service.backend={args['service']}",
                 f"decode_service.batch_size={args['batch_size']}",
                 f"decode_service.max_wait_ms={args['max_wait_ms']}", *args["overrides"]]
    if record:
        overrides.append(f"decode_service.record={record}")
    run_link(config, files, out, overrides, timeout_s=args["timeout_s"], rx_ready_first=True)
    stats = per_user(out)
    rows = stats["report"]["images"]
    t_sent, t_done = _times(out)
    decoded = sum(u["decoded"] for u in stats["users"].values())
    span = (max(t_done) - min(t_sent)) if t_done and t_sent else float("nan")
    return {"users": n_users, "mode": mode, "source": "radio", "images_per_s": decoded / span if span else 0.0,
            "per_user": [_user_row(u, stats["users"][u]) for u in sorted(stats["users"])],
            "unaccounted": stats["unaccounted"], "images": len(rows),
            "lost_by_reason": stats["report"]["by_reason"]}


def _times(out) -> tuple[list, list]:
    import json
    sent = [json.loads(line).get("t_sent") for line in (Path(out) / "tx_manifest.jsonl").read_text().splitlines()]
    received = Path(out) / "received.jsonl"
    done = [json.loads(line).get("t_decoded") for line in received.read_text().splitlines()] \
        if received.is_file() else []
    return [t for t in sent if t], [t for t in done if t]


def _user_row(user, entry) -> dict:
    return {"user": int(user), "decoded": entry["decoded"], "lost": entry["lost"],
            **latency_summary(entry["latency_ms"]),
            "psnr_db": float(np.mean(entry["psnr_db"])) if entry["psnr_db"] else float("nan")}


def originals_of(out) -> dict:
    """{(session, image_id): original image path} from a run's manifest."""
    import json
    table = {}
    for line in (Path(out) / "tx_manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("status") == "sent":
            table[(int(record["session"]), int(record["image_id"]))] = record["path"]
    return table


def replay(fragments, originals, backend="embedded", mode="batched", batch_size=8, max_wait_ms=2.0,
           refine_steps=-1, service=None, passes=1) -> dict:
    """Feed recorded fragments (load_fragments) through reassembly to a decode service as fast as it
    takes them, `passes` times over (a longer measurement); per image of the first pass: user, PSNR
    against its original, latency (submission to decode), error."""
    own = service is None
    service = service or make_service(backend, None, 1 / 6, mode, batch_size, max_wait_ms)
    images = {}
    try:
        warm = Reassembler(1e9, service.image_symbols)     # sessions loaded before the clock starts
        for _, meta, symbols in fragments:
            if int(meta.get("codec_id", -1)) == CONTROL_CODEC_ID:
                continue
            assembled = warm.add(dict(meta), symbols, 0.0)
            if assembled:
                image = assembled[0]
                steps = refine_steps if refine_steps >= 0 else int(image.meta.get("refine_steps", 0))
                service.submit(Job(image.meta, image.symbols, image.snr_eff_db, steps), lambda r: None)
                break
        service.wait_idle(120)
        def done(result):
            meta = result.meta
            key = (int(meta.get("session", 0)), int(meta.get("image_id", 0)))
            entry = {"user": int(meta.get("user", 0)), "latency_ms": (time.time() - meta["t_service_submit"]) * 1e3,
                     "batch": int(meta.get("service_batch", 0)), "error": result.error,
                     "pixels": result.pixels}       # PSNR after the clock stops
            if meta["replay_pass"] == 0:
                images[key] = entry
            else:
                later.append(entry)

        def submit(image, replay_pass):
            meta = image.meta
            meta["replay_pass"] = replay_pass
            steps = refine_steps if refine_steps >= 0 else int(meta.get("refine_steps", 0))
            service.submit(Job(meta, image.symbols, image.snr_eff_db, steps), done)

        later = []
        start = time.perf_counter()
        for replay_pass in range(passes):
            reassembler = Reassembler(1e9, service.image_symbols)
            for _, meta, symbols in fragments:
                if int(meta.get("codec_id", -1)) == CONTROL_CODEC_ID:
                    continue
                for image in reassembler.add(dict(meta), symbols, 0.0):
                    submit(image, replay_pass)
            for image in reassembler.drain():
                submit(image, replay_pass)
        service.wait_idle(600)
        elapsed = time.perf_counter() - start
    finally:
        if own:
            service.close()
    for key, entry in images.items():
        pixels = entry.pop("pixels")
        if entry["error"] is None and key in originals:
            entry["psnr_db"] = psnr_db(load_image(originals[key]), pixels)
    decoded = sum(1 for e in images.values() if e["error"] is None) + sum(1 for e in later if e["error"] is None)
    return {"images": images, "elapsed_s": elapsed, "images_per_s": decoded / elapsed if elapsed else 0.0,
            "passes": passes}


def _replay_run(n_users, mode, result, expected) -> dict:
    users = {}
    for key, entry in result["images"].items():
        row = users.setdefault(entry["user"], {"decoded": 0, "lost": 0, "latency_ms": [], "psnr_db": []})
        if entry["error"] is None:
            row["decoded"] += 1
            row["latency_ms"].append(entry["latency_ms"])
            if "psnr_db" in entry:
                row["psnr_db"].append(entry["psnr_db"])
        else:
            row["lost"] += 1
    return {"users": n_users, "mode": mode, "source": "replay", "images_per_s": result["images_per_s"],
            "per_user": [_user_row(u, users[u]) for u in sorted(users)],
            "unaccounted": len(expected - set(result["images"])), "images": len(result["images"]),
            "passes": result["passes"],
            "mean_batch": float(np.mean([e["batch"] for e in result["images"].values()])) if result["images"] else 0}


def session_cost(codec_name: str, repeats: int = 3) -> dict:
    """What caching the model sessions buys: loading (hash + ONNX session) against one decode."""
    loads = []
    for _ in range(repeats):
        start = time.perf_counter()
        codec = make_codec(codec_name)
        loads.append((time.perf_counter() - start) * 1e3)
    shape = codec.latent_shape(32, 32)
    symbols = np.zeros(codec.symbol_count(32, 32), np.complex64) + (1 + 1j) / np.sqrt(2)
    codec.decode(symbols, 32, 32, 10.0)
    start = time.perf_counter()
    for _ in range(20):
        codec.decode(symbols, 32, 32, 10.0)
    decode_ms = (time.perf_counter() - start) * 1e3 / 20
    return {"codec": codec_name, "session_load_ms": float(np.median(loads)), "decode_ms": decode_ms,
            "latent": [shape.channels, shape.h, shape.w]}


def bench_multiuser(users=(1, 2, 4, 8), service="embedded", n_images=40, snr_db=10.0, batch_size=8,
                    max_wait_ms=2.0, refine_steps=0, data_dir=None, config="radio_config/zmq_multiuser.yaml",
                    json_path="out/bench_multiuser.json", plot_path="out/bench_multiuser.png",
                    work_dir="out/bench_multiuser", overrides=(), command=None, sweep=True, timeout_s=900,
                    replay_images=REPLAY_IMAGES) -> dict:
    files = cifar_test_images(data_dir or DEFAULT_DATA, n_images)
    args = {"snr_db": snr_db, "refine_steps": refine_steps, "service": service, "batch_size": batch_size,
            "max_wait_ms": max_wait_ms, "overrides": list(overrides), "timeout_s": timeout_s}
    work = Path(work_dir)
    runs, psnr_match, recordings = [], {}, {}
    for n in users:
        record = (work / f"u{n}_fragments.npz").resolve()
        for mode in ("batched", "sync"):
            out = work / f"radio_u{n}_{mode}"
            runs.append(_radio_run(config, files, out, n, mode, args, record if mode == "batched" else None))
        fragments = load_fragments(record)
        originals = originals_of(work / f"radio_u{n}_batched")
        recordings[n] = (fragments, originals)
        radio_psnr = _psnr_by_image(work / f"radio_u{n}_batched")
        for mode in ("batched", "sync"):
            result = replay(fragments, originals, service, mode, batch_size, max_wait_ms, refine_steps,
                            passes=_passes(originals, replay_images))
            runs.append(_replay_run(n, mode, result, set(originals)))
            diffs = [abs(e["psnr_db"] - radio_psnr[k]) for k, e in result["images"].items()
                     if "psnr_db" in e and k in radio_psnr]
            psnr_match[f"{n}_{mode}"] = max(diffs) if diffs else None
    sweep_rows = []
    if sweep and service == "embedded":       # the embedded service's threads; Ray Serve's are its own
        fragments, originals = recordings[max(users)]
        for workers in (1, 2):         # one batch at a time: batching alone; two: with overlap
            for size in SWEEP_BATCHES:
                service_ = make_service("embedded", None, 1 / 6, "batched", size, max_wait_ms, workers)
                result = replay(fragments, originals, refine_steps=refine_steps, service=service_,
                                passes=_passes(originals, replay_images))
                service_.close()
                sweep_rows.append({"batch_size": size, "workers": workers, "images_per_s": result["images_per_s"],
                                   "mean_batch": float(np.mean([e["batch"] for e in result["images"].values()]))})
    setup = load_setup(config, [f"channel.snr_db={snr_db}", *overrides])
    codec = make_codec(setup["codec"]["name"], setup["codec"]["models_dir"] or None)
    decoders = Decoders()
    if refine_steps:
        decoders.refiner_for(codec.name, [])
    models = models_of(codec, decoders)
    prov = provenance(command, setup, models)
    result = {"service": service, "runs": runs, "commit": prov["commit"], "command": prov["command"],
              # what the service runs: each codec's decoder, the refiner's denoiser
              "models": {name: roles.get("decoder", roles.get("denoiser")) for name, roles in models.items()},
              "images_per_user": n_images, "snr_db": snr_db, "refine_steps": refine_steps,
              "batch_size": batch_size, "max_wait_ms": max_wait_ms,
              "replay_psnr_vs_radio_max_abs_db": psnr_match, "batch_sweep": sweep_rows,
              "session_cache": session_cost(codec.name), "provenance": prov}
    result["ratios"] = ratios(result)
    write_json(json_path, result)
    plot_multiuser(result, plot_path)
    return result


def _psnr_by_image(out) -> dict:
    import json
    received = Path(out) / "received.jsonl"
    table = {}
    for line in received.read_text().splitlines() if received.is_file() else []:
        record = json.loads(line)
        if record.get("psnr_db") is not None:
            table[(int(record["session"]), int(record["image_id"]))] = float(record["psnr_db"])
    return table


def ratios(result) -> dict:
    """Batched over sync images/s, per source and user count."""
    table = {}
    for run in result["runs"]:
        table.setdefault((run["source"], run["users"]), {})[run["mode"]] = run["images_per_s"]
    return {f"{source}_{users}": (modes["batched"] / modes["sync"]) if modes.get("sync") else None
            for (source, users), modes in table.items() if "batched" in modes}


def plot_multiuser(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for source, style in (("radio", "-"), ("replay", "--")):
        for mode, color in (("batched", "C0"), ("sync", "C1")):
            runs = sorted((r for r in result["runs"] if r["source"] == source and r["mode"] == mode),
                          key=lambda r: r["users"])
            if not runs:
                continue
            n = [r["users"] for r in runs]
            axes[0].plot(n, [r["images_per_s"] for r in runs], style, color=color, marker="o",
                         label=f"{source}, {mode}")
            axes[1].plot(n, [max(u["latency_ms_p99"] for u in r["per_user"]) for r in runs], style, color=color,
                         marker="o", label=f"{source}, {mode}")
    axes[0].set(xlabel="users", ylabel="images/s (all users)", title="aggregate decoded images/s")
    axes[1].set(xlabel="users", ylabel="ms", title="worst user's p99 latency", yscale="log")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    for workers in (1, 2):
        rows = [r for r in result["batch_sweep"] if r.get("workers", 2) == workers]
        if rows:
            axes[2].plot([r["batch_size"] for r in rows], [r["images_per_s"] for r in rows], marker="o",
                         label=f"{workers} batch{'es' if workers > 1 else ''} at a time")
    sync = [r for r in result["runs"] if r["source"] == "replay" and r["mode"] == "sync"
            and r["users"] == max(x["users"] for x in result["runs"])]
    if sync:
        axes[2].axhline(sync[0]["images_per_s"], color="C1", ls=":", label="sync service")
    if result["batch_sweep"]:
        axes[2].legend(fontsize=8)
        axes[2].set(xscale="log", xlabel="batch size", ylabel="images/s",
                    title=f"replay at {max(r['users'] for r in result['runs'])} users: images/s vs batch size")
    fig.suptitle(f"bench multiuser ({result['service']} service, {result['images_per_user']} CIFAR images per user "
                 f"at {result['snr_db']:g} dB, refine steps {result['refine_steps']})", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
