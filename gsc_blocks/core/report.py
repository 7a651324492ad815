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


def account(out_dir) -> list[dict]:
    """Per offered image: status 'decoded' (with metrics) or 'lost' (with the reason)."""
    out = Path(out_dir)
    manifest = _read_jsonl(out / "tx_manifest.jsonl")
    received = {}
    for record in _read_jsonl(out / "received.jsonl"):
        received.setdefault(int(record["image_id"]), record)
    rx_stats = _read_json(out / "rx_stats.json")
    tx_stats = _read_json(out / "tx_stats.json")
    failures = rx_stats.get("header_failures", 0)
    decode_failed = {int(e["image_id"]): e["reason"] for e in rx_stats.get("events", [])
                     if isinstance(e, dict) and e.get("event") == "decode_failed"}
    encode_failed = {int(e["image_id"]): e["reason"] for e in tx_stats.get("events", [])
                     if isinstance(e, dict) and e.get("event") == "encode_failed"}
    rows = []
    for item in manifest:
        image_id = int(item["image_id"])
        row = {"image_id": image_id, "name": item["name"], "path": item["path"]}
        if item["status"] != "sent":
            row.update(status="lost", reason=f"rejected at the source: {item['reason']}")
        elif image_id in encode_failed:
            row.update(status="lost", reason=f"refused by the encoder: {encode_failed[image_id]}")
        elif image_id in received:
            rx = received[image_id]
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
        elif image_id in decode_failed:
            row.update(status="lost", reason=f"received but not decodable: {decode_failed[image_id]}")
        elif tx_stats and not tx_stats.get("completed", True):
            row.update(status="lost", reason="not transmitted: the TX stopped before framing it (timeout)")
        else:
            row.update(status="lost", reason="no fragment received: frame not detected or its header failed "
                                             f"the CRC ({failures} header CRC failures at the RX)")
        rows.append(row)
    return rows


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
        "psnr_db": mean("psnr_db"), "ms_ssim": mean("ms_ssim"), "snr_est_db": mean("snr_est_db"),
        "snr_eff_db": mean("snr_eff_db"),
        "fragments_lost": int(sum(r.get("fragments_lost") or 0 for r in rows)),
        "header_crc_failures": rx_stats.get("header_failures"),
        "tx_samples": tx_stats.get("samples"),
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
