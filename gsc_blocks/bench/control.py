"""`scripts/gsc bench control`: the closed loop over the real two-process link under an
SNR trace, per policy, beside what the controller's own cost model says is possible."""
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..apps.run import run_link
from ..core.models import sha256_file
from .common import DEFAULT_DATA, cifar_test_images, load_setup, models_of, provenance, write_json

CAMVID_CODECS = ("spic", "cspic", "sqgan")


def _policy_summary(folder: Path, targets: dict) -> dict:
    """Energy and quality over every slot, delay over the slots delivered, the loss rate, and the
    losses that were the slot timeout's (the receiver delivered the image after it)."""
    slots = [json.loads(l) for l in (folder / "tx_controller.jsonl").read_text().splitlines() if l.strip()]
    energy = float(np.mean([s["energy"] for s in slots]))
    delivered = [s for s in slots if not s.get("lost")]
    delay = float(np.mean([s["delay_ms"] for s in delivered])) if delivered else float("inf")
    quality = float(np.mean([s["quality"] for s in slots]))
    lost = len(slots) - len(delivered)
    loss_rate = lost / len(slots)
    met = bool(quality >= targets["quality"] * 0.98 and delay <= targets["delay_ms"] * 1.02
               and loss_rate <= targets["loss_rate"] * 1.02)
    steps = [s.get("refine_steps", 0) for s in delivered]
    return {"energy_per_image": energy, "avg_delay_ms": delay, "avg_quality": quality, "loss_rate": loss_rate,
            "constraints_met": met, "n_images": len(slots), "lost": lost,
            "lost_timeouts": int(sum(1 for s in slots if s.get("delivered_late"))),
            "lost_no_report": int(sum(1 for s in slots if s.get("timeout") and not s.get("delivered_late"))),
            "lost_decode_failed": int(sum(1 for s in slots if s.get("lost") and not s.get("timeout"))),
            "refined": int(sum(1 for k in steps if k)),
            "avg_refine_steps": float(np.mean(steps)) if steps else 0.0}, slots


def model_bound(config, trace, overrides=()) -> dict:
    """What the controller's own cost model says is possible on this trace: the clairvoyant
    bound (every slot's SNR known in advance) and each fixed action, with the saving of the
    one over the cheapest fixed action that meets the targets in the model (an image the
    model expects lost costs the lost quality and counts toward the loss rate; delay is
    averaged over the images expected delivered)."""
    from ..apps.flowgraphs import calibration_path
    from ..core.config import load_config
    from ..core.controller import CalibrationTable, CostModel, clairvoyant_bound
    cfg = load_config(config, list(overrides))
    ctrl = cfg["controller"]
    table = CalibrationTable.load(calibration_path(cfg), ctrl["quality_metric"])
    model = CostModel(table, loss_snr_db=ctrl["loss_snr_db"], lost_quality=ctrl["lost_quality"],
                      lost_delay_ms=ctrl["slot_timeout_s"] * 1e3, loss_width_db=ctrl["loss_width_db"])
    actions = table.actions(ctrl["power_levels"], ctrl["refine_steps"])
    q_target, d_target, l_target = ctrl["quality_target"], ctrl["delay_target_ms"], ctrl["loss_target"]
    # the same 2 % tolerance the policies are judged with, in the adaptive policy's favour
    bound = clairvoyant_bound(model, actions, trace, q_target * 0.98, d_target * 1.02,
                              loss_target=min(1.0, l_target * 1.02))
    per_slot = [model.costs_many(actions, float(snr)) for snr in trace]
    fixed = {}
    for i, a in enumerate(actions):
        kept = np.array([1.0 - c.loss[i] for c in per_slot])
        fixed[f"rate{a.rate_index}_power{a.power_level}_steps{a.refine_steps}"] = {
            "energy_per_image": float(np.mean([c.energy[i] for c in per_slot])),
            "avg_quality": float(np.mean([c.quality[i] for c in per_slot])),
            "avg_delay_ms": float(np.sum(kept * [c.delay_ms[i] for c in per_slot]) / max(kept.sum(), 1e-12)),
            "loss_rate": float(1.0 - kept.mean())}
    meeting = {k: v for k, v in fixed.items() if v["avg_quality"] >= q_target * 0.98
               and v["avg_delay_ms"] <= max(d_target * 1.02, bound.get("delay_floor_ms", 0.0))
               and v["loss_rate"] <= max(l_target * 1.02, bound.get("loss_floor", 0.0))}
    out = {"calibration": calibration_path(cfg), "clairvoyant_bound": bound, "fixed_actions": fixed}
    if meeting and bound.get("feasible"):
        name = min(meeting, key=lambda k: meeting[k]["energy_per_image"])
        out["cheapest_fixed_meeting_targets"] = name
        out["bound_saving_vs_cheapest_fixed"] = 1 - bound["energy_per_image"] / meeting[name]["energy_per_image"]
    return out


def bench_control(trace_path=None, n_images=2000, V=2e4, data_dir=None, config="radio_config/zmq_loopback.yaml",
                  json_path=None, plot_path=None, work_dir="out/bench_control", v_sweep=(), fixed_levels=(0,),
                  codec=None, quality_metric=None, quality_target=None, overrides=(), command=None, dataset=None):
    """The closed loop over the real two-process link under an SNR trace, per policy
    (codec: the setup's codec.name unless given; its calibration table sets the actions;
    quality_metric, quality_target: the setup's controller keys unless given; overrides:
    KEY=VALUE setup changes for every run; dataset: cifar10, or camvid (the default for the
    CamVid codecs: the test frames at 256x192, in order, repeated to n_images))."""
    from ..apps.flowgraphs import calibration_path
    from ..core.config import load_config
    from ..core.controller import jakes_snr_trace, read_trace, write_trace
    from ..core.refiner import refiner_for
    from ..core.registry import make_codec
    from ..core.semantic import Classifier
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if trace_path is None:
        trace_path = work / "trace_rayleigh_12db.csv"
        write_trace(trace_path, jakes_snr_trace(n_images, 12.0, 0.01, seed=1))
    trace = read_trace(trace_path)
    n_images = min(n_images, len(trace))
    setup = [f"codec.name={codec}"] if codec else []
    setup += [f"controller.quality_metric={quality_metric}"] if quality_metric else []
    setup += [f"controller.quality_target={quality_target}"] if quality_target is not None else []
    setup += list(overrides)
    setup_cfg = load_config(config, list(setup))
    base = setup_cfg["controller"]
    targets = {"delay_ms": base["delay_target_ms"], "quality": base["quality_target"],
               "quality_metric": base["quality_metric"], "loss_rate": base["loss_target"]}
    dataset = dataset or ("camvid" if setup_cfg["codec"]["name"].split("-")[0] in CAMVID_CODECS else "cifar10")
    if dataset == "camvid":
        from .camvid import camvid_files
        frames = camvid_files(data_dir and Path(data_dir), None, work)
        files = (frames * -(-n_images // len(frames)))[:n_images]
    else:
        files = cifar_test_images(Path(data_dir or DEFAULT_DATA), n_images)
    common = ["controller.enabled=true", f"channel.snr_trace={trace_path}", f"controller.V={V}", *setup]
    runs = [("lyapunov", ["controller.policy=lyapunov"]), ("greedy", ["controller.policy=greedy"])]
    runs += [(f"fixed_{lvl}", ["controller.policy=fixed", f"controller.fixed_power_level={lvl}"]) for lvl in fixed_levels]
    runs += [(f"lyapunov_V{v:g}", ["controller.policy=lyapunov", f"controller.V={v}"]) for v in v_sweep]
    codec_obj = make_codec(setup_cfg["codec"]["name"], setup_cfg["codec"]["models_dir"] or None)
    used = models_of(codec_obj, refiner_for(codec_obj.name),
                     Classifier() if base["quality_metric"] == "accuracy_pct" else None)
    used["calibration"] = {"table": sha256_file(calibration_path(setup_cfg))}
    result = {"provenance": provenance(command, load_setup(config, common), used),
              "codec": codec_obj.name, "dataset": dataset, "targets": targets, "V": V, "setup": setup,
              "trace": str(trace_path), "policies": {}, "fixed": {}, "v_sweep": {}}
    slots_by_run = {}
    for name, extra in tqdm(runs, desc="bench control", unit="run"):
        folder = run_link(config, files, work / name, common + extra, timeout_s=3600)
        summary, slots = _policy_summary(folder, targets)
        slots_by_run[name] = slots
        if name.startswith("fixed_"):
            result["fixed"][name] = summary
        elif name.startswith("lyapunov_V"):
            result["v_sweep"][name[len("lyapunov_V"):]] = summary
        else:
            result["policies"][name] = summary
    result["model"] = model_bound(config, trace[:n_images], [f"channel.snr_trace={trace_path}", *setup])
    if "fixed_0" in result["fixed"]:   # full power, when it was run
        result["policies"]["fixed_max"] = result["fixed"]["fixed_0"]
    meeting = {name: s for name, s in result["fixed"].items() if s["constraints_met"]}
    if meeting:
        name = min(meeting, key=lambda n: meeting[n]["energy_per_image"])
        result["cheapest_fixed_meeting_targets"] = {"policy": name, **meeting[name]}
        result["lyapunov_energy_saving_vs_cheapest_fixed"] = \
            1 - result["policies"]["lyapunov"]["energy_per_image"] / meeting[name]["energy_per_image"]
    if json_path:
        write_json(json_path, result)
    if plot_path:
        plot_control(result, slots_by_run["lyapunov"], trace, plot_path)
    return result


def plot_control(result, slots, trace, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    slots = slots[:len(trace)]
    t = np.arange(len(slots))
    fig, axes = plt.subplots(4, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, trace[:len(slots)], lw=0.6, label="trace (full power)")
    axes[0].plot(t, [s.get("snr_est_db", np.nan) for s in slots], ".", ms=1.5, label="RX estimate")
    axes[0].set_ylabel("SNR (dB)")
    axes[0].legend(fontsize=7)
    axes[1].plot(t, [s["Z"] for s in slots], label="Z (delay)")
    axes[1].plot(t, [s["Y"] for s in slots], label="Y (quality)")
    axes[1].plot(t, [s.get("L", 0.0) for s in slots], label="L (loss rate)")
    axes[1].set_ylabel("virtual queues")
    axes[1].legend(fontsize=7)
    axes[2].step(t, [s["power_level"] for s in slots], lw=0.6)
    axes[2].set_ylabel("power level\n(2 dB steps)")
    rates = [s.get("rate_index", 0) for s in slots]
    if len(set(rates)) > 1:
        ax_rate = axes[2].twinx()
        ax_rate.step(t, rates, lw=0.6, color="tab:green")
        ax_rate.set_ylabel("rate index", color="tab:green")
    steps = [s.get("refine_steps", 0) for s in slots]
    if any(steps):
        axes[2].plot(t, steps, ".", ms=1.5, color="tab:orange", label="refiner steps")
        axes[2].legend(fontsize=7, loc="upper right")
    q = np.cumsum([s["quality"] for s in slots]) / (t + 1)
    unit = {"psnr_db": "PSNR (dB)", "ms_ssim_db": "MS-SSIM (dB)", "accuracy_pct": "accuracy (%)",
            "miou_pct": "mIoU (%)"}[
        result["targets"]["quality_metric"]]
    e = np.cumsum([s["energy"] for s in slots]) / (t + 1)
    axes[3].plot(t, q, label=f"running mean {unit}")
    axes[3].axhline(result["targets"]["quality"], color="gray", ls="--", lw=0.8)
    ax2 = axes[3].twinx()
    ax2.plot(t, e * 1e3, color="tab:red", label="running mean energy (mJ-equiv.)")
    axes[3].set_ylabel(unit)
    axes[3].set_xlabel("image slot")
    fig.suptitle(f"Lyapunov controller over the ZMQ link, {result.get('codec', '')}, V={result['V']:g}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if result["v_sweep"]:
        runs = {float(v): summary for v, summary in result["v_sweep"].items()}
        runs.setdefault(float(result["V"]), result["policies"]["lyapunov"])    # the main run, at its V
        vs = sorted(runs)
        targets = result["targets"]
        fig, ax = plt.subplots(1, 3, figsize=(11, 3.2))
        panels = (("energy per image", lambda r: r["energy_per_image"], None),
                  (f"{unit} minus target", lambda r: r["avg_quality"] - targets["quality"], 0.0),
                  ("delay minus target (ms)", lambda r: r["avg_delay_ms"] - targets["delay_ms"], 0.0))
        met = [v for v in vs if runs[v]["constraints_met"]]
        for a, (label, value, zero) in zip(ax, panels):
            a.plot(vs, [value(runs[v]) for v in vs], "o-", label="run")
            a.plot(met, [value(runs[v]) for v in met], "o", color="C2", label="targets met (2%)")
            if zero is not None:
                a.axhline(zero, color="k", lw=0.6)
            a.set_xscale("log")
            a.set_xlabel("V")
            a.set_ylabel(label)
            a.grid(alpha=0.3)
        ax[0].legend(fontsize=7)
        fig.suptitle(f"Lyapunov controller against V, {result.get('codec', '')}", fontsize=9)
        fig.tight_layout()
        fig.savefig(str(path).replace(".png", "_vsweep.png"), dpi=110)
        plt.close(fig)
