"""`scripts/gsc docs`: the results tables in docs/results/ and the README's headline,
generated from the committed JSON (results/<bench>/*.json, and the controller's
calibration tables models/<codec>/calibration.json), so a table never disagrees
with its data.

generate() returns every generated file's text; write_docs() writes them, or with
check=True lists the ones that differ from what is committed.
"""
import json
from pathlib import Path

from .common import REPO
from .link import format_link_table

HEADLINE = Path("results") / "link" / "headline.json"
README_BEGIN = "<!-- results:headline begin -->"
README_END = "<!-- results:headline end -->"
PAGES = {
    "link": ("bench link", "codecs through the ideal AWGN channel and the two-process GNU Radio ZMQ link"),
    "frames": ("bench frames", "frames found and decoded against SNR, SNR estimates, the loss fit and the "
                               "receiver's rate"),
    "control": ("bench control", "the closed loop over the link under an SNR trace, per policy"),
    "calibrate": ("bench calibrate", "the controller's calibration tables, at three of their SNRs"),
    "soak": ("bench soak", "long runs of the two-process ZMQ loopback: every image accounted for, and each "
                           "process's memory and file descriptors over the run"),
    "multiuser": ("bench multiuser", "MU-GSC: N users on sub-bands of one stream, one receiver and one decode "
                                     "service, batched against one image at a time"),
    "codec": ("bench codec", "CamVid codecs, bits only: bits per pixel against the segmenters' mIoU, PSNR, "
                             "MS-SSIM and the segmenter-feature Frechet distance"),
}
SELECTED = ("SignSymbol", "Pole", "Pedestrian", "Bicyclist")     # C-SPIC's default classes


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _provenance_lines(result: dict) -> list[str]:
    prov = result.get("provenance") or {}
    lines = [f"- command: `{prov.get('command', 'not recorded')}`",
             f"- commit `{prov.get('commit', 'not recorded')}`, {prov.get('date', 'date not recorded')}"]
    models = prov.get("models") or {}
    if models:
        lines.append("- models (SHA-256, first 12 hex digits): " + "; ".join(
            f"{name} " + ", ".join(f"{role} {digest[:12]}" for role, digest in files.items())
            for name, files in models.items()))
    return lines


def _number(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def link_section(name: str, result: dict) -> list[str]:
    t = result.get("throughput") or {}
    original = result.get("accuracy_original")
    lines = [f"## {name}", "", f"{result['dataset']}, fading {result['fading']}"
             + (f"; mIoU on the originals {original['miou']:.3f} (second segmenter {original['miou_second']:.3f})"
                if isinstance(original, dict) else
                f"; classifier accuracy on the originals {original:.3f}" if original is not None else "") + ".", ""]
    lines += _provenance_lines(result) + [""]
    lines += [format_link_table(result), ""]
    if t:
        per = ", ".join(f"{tag} {rate:.1f}" for tag, rate in (t.get("per_codec") or {}).items())
        lines += [f"Link throughput: {t['samples_per_s'] / 1e3:.0f} kS/s, {t['images_per_s']:.1f} images/s"
                  + (f" ({per})" if per else "") + "; "
                  f"receiver latency p50 {_number(t.get('latency_ms_p50'), 1)} ms, "
                  f"p99 {_number(t.get('latency_ms_p99'), 1)} ms (wall time on the host that ran it).", ""]
    return lines


def frames_section(name: str, result: dict) -> list[str]:
    setup = (result.get("provenance") or {}).get("setup") or {}
    lines = [f"## {name}", "", f"Setup {setup.get('file', result['setup'])} {' '.join(result.get('overrides', []))}".rstrip()
             + f", {result['n_symbols']} payload symbols per frame, channel {json.dumps(result['channel'])}.", ""]
    lines += _provenance_lines(result) + [""]
    lines += ["| SNR (dB) | frames | decoded | header CRC failures | SNR est (dB) | effective SNR (dB) | "
              "payload SNR (dB) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in result["points"]:
        lines.append(f"| {p['snr_db']:g} | {p['frames']} | {p['decoded']} | {p['headers_failed']} | "
                     f"{_number(p['snr_est_db'])} | {_number(p['snr_eff_db'])} | {_number(p['payload_snr_db'])} |")
    fit, ctrl, rate = result["fit"], result["controller"], result.get("receive_rate") or {}
    lines += ["", f"Logistic fit: half the frames lost at {fit['loss_snr_db']} dB, {fit['loss_width_db']} dB per "
                  f"e-fold (the setup's controller plans with {ctrl['loss_snr_db']} dB, {ctrl['loss_width_db']} dB)."]
    if rate:
        lines.append(f"Receiver alone ({rate.get('correlators')} correlators): {rate.get('frames_msps')} MS/s of "
                     f"back-to-back frames, {rate.get('noise_msps')} MS/s of noise (wall time on the host that "
                     "ran it)." + (f" One frame at a time through header_payload_demux (batch_frames=False): "
                                   f"{rate['demux_frames_msps']} MS/s of the same frames." if
                                   "demux_frames_msps" in rate else ""))
    stock = result.get("stock_ofdm_rx_rate")
    if stock:
        lines.append(f"Stock gr-digital ofdm_rx in the same run: {stock['frames_msps']} MS/s of its own back-to-back "
                     f"QPSK frames ({stock['frames_decoded']} of {stock['frames']} decoded): this receiver runs at "
                     f"{result['receive_rate_vs_stock']:.2f}x its rate"
                     + (f" (one frame at a time: {result['demux_rate_vs_stock']:.2f}x)." if "demux_rate_vs_stock"
                        in result else "."))
    return lines + [""]


def control_section(name: str, result: dict) -> list[str]:
    targets = result["targets"]
    loss = "loss_rate" in targets
    lines = [f"## {name}", "", f"Codec {result['codec']}, V={result['V']:g}, targets: {targets['quality_metric']} "
             f">= {targets['quality']:g}, delay <= {targets['delay_ms']:g} ms"
             + (f", loss rate <= {targets['loss_rate']:g}" if loss else "") + f" (met: within 2%); trace "
             f"{Path(result['trace']).name}. "
             + ("Delay is over the images delivered; quality over all, a lost image at the lost quality; "
                "'timeouts' are lost images the receiver delivered after the slot timeout." if loss else
                "Measured before the loss-rate target: each lost image counts its slot timeout as delay."), ""]
    lines += _provenance_lines(result) + [""]
    lines += ["| policy | energy per image | delay (ms) | quality | targets met | lost | refined |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    rows = [(k, v) for k, v in result["policies"].items() if k != "fixed_max"]
    rows += [(f"fixed, power level {k.split('_')[1]}", v) for k, v in result["fixed"].items()]
    rows += [(f"lyapunov V={k}", v) for k, v in result.get("v_sweep", {}).items()]
    for label, s in rows:
        lines.append(f"| {label} | {s['energy_per_image']:.3g} | {s['avg_delay_ms']:.2f} | {s['avg_quality']:.2f} | "
                     f"{'yes' if s['constraints_met'] else 'no'} | {s['lost']} of {s['n_images']}"
                     f"{' (' + str(s['lost_timeouts']) + ' timeouts)' if s.get('lost_timeouts') else ''} | "
                     f"{s.get('refined', 0)} |")
    saving = result.get("lyapunov_energy_saving_vs_cheapest_fixed")
    if saving is not None:
        more_less = "less" if saving >= 0 else "more"
        lines += ["", f"Lyapunov spends {abs(saving) * 100:.1f}% {more_less} energy than the cheapest fixed policy "
                      f"that met the targets ({result['cheapest_fixed_meeting_targets']['policy']})."]
    bound = (result.get("model") or {}).get("bound_saving_vs_cheapest_fixed")
    if bound is not None:
        lines.append(f"The controller's cost model bounds that saving at {bound * 100:.1f}% on this trace "
                     "(clairvoyant).")
    return lines + [""]


def calibrate_section(name: str, table: dict, snrs=(0.0, 10.0, 20.0)) -> list[str]:
    """One codec's table: PSNR and the semantic score (CIFAR-10 accuracy, CamVid mIoU) at a few SNRs;
    a digital codec's rates are MCSs, with the levels its images went at."""
    key, label = ("miou", "mIoU") if "miou" in table["lost"] else ("accuracy", "accuracy")
    lines = [f"## {name}", "", f"{table['dataset']}, {table['channel']}"
             f"{', CBR ' + table['cbr'] if table.get('cbr') else ''}; refiner model: {table.get('refiner') or 'none'}; "
             f"a lost image is charged PSNR {table['lost']['psnr_db']} dB, {label} {table['lost'][key]}.", ""]
    if table.get("provenance"):
        lines += _provenance_lines(table) + [""]
    columns = [s for s in snrs if s in table["snr_db"]]
    sent = any("sent_as" in e for e in table["rates"].values())
    head = " | ".join(f"PSNR {s:g} dB | {label} {s:g} dB" for s in columns)
    lines += [f"| rate | symbols | {'sent as | ' if sent else ''}refiner steps | {head} | decode (ms) |",
              "| --- | --- | --- |" + " --- |" * (2 * len(columns) + 1 + sent)]
    for rate, entry in table["rates"].items():
        for steps, point in entry["steps"].items():
            cells = " | ".join(f"{point['psnr_db'][table['snr_db'].index(s)]:.2f} | "
                               f"{point[key][table['snr_db'].index(s)]:.3f}" for s in columns)
            decode = "n/a" if point["decode_ms"] is None else f"{point['decode_ms']:.1f}"
            rate_cell = f"{rate} ({entry['label']})" if sent and "label" in entry else rate
            sent_cell = f"{entry.get('sent_as', '').replace(',', ', ')} | " if sent else ""
            lines.append(f"| {rate_cell} | {entry['symbols']} | {sent_cell}{steps} | {cells} | {decode} |")
    return lines + [""]


def _selected_mean(class_iou: dict) -> float:
    values = [class_iou[c] for c in SELECTED if class_iou.get(c) is not None]
    return sum(values) / len(values) if values else float("nan")


def codec_section(name: str, result: dict) -> list[str]:
    o = result["original"]
    h, w = result["resolution"]
    lines = [f"## {name}", "",
             f"CamVid test, {result['n_images']} frames at {w}x{h}. Originals: mIoU {o['miou']:.4f} "
             f"(second segmenter {o['miou_second']:.4f}), mean IoU over {', '.join(SELECTED)} "
             f"{_selected_mean(o['class_iou']):.4f}.", "", *_provenance_lines(result), "",
             "| codec | rate | steps | bpp | extra bpp | mIoU | mIoU (2nd) | selected classes IoU | PSNR (dB) | "
             "MS-SSIM | FSD | encode ms | decode ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for entry in result["codecs"]:
        for p in entry["points"]:
            rate = p.get("level") or (f"{p['bpp_target']} bpp target" if "bpp_target" in p else
                                      f"setting {p.get('setting', p['rate_index'])}")
            lines.append(f"| {entry['codec']} | {rate} | {p.get('steps', '-')} | {p['bpp']:.4f} | "
                         f"{_number(p.get('extra_bpp'), 4)} | {p['miou']:.4f} | {p['miou_second']:.4f} | "
                         f"{_selected_mean(p['class_iou']):.4f} | {p['psnr_db']:.2f} | {p['ms_ssim']:.4f} | "
                         f"{p['fsd']:.3f} | {p['encode_ms']:.1f} | {p['decode_ms']:.1f} |")
    lines += ["", "Selected classes: " + ", ".join(SELECTED) + " (C-SPIC's default); FSD: this project's "
              "segmenter-feature Frechet distance (camvid_segmenter's bottleneck), not FID. encode ms: "
              "per frame; a SPIC codec's first level includes its segmentation, later levels reuse the map. "
              "Classical codecs with a bpp target: the best quality that fits it per frame (quality 0 where "
              "none fits).", ""]
    return lines


def soak_section(name: str, result: dict) -> list[str]:
    growth = result["rss_growth"]
    pct = {k: "-" if v is None else f"{100 * v:+.1f} %" for k, v in growth.items()}
    peak = {side: max((s["rss_mb"][side] for s in result["samples"] if s["rss_mb"][side] is not None), default=None)
            for side in ("tx", "rx")}
    fds = {side: max((s["fds"][side] for s in result["samples"] if s["fds"][side] is not None), default=None)
           for side in ("tx", "rx")}
    lines = [f"## {name}", "", f"{result['n_images']} images at {result['snr_db']:g} dB, "
             f"{_number(result.get('images_per_s'), 1)} images/s from the first image sent to the last decoded"
             + (f" ({result['decoded'] / result['wall_s']:.1f} over the {result['wall_s']:.1f} s from the processes' "
                "start, start-up included)." if result.get("wall_s") else "."), ""]
    lines += _provenance_lines(result) + [""]
    lines += ["| images | decoded | lost | unaccounted | RSS growth from image "
              f"{result['growth_from_images']} to about the last (tx / rx) | peak RSS MB (tx / rx) | most open fds (tx / rx) |",
              "| --- | --- | --- | --- | --- | --- | --- |",
              f"| {result['n_images']} | {result['decoded']} | {result['lost']} | {result['unaccounted']} | "
              f"{pct['tx']} / {pct['rx']} | {_number(peak['tx'], 0)} / {_number(peak['rx'], 0)} | "
              f"{fds['tx']} / {fds['rx']} |"]
    if result.get("by_reason"):
        lines += ["", "Lost: " + ", ".join(f"{n} {cause}" for cause, n in result["by_reason"].items()) + "."]
    return lines + [""]


def multiuser_section(name: str, result: dict) -> list[str]:
    prov = {"provenance": {**result.get("provenance", {}), "command": result["command"], "commit": result["commit"]}}
    lines = [f"## {name}", "", f"{result['service']} decode service, {result['images_per_user']} CIFAR-10 test "
             f"images per user at {result['snr_db']:g} dB, refine steps {result['refine_steps']}, batch size "
             f"{result['batch_size']}, batch wait {result['max_wait_ms']:g} ms. Source radio: the two-process "
             "loopback end to end (images decoded / time from the first image sent to the last decoded); "
             "replay: the fragments the receivers handed over in the batched radio run, fed to the decode "
             "service alone as fast as it takes them (latency there includes the backlog).", ""]
    lines += _provenance_lines(prov) + [""]
    lines += ["| source | users | service | images/s | batched / sync | p50 latency ms (per user) | "
              "p99 latency ms (per user) | PSNR dB (mean of users) | lost | unaccounted |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ratios = result.get("ratios", {})
    for run in sorted(result["runs"], key=lambda r: (r["source"], r["users"], r["mode"])):
        users = run["per_user"]
        ratio = ratios.get(f"{run['source']}_{run['users']}") if run["mode"] == "batched" else None
        p50 = " / ".join(f"{u['latency_ms_p50']:.0f}" for u in users)
        p99 = " / ".join(f"{u['latency_ms_p99']:.0f}" for u in users)
        lines.append(
            f"| {run['source']} | {run['users']} | {run['mode']} | {run['images_per_s']:.1f} | "
            f"{_number(ratio)} | {p50} | {p99} | "
            f"{sum(u['psnr_db'] for u in users) / len(users):.2f} | {sum(u['lost'] for u in users)} | "
            f"{run['unaccounted']} |")
    if result.get("batch_sweep"):
        rows = result["batch_sweep"]
        sizes = sorted({r["batch_size"] for r in rows})
        lines += ["", f"Replay at {max(r['users'] for r in result['runs'])} users (embedded service), images/s "
                      "against batch size, one batch decoded at a time (batching alone) and two at a time (batching and overlap):", "",
                  "| batches at a time | " + " | ".join(f"batch {s}" for s in sizes) + " |",
                  "| --- |" + " --- |" * len(sizes)]
        for workers in sorted({r.get("workers", 2) for r in rows}):
            by_size = {r["batch_size"]: r for r in rows if r.get("workers", 2) == workers}
            lines.append(f"| {workers} | " + " | ".join(
                f"{by_size[s]['images_per_s']:.0f}" if s in by_size else "-" for s in sizes) + " |")
    cache = result.get("session_cache")
    if cache:
        lines += ["", f"Caching the model sessions: loading {cache['codec']} (SHA-256 check and ONNX Runtime "
                      f"session) takes {cache['session_load_ms']:.1f} ms, decoding one image with the loaded "
                      f"session {cache['decode_ms']:.2f} ms."]
    match = {k: v for k, v in (result.get("replay_psnr_vs_radio_max_abs_db") or {}).items() if v is not None}
    if match:
        lines += ["", "Replay against radio, same fragments: largest PSNR difference per image "
                  + ", ".join(f"{k.replace('_', ' users, ')} {v:.3f} dB" for k, v in match.items()) + "."]
    return lines + [""]


def _page(kind: str, sections: list[str], sources: str) -> str:
    title, what = PAGES[kind]
    head = [f"# Results: {title}", "", f"{what[0].upper() + what[1:]}.",
            "", f"Generated by `scripts/gsc docs` from {sources}; do not edit. To update a table, run the "
                "command under it again and then `scripts/gsc docs`.", ""]
    return "\n".join(head + sections).rstrip() + "\n"


def headline_table(result: dict) -> str:
    """Over the link: each codec's PSNR, MS-SSIM and accuracy at each SNR, with the command."""
    points = [p for p in result["points"] if p["channel"] == "ofdm_zmq"]
    snrs = sorted({p["snr_db"] for p in points})
    codecs = list(dict.fromkeys(p["codec"] for p in points))
    lines = ["| codec | " + " | ".join(f"{s:g} dB: PSNR / MS-SSIM / accuracy" for s in snrs) + " |",
             "| --- |" + " --- |" * len(snrs)]
    for codec in codecs:
        cells = []
        for s in snrs:
            p = next(p for p in points if p["codec"] == codec and p["snr_db"] == s)
            cells.append(f"{p['psnr_db']:.2f} dB / {p['ms_ssim']:.3f} / {_number(p.get('accuracy'), 3)}")
        lines.append(f"| {codec} | " + " | ".join(cells) + " |")
    prov = result.get("provenance") or {}
    return "\n".join([
        f"{result['dataset']} over the two-process GNU Radio ZMQ link (AWGN per carrier); a lost image "
        "counts as the dataset's mean image.", "", *lines, "",
        f"    {prov.get('command', '')}", "",
        f"Commit `{prov.get('commit', '')[:12]}`, {prov.get('date', '')}; every point, the ideal channel beside "
        "the link, in [docs/results/link.md](docs/results/link.md)."])


def _with_plot(lines: list[str], repo: Path, kind: str, name: str) -> list[str]:
    """The section, with its plot (docs/results/<kind>_<name>.png, the run's --plot) after the heading."""
    plot = f"{kind}_{name}.png"
    if (repo / "docs" / "results" / plot).is_file():
        lines = lines[:2] + [f"![{kind} {name}]({plot})", ""] + lines[2:]
    return lines


def generate(repo: Path = REPO) -> dict[Path, str]:
    """{path relative to the repo: text} of every generated file."""
    out = {}
    for kind, section in (("link", link_section), ("frames", frames_section), ("control", control_section),
                          ("codec", codec_section), ("soak", soak_section), ("multiuser", multiuser_section)):
        files = sorted((repo / "results" / kind).glob("*.json"))
        sections = [line for f in files for line in _with_plot(section(f.stem, _load(f)), repo, kind, f.stem)]
        if not files:
            sections = ["No result is committed yet.", ""]
        out[Path("docs") / "results" / f"{kind}.md"] = _page(kind, sections, f"`results/{kind}/*.json`")
    tables = sorted((repo / "models").glob("*/calibration.json"))
    sections = [line for f in tables for line in calibrate_section(f.parent.name, _load(f))]
    out[Path("docs") / "results" / "calibrate.md"] = _page(
        "calibrate", sections, "the controller's tables, `models/<codec>/calibration.json` (`scripts/gsc bench "
        "calibrate --codec NAME` writes them)")
    readme = (repo / "README.md").read_text()
    if README_BEGIN in readme and README_END in readme and (repo / HEADLINE).is_file():
        before, rest = readme.split(README_BEGIN, 1)
        _, after = rest.split(README_END, 1)
        out[Path("README.md")] = (before + README_BEGIN + "\n" + headline_table(_load(repo / HEADLINE)) + "\n"
                                  + README_END + after)
    return out


def write_docs(repo: Path = REPO, check: bool = False) -> list[Path]:
    """Write the generated files; with check, write nothing and return those that differ."""
    stale = []
    for rel, text in generate(repo).items():
        path = repo / rel
        if not path.is_file() or path.read_text() != text:
            stale.append(rel)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return stale
