"""Link report: every image offered is accounted for as decoded or lost, with a reason."""
import json
import math
from pathlib import Path

import numpy as np

from .images import ImageError, load_image
from .metrics import ms_ssim, psnr_db


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# Why an image was lost, in few words (the report's by_reason keys); each row's
# 'detail' says more.
SOURCE_REJECTED = "rejected at the source"
ENCODER_REFUSED = "refused by the encoder"
TX_STOPPED = "not transmitted: the transmitter stopped first"
RX_DOWN = "receiver down"
TX_DOWN = "transmitter down"
RX_TIMEOUT = "receiver timed out"
NO_FRAME = "channel: no frame found or header CRC failed"
PAYLOAD_CRC = "channel: payload CRC failed"
FRAGMENTS_MISSING = "channel: fragments missing"
UNDECODABLE = "received but not decodable"
# An image is in flight for about this long after it is handed to the encoder (encode,
# framing, the link's buffers, reassembly): one sent this close before the receiver
# stopped is charged to the receiver's stop, not to the channel.
IN_FLIGHT_S = 2.0


def _key(record) -> tuple:
    return int(record.get("session", 0)), int(record["image_id"])


def _rx_cover(t_sent, rx_runs):
    """The receiver run that was up from before t_sent until the image could have arrived;
    else (None, why): RX_DOWN, or RX_TIMEOUT when the run that was up stopped on its own clock."""
    if not rx_runs:
        return None, RX_DOWN
    for run in rx_runs:
        t_stop = run.get("t_end", run.get("t_alive", float("inf")))
        # A receiver that ended at the end-of-stream frame heard the stream out: it was up for
        # everything sent before that frame.
        # One whose radio source died noticed it up to a second late (apps/run.py SourceThread).
        margin = {"end_of_stream": 0.0, "source_failed": IN_FLIGHT_S + 1.0}.get(run.get("ended"), IN_FLIGHT_S)
        if run.get("t_start", 0.0) <= t_sent and t_sent + margin <= t_stop:
            return run, None
    for run in rx_runs:
        t_stop = run.get("t_end", run.get("t_alive", float("inf")))
        if run.get("t_start", 0.0) <= t_sent <= t_stop and run.get("ended") in ("max_seconds", "idle"):
            return None, RX_TIMEOUT
    return None, RX_DOWN


def account(out_dir) -> list[dict]:
    """Per image in the transmitter's manifest: status 'decoded' (with metrics) or 'lost'
    with a cause (one of the constants above) and a detail. Reads every run of either side
    in the folder (OUT/runs/), so restarts of the receiver or the transmitter are accounted."""
    from ..apps.runlog import read_runs
    out = Path(out_dir)
    manifest = _read_jsonl(out / "tx_manifest.jsonl")
    received = {}
    for record in _read_jsonl(out / "received.jsonl"):
        received.setdefault(_key(record), record)
    runs = read_runs(out)
    legacy_rx = any(r.get("legacy") for r in runs["rx"])
    failures = sum(int(r.get("header_failures") or 0) for r in runs["rx"])
    decode_failed, encode_failed = {}, {}
    for side, kind, into in (("rx", "decode_failed", decode_failed), ("tx", "encode_failed", encode_failed)):
        for run in runs[side]:
            for e in run.get("events", []):
                if isinstance(e, dict) and e.get("event") == kind:
                    into[_key(e)] = e
    tx_by_session = {int(session): r for r in runs["tx"]       # a multi-user transmitter: a session per user
                     for session in r.get("sessions") or [r.get("session", 0)]}
    rows = []
    for item in manifest:
        key = _key(item)
        row = {"image_id": key[1], "session": key[0], "user": int(item.get("user", 0)), "name": item["name"],
               "path": item["path"]}
        if item["status"] != "sent":
            row.update(status="lost", cause=SOURCE_REJECTED, reason=f"rejected at the source: {item['reason']}")
        elif key in encode_failed:
            row.update(status="lost", cause=ENCODER_REFUSED,
                       reason=f"refused by the encoder: {encode_failed[key]['reason']}")
        elif key in received:
            rx = received[key]
            row.update(status="decoded", file=rx.get("file"), snr_est_db=rx.get("snr_est_db"),
                       snr_eff_db=rx.get("snr_eff_db"), fragments_lost=rx.get("fragments_lost", 0),
                       fragment_count=rx.get("fragment_count"), decode_ms=rx.get("decode_ms"))
            row.update({k: rx[k] for k in ("refine_steps", "refine_steps_applied", "refine_ms", "refine_note")
                        if k in rx})
            if "psnr_db" not in rx:
                try:
                    original = load_image(item["path"])
                    decoded = load_image(out / rx["file"])
                    rx["psnr_db"], rx["ms_ssim"] = psnr_db(original, decoded), ms_ssim(original, decoded)
                except (ImageError, KeyError) as err:
                    row["metric_error"] = str(err)
            row.update(psnr_db=rx.get("psnr_db"), ms_ssim=rx.get("ms_ssim"))
            if row["fragments_lost"]:
                row["fragments_missing"] = rx.get("fragments_missing", [])
                row["note"] = (f"{row['fragments_lost']} of {row['fragment_count']} fragments lost "
                               f"(index {', '.join(map(str, row['fragments_missing']))}), decoded as erasures")
            if "t_sent" in item and "t_decoded" in rx:
                row["latency_ms"] = (rx["t_decoded"] - item["t_sent"]) * 1e3
            if "t_first_fragment" in rx and "t_decoded" in rx:
                row["rx_latency_ms"] = (rx["t_decoded"] - rx["t_first_fragment"]) * 1e3
        elif key in decode_failed:
            event = decode_failed[key]
            cause = (FRAGMENTS_MISSING if event.get("fragments_lost") else
                     PAYLOAD_CRC if "CRC" in event["reason"] else UNDECODABLE)
            row.update(status="lost", cause=cause, reason=f"received but not decodable: {event['reason']}")
        else:
            tx_run = tx_by_session.get(key[0])
            rx_run, down = (None, None) if legacy_rx or "t_sent" not in item else _rx_cover(item["t_sent"],
                                                                                            runs["rx"])
            if (tx_run is not None and "t_end" not in tx_run and not tx_run.get("legacy")
                    and item.get("t_sent", 0.0) + IN_FLIGHT_S > tx_run.get("t_alive", float("inf"))):
                row.update(status="lost", cause=TX_DOWN,
                           reason="the transmitter stopped (killed) with the image in flight, within "
                                  f"{IN_FLIGHT_S:g} s of its last sign of life")
            elif tx_run is not None and not tx_run.get("completed", True) and "t_end" in tx_run:
                row.update(status="lost", cause=TX_STOPPED,
                           reason="not transmitted: the TX stopped before framing it (timeout)")
            elif down == RX_DOWN:
                row.update(status="lost", cause=RX_DOWN,
                           reason="no receiver was running when it was sent, or it stopped with the image "
                                  f"in flight (within {IN_FLIGHT_S:g} s)")
            elif down == RX_TIMEOUT:
                row.update(status="lost", cause=RX_TIMEOUT,
                           reason="the receiver stopped on its --max-seconds or --idle clock with the image "
                                  "in flight")
            else:
                row.update(status="lost", cause=NO_FRAME,
                           reason="no fragment received: frame not detected or its header failed "
                                  f"the CRC ({failures} header CRC failures at the RX)")
        rows.append(row)
    return rows


def reconcile(out_dir) -> dict:
    """The report's JSON (scripts/gsc report): every image of the manifest decoded or lost."""
    rows = account(out_dir)
    by_reason = {}
    for r in rows:
        if r["status"] == "lost":
            by_reason[r["cause"]] = by_reason.get(r["cause"], 0) + 1
    listed = {(r["session"], r["image_id"]) for r in rows}
    manifest = {_key(item) for item in _read_jsonl(Path(out_dir) / "tx_manifest.jsonl")}
    return {"n_sent": len(manifest), "decoded": sum(r["status"] == "decoded" for r in rows),
            "lost": sum(r["status"] == "lost" for r in rows), "unaccounted": len(manifest - listed),
            "by_reason": by_reason,
            "images": [{"id": r["image_id"], "session": r["session"], "user": r["user"], "name": r["name"],
                        "status": r["status"], "reason": r.get("cause", ""),
                        **({"detail": r["reason"]} if r["status"] == "lost" else {})} for r in rows]}


def summarize(rows: list[dict], out_dir) -> dict:
    out = Path(out_dir)
    decoded = [r for r in rows if r["status"] == "decoded" and r.get("psnr_db") is not None]
    tx_stats, rx_stats = _read_json(out / "tx_stats.json"), _read_json(out / "rx_stats.json")

    def mean(key):
        values = [r[key] for r in decoded if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    summary = {
        "images_offered": len(rows), "decoded": sum(r["status"] == "decoded" for r in rows),
        "lost": sum(r["status"] == "lost" for r in rows),
        "lost_reasons": sorted({r["reason"] for r in rows if r["status"] == "lost"}),
        "lost_by_cause": {c: sum(r.get("cause") == c for r in rows)
                          for c in sorted({r["cause"] for r in rows if r["status"] == "lost"})},
        "psnr_db": mean("psnr_db"), "ms_ssim": mean("ms_ssim"), "snr_est_db": mean("snr_est_db"),
        "snr_eff_db": mean("snr_eff_db"),
        "fragments_lost": int(sum(r.get("fragments_lost") or 0 for r in rows)),
        "header_crc_failures": rx_stats.get("header_failures"),
        "tx_samples": tx_stats.get("samples"),
        **{k: v for stats in (tx_stats, rx_stats) for k, v in stats.items() if k.startswith("uhd_")},
    }
    if tx_stats and rx_stats:
        decoded_times = [r for r in _read_jsonl(out / "received.jsonl") if "t_decoded" in r]
        sent_times = [r["t_sent"] for r in _read_jsonl(out / "tx_manifest.jsonl") if "t_sent" in r]
        if decoded_times and sent_times:
            # From the first image handed to the encoder to the last image decoded:
            # process start-up and the source's start delay are not link time.
            t_end = max(r["t_decoded"] for r in decoded_times)
            t_begin = min(sent_times)
            span = max(t_end - t_begin, 1e-9)
            summary["link_seconds"] = span
            summary["samples_per_s"] = tx_stats.get("samples", 0) / span
            summary["images_per_s"] = len(decoded_times) / span
    for key in ("latency_ms", "rx_latency_ms"):
        values = [r[key] for r in decoded if r.get(key) is not None]
        if values:
            summary[f"{key}_p50"] = float(np.percentile(values, 50))
            summary[f"{key}_p99"] = float(np.percentile(values, 99))
    return summary


def write_report(out_dir, title="gr-gsc link", sheet_max=12) -> dict:
    out = Path(out_dir)
    rows = account(out)
    with (out / "metrics.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    summary = summarize(rows, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    contact_sheet(rows, out, out / "sheet.png", title, sheet_max)
    return summary


def contact_sheet(rows, out_dir, path, title, max_images=12):
    """Originals (top) and received images (bottom), with PSNR or the loss reason."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = rows[:max_images]
    if not shown:
        return
    fig, axes = plt.subplots(2, len(shown), figsize=(1.6 * len(shown) + 0.5, 3.8), squeeze=False)
    for col, row in enumerate(shown):
        try:
            axes[0, col].imshow(load_image(row["path"]))
        except ImageError:
            axes[0, col].text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
        axes[0, col].set_title(row["name"][:14], fontsize=7)
        if row["status"] == "decoded":
            axes[1, col].imshow(load_image(Path(out_dir) / row["file"]))
            label = f"{row['psnr_db']:.1f} dB" if row.get("psnr_db") is not None else "decoded"
        else:
            axes[1, col].text(0.5, 0.5, "lost", ha="center", va="center", color="red")
            label = "lost"
        axes[1, col].set_title(label, fontsize=7)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("sent", fontsize=8)
    axes[1, 0].set_ylabel("received", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_reconciliation(report: dict) -> str:
    """One line: what the manifest offered and where each image went."""
    causes = ", ".join(f"{n} {cause}" for cause, n in sorted(report["by_reason"].items(), key=lambda kv: -kv[1]))
    return (f"{report['n_sent']} images in the manifest: {report['decoded']} decoded, {report['lost']} lost"
            + (f" ({causes})" if causes else "") + f", {report['unaccounted']} unaccounted")


def format_table(rows: list[dict], summary: dict) -> str:
    lines = [f"{'id':>5} {'image':<18} {'status':<8} {'PSNR dB':>8} {'MS-SSIM':>8} {'SNR est':>8}  note"]
    for r in rows:
        if r["status"] == "decoded":
            fmt = lambda v, f: format(v, f) if isinstance(v, (int, float)) and not math.isnan(v) else "-"
            lines.append(f"{r['image_id']:>5} {r['name'][:18]:<18} {'decoded':<8} {fmt(r.get('psnr_db'), '8.2f')} "
                         f"{fmt(r.get('ms_ssim'), '8.4f')} {fmt(r.get('snr_est_db'), '8.1f')}  {r.get('note', '')}")
        else:
            lines.append(f"{r['image_id']:>5} {r['name'][:18]:<18} {'LOST':<8} {'-':>8} {'-':>8} {'-':>8}  {r['reason']}")
    psnr = summary.get("psnr_db")
    lines.append(f"{summary['decoded']} decoded, {summary['lost']} lost of {summary['images_offered']}; "
                 f"mean PSNR {psnr:.2f} dB" if psnr is not None else
                 f"{summary['decoded']} decoded, {summary['lost']} lost of {summary['images_offered']}")
    return "\n".join(lines)
