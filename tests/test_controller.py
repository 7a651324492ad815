"""Lyapunov controller core (no GNU Radio): decisions, queues, policies, traces."""
from pathlib import Path

import numpy as np
import pytest

from gsc_blocks.core.controller import (Action, CalibrationTable, CostModel, LyapunovController, fixed_policy,
                                        greedy_policy, jakes_snr_trace, read_trace, write_trace)

SNR = [-10, 0, 5, 10, 15, 20, 30]
TABLE = CalibrationTable({"snr_db": SNR, "lost": {"psnr_db": 11.0}, "rates": {
    "0": {"symbols": 256, "steps": {"0": {"psnr_db": [14, 19, 21, 23, 24, 24.5, 25], "decode_ms": 2.0}}},
    "1": {"symbols": 512, "steps": {"0": {"psnr_db": [15, 21, 23.5, 25.5, 27, 28, 29], "decode_ms": 2.5},
                                    "4": {"psnr_db": [16, 22, 24.5, 26.2, 27.5, 28.3, 29], "decode_ms": 9.0}}},
}})


def simulate(choose, trace, model, update=None):
    energy, delay, quality = [], [], []
    for snr in trace:
        action = choose(model, snr)
        c = model.costs(action, snr)
        energy.append(c.energy)
        delay.append(c.delay_ms)
        quality.append(c.quality)
        if update:
            update(c.delay_ms, c.quality)
    return np.mean(energy), np.mean(delay), np.mean(quality)


def test_table_interpolates_and_checks_shape():
    assert TABLE.quality(1, 0, 12.5) == pytest.approx(26.25)
    assert TABLE.quality(1, 0, 99) == 29
    with pytest.raises(ValueError, match="1 psnr_db values for 2 SNR points"):
        CalibrationTable({"snr_db": [0, 1], "rates": {"0": {"symbols": 1, "steps": {"0": {"psnr_db": [1],
                                                                                       "decode_ms": 1}}}}})


def test_power_level_lowers_energy_and_effective_snr():
    model = CostModel(TABLE)
    full, low = model.costs(Action(1, 0, 0), 10.0), model.costs(Action(1, 3, 0), 10.0)
    assert low.energy == pytest.approx(full.energy * 10 ** -0.6)
    assert low.quality == pytest.approx(TABLE.quality(1, 0, 4.0), abs=1e-3)
    assert low.delay_ms == pytest.approx(full.delay_ms, abs=1e-3)


def test_lyapunov_meets_targets_with_less_energy_than_fixed_max():
    trace = jakes_snr_trace(2000, 12.0, 0.01, seed=1)
    model = CostModel(TABLE, loss_snr_db=-100.0)      # the table alone: no radio losses
    actions = TABLE.actions(power_levels=range(8))
    q_target, d_target = 25.0, 5.0
    ctrl = LyapunovController(model, actions, V=2e4, delay_target_ms=d_target, quality_target=q_target)
    e_l, d_l, q_l = simulate(lambda m, s: ctrl.decide(s), trace, model, ctrl.update)
    e_f, d_f, q_f = simulate(fixed_policy(Action(1, 0, 0)), trace, model)
    assert q_l >= q_target - 0.02 * q_target and d_l <= d_target * 1.02
    assert e_l < 0.7 * e_f
    for queue in np.array(ctrl.history).T:       # bounded: drains after every deep fade, no linear growth
        assert max(queue[i:i + 250].min() for i in range(0, len(queue), 250)) < 15.0
        assert queue[-1] < 15.0 and queue.max() < 0.2 * len(queue)
    e_g, _, q_g = simulate(greedy_policy(actions, d_target, q_target), trace, model)
    assert e_g <= e_f


def test_larger_v_trades_quality_slack_for_energy():
    trace = jakes_snr_trace(1500, 12.0, 0.01, seed=2)
    model = CostModel(TABLE, loss_snr_db=-100.0)
    actions = TABLE.actions(power_levels=range(8))
    results = []
    for V in (1e3, 1e4, 1e5):
        ctrl = LyapunovController(model, actions, V=V, delay_target_ms=5.0, quality_target=25.0)
        results.append(simulate(lambda m, s: ctrl.decide(s), trace, model, ctrl.update))
    energies = [r[0] for r in results]
    slack = [r[2] - 25.0 for r in results]
    assert energies[0] >= energies[1] >= energies[2]
    assert slack[0] >= slack[2]


def test_jakes_trace_statistics_and_csv(tmp_path):
    trace = jakes_snr_trace(20000, 12.0, 0.02, seed=3)
    assert abs(10 * np.log10(np.mean(10 ** (trace / 10))) - 12.0) < 0.5
    assert np.mean(10 ** ((trace - 12) / 10) < 0.1) == pytest.approx(1 - np.exp(-0.1), abs=0.03)
    path = tmp_path / "trace.csv"
    write_trace(path, trace[:10])
    assert np.allclose(read_trace(path), trace[:10], atol=1e-3)
    (tmp_path / "bad.csv").write_text("snr\n1\n")
    with pytest.raises(ValueError, match="snr_db"):
        read_trace(tmp_path / "bad.csv")


def test_controller_block_turns_reports_into_encoder_commands(tmp_path):
    import json
    import time

    import pmt
    from gnuradio import blocks, gr

    from gsc_blocks.lyapunov_controller import lyapunov_controller
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"snr_db": SNR, "lost": {"psnr_db": 11.0},
                                "rates": {k: v for k, v in TABLE.rates.items()}}))
    tb = gr.top_block()
    ctrl = lyapunov_controller(str(path), V=2e4, delay_target_ms=5.0, quality_target=25.0, power_levels=range(8))
    commands, states = blocks.message_debug(), blocks.message_debug()
    tb.msg_connect(ctrl, "command", commands, "store")
    tb.msg_connect(ctrl, "state", states, "store")
    tb.start()
    reports = [(15.0, 26.0), (15.0, 20.0), (15.0, 20.0), (15.0, 20.0)]   # then quality falls short
    for snr, quality in reports:
        ctrl.to_basic_block()._post(pmt.intern("report"),
                                    pmt.to_pmt({"snr_db": snr, "delay_ms": 4.0, "quality": quality}))
    ctrl.to_basic_block()._post(pmt.intern("report"), pmt.to_pmt("garbage"))
    deadline = time.time() + 5
    while commands.num_messages() < 4 and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    tb.stop()
    tb.wait()
    got = [pmt.to_python(commands.get_message(i)) for i in range(commands.num_messages())]
    assert len(got) == 4 and set(got[0]) == {"rate_index", "power_level", "refine_steps", "snr_db"}
    assert got[0]["power_level"] == 7                 # no quality debt: the least energy
    assert got[3]["power_level"] < 7                  # debt in the Y queue buys power back
    assert pmt.to_python(states.get_message(0))["Y"] == 0.0 and pmt.to_python(states.get_message(3))["Y"] == 15.0


def test_controller_block_charges_a_slot_with_no_report_as_lost(tmp_path):
    """The slot timeout lives in the block: an image sent (port 'sent') with no report within
    lost_delay_ms is charged as lost with that delay; its late report is then ignored, and so
    are malformed reports and reports on another session's images."""
    import json
    import time

    import numpy as np
    import pmt
    from gnuradio import blocks, gr

    from gsc_blocks.lyapunov_controller import lyapunov_controller
    from gsc_blocks.pdu_util import make_pdu
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"snr_db": SNR, "lost": {"psnr_db": 11.0},
                                "rates": {k: v for k, v in TABLE.rates.items()}}))
    tb = gr.top_block()
    ctrl = lyapunov_controller(str(path), power_levels=range(8), lost_delay_ms=100.0)
    nexts = blocks.message_debug()
    tb.msg_connect(ctrl, "next", nexts, "store")
    tb.start()
    post = ctrl.to_basic_block()._post
    image = np.zeros(32 * 32 * 3, np.uint8)
    post(pmt.intern("sent"), make_pdu({"image_id": 7, "slot": 0, "t_sent": time.time()}, image))
    deadline = time.time() + 5
    while nexts.num_messages() < 1 and time.time() < deadline:
        time.sleep(0.01)
    post(pmt.intern("report"), pmt.to_pmt({"image_id": 7, "snr_est_db": 12.0, "decode_ms": 3.0}))   # too late
    post(pmt.intern("sent"), make_pdu({"image_id": 8, "slot": 1, "session": 5, "t_sent": time.time()}, image))
    while ctrl.session != 5 and time.time() < deadline:      # ports are served in no fixed order
        time.sleep(0.01)
    # Malformed reports and one on another session's image 8 (a transmitter run before a restart):
    # each ignored with a warning, and the loop goes on.
    for bad in (pmt.intern("garbage"), pmt.to_pmt({"image_id": 8, "snr_est_db": "loud"}), pmt.PMT_NIL,
                pmt.to_pmt({"image_id": 8, "session": 4, "snr_est_db": 30.0, "decode_ms": 1.0})):
        post(pmt.intern("report"), bad)
    post(pmt.intern("report"), pmt.to_pmt({"image_id": 8, "session": 5, "snr_est_db": 12.0, "decode_ms": 3.0}))
    while len(ctrl.slots) < 2 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    tb.stop()
    tb.wait()
    assert [(s["image_id"], bool(s.get("lost")), bool(s.get("timeout"))) for s in ctrl.slots] == \
        [(7, True, True), (8, False, False)]
    assert ctrl.slots[0]["delay_ms"] == 100.0 and ctrl.slots[0]["quality"] == 11.0
    assert ctrl.slots[1]["delay_ms"] < 100.0 and nexts.num_messages() == 2
    assert ctrl.slots[1]["snr_db"] == 12.0 and ctrl.slots[1]["session"] == 5


def test_cost_model_expects_loss_below_the_loss_snr():
    model = CostModel(TABLE, loss_snr_db=-3.5, lost_quality=11.0, lost_delay_ms=1000.0)
    assert model.loss_probability(-3.5) == 0.5
    assert model.loss_probability(-5.0) > 0.95 and model.loss_probability(-2.0) < 0.05
    lost = model.costs(Action(0, 7, 0), 8.0)           # 8 - 14 dB = -6 dB effective
    assert abs(lost.quality - 11.0) < 0.1 and lost.loss > 0.99
    assert lost.delay_ms < 10       # the delay if delivered: a loss is counted by the loss rate, not as delay
    kept = model.costs(Action(0, 5, 0), 10.0)          # 0 dB effective
    assert abs(kept.quality - TABLE.quality(0, 0, 0.0)) < 0.01 and kept.delay_ms < 10
    # more power always buys back expected quality, even deep in a fade
    assert model.costs(Action(0, 0, 0), -6.0).quality > model.costs(Action(0, 1, 0), -6.0).quality


def test_fixed_policy_and_first_command_use_the_full_rate_whatever_its_index(tmp_path):
    """deepjscc_sr numbers its rates from full (0) down; the fixed policy and the first command
    (nothing known of the channel yet) take the rate with the most symbols, unless told otherwise,
    and fixed_refine_steps (0: the JSCC output alone)."""
    import json

    from gsc_blocks.lyapunov_controller import lyapunov_controller
    sr = {"snr_db": SNR, "lost": {"psnr_db": 11.0}, "rates": {"0": TABLE.rates[1], "4": TABLE.rates[0]}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(sr))
    fixed = lyapunov_controller(str(path), policy="fixed", fixed_power_level=2, power_levels=range(4))
    assert fixed.fixed == Action(0, 2, 0) and fixed.initial_command()["rate_index"] == 0
    assert lyapunov_controller(str(path), power_levels=range(4)).initial_command() == \
        {"rate_index": 0, "power_level": 0, "refine_steps": 0}
    refined = lyapunov_controller(str(path), policy="fixed", fixed_refine_steps=4, power_levels=range(4))
    assert refined.fixed == Action(0, 0, 4) and refined.initial_command()["refine_steps"] == 4
    half = lyapunov_controller(str(path), policy="fixed", fixed_rate_index=4, power_levels=range(4))
    assert half.fixed.rate_index == 4
    with pytest.raises(ValueError, match=r"fixed_rate_index 3: the calibration table has rates \[0, 4\]"):
        lyapunov_controller(str(path), policy="fixed", fixed_rate_index=3)
    with pytest.raises(ValueError, match=r"fixed_refine_steps 2: the calibration table has refiner steps \[0, 4\]"):
        lyapunov_controller(str(path), policy="fixed", fixed_refine_steps=2)
    del sr["lost"]
    path.write_text(json.dumps(sr))
    with pytest.raises(ValueError, match="no lost-image psnr_db: remeasure it"):
        lyapunov_controller(str(path))
    assert lyapunov_controller(str(path), lost_quality=11.0).model.lost_quality == 11.0


def test_calibration_table_errors_and_default_path(tmp_path):
    from gsc_blocks.apps.flowgraphs import calibration_path
    from gsc_blocks.core.config import load_config
    with pytest.raises(FileNotFoundError, match="gsc bench calibrate --codec NAME"):
        CalibrationTable.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"snr_db": [1, 2]}')
    with pytest.raises(ValueError, match="bad.json is not a calibration table"):
        CalibrationTable.load(tmp_path / "bad.json")
    config = load_config(Path(__file__).resolve().parents[1] / "radio_config" / "zmq_loopback.yaml",
                         {"codec.name": "deepjscc_sr"})
    assert calibration_path(config).endswith("models/deepjscc_sr/calibration.json")
    config["controller"]["calibration"] = "mine.json"
    assert calibration_path(config) == "mine.json"
    with pytest.raises(ValueError, match="no miou column, which quality metric miou_pct needs"):
        CalibrationTable.load(Path(__file__).resolve().parents[1] / "models" / "deepjscc" / "calibration.json",
                              "miou_pct")


def test_a_table_measured_at_another_cbr_is_refused(tmp_path):
    """models/sqgan/calibration.json prices CBR 1/24: a setup sending sqgan at another CBR is refused
    before the link starts, naming both CBRs and the fix."""
    from gsc_blocks.apps.run import run_link
    from gsc_blocks.core.config import ConfigError
    setup = Path(__file__).resolve().parents[1] / "radio_config" / "zmq_loopback.yaml"
    with pytest.raises(ConfigError, match=r"measured at CBR 1/24, but codec.digital_cbr is 0.166667: set "
                                          r"codec.digital_cbr to 0.0416667 \(1/24\)"):
        run_link(setup, [], tmp_path, ["codec.name=sqgan", "controller.enabled=true",
                                       "controller.quality_metric=miou_pct", "controller.quality_target=40"])


def test_decisions_average_over_the_recent_snr_spread():
    """The report is a slot old: with no spread the expectation is the plain cost at the report,
    and the spread is measured from the recent slot-to-slot changes."""
    model = CostModel(TABLE, lost_delay_ms=250.0)
    plain = LyapunovController(model, TABLE.actions(range(8)), 2e4, 10.0, 22.0, Y=5.0, robust=False)
    steady = LyapunovController(model, TABLE.actions(range(8)), 2e4, 10.0, 22.0, Y=5.0)
    for snr in (8.0, 8.0, 8.0, 8.0):
        assert steady.decide(snr) == plain.decide(snr)
    assert steady.snr_spread_db() == 0.0
    shaky = LyapunovController(model, TABLE.actions(range(8)), 2e4, 10.0, 22.0, Y=5.0)
    for snr in (14.0, 6.0, 14.0, 6.0):
        shaky.decide(snr)
    assert shaky.snr_spread_db() > 5.0


def test_clairvoyant_bound_is_below_every_fixed_action_that_meets_the_targets():
    from gsc_blocks.core.controller import clairvoyant_bound
    model = CostModel(TABLE, lost_delay_ms=250.0)
    actions = TABLE.actions(range(8))
    trace = jakes_snr_trace(600, 12.0, 0.01, seed=2)
    bound = clairvoyant_bound(model, actions, trace, 22.0, 10.0)
    assert bound["feasible"] and bound["avg_quality"] >= 22.0 and bound["avg_delay_ms"] <= 10.0
    meeting = 0
    for action in actions:
        energy, delay, quality = simulate(fixed_policy(action), trace, model)
        if quality >= 22.0 and delay <= 10.0:
            meeting += 1
            assert bound["energy_per_image"] <= energy
    assert meeting >= 1
    assert clairvoyant_bound(model, actions, trace, 40.0, 10.0) == {"feasible": False}


@pytest.mark.parametrize("codec", ["deepjscc", "deepjscc_sr", "swinjscc"])
def test_every_shipped_codec_has_a_calibration_table_for_each_rate(codec):
    """The closed loop runs with any shipped JSCC codec in any quality metric: its table covers every
    rate and 0 to 2 refiner steps, fewer groups mean fewer symbols, refining takes longer, quality
    rises with SNR and a lost image scores below a full-rate one at 0 dB."""
    from gsc_blocks.core.jscc import JSCCCodec
    from gsc_blocks.core.controller import QUALITY_METRICS
    models = Path(__file__).resolve().parents[1] / "models"
    rates = JSCCCodec(codec, models).rate_count
    for metric in set(QUALITY_METRICS) - {"miou_pct"}:        # CIFAR-10 tables: accuracy, no mIoU
        table = CalibrationTable.load(models / codec / "calibration.json", metric)
        assert sorted(table.rates) == list(range(rates))
        assert [table.symbols(r) for r in range(rates)] == \
            sorted((table.symbols(r) for r in range(rates)), reverse=True)
        assert all(table.steps_of(r) == [0, 1, 2] for r in range(rates))
        assert table.decode_ms(0, 0) < table.decode_ms(0, 1) < table.decode_ms(0, 2)
        for steps in (0, 1, 2):      # accuracy saturates from about 10 dB, within its sampling noise
            assert table.quality(0, steps, -5.0) < table.quality(0, steps, 5.0) < \
                min(table.quality(0, steps, 10.0), table.quality(0, steps, 20.0))
        assert table.lost_quality < table.quality(0, 0, 0.0)


SEMANTIC = {"snr_db": SNR, "lost": {"psnr_db": 11.0, "ms_ssim": 0.19, "accuracy": 0.1}, "rates": {
    "0": {"symbols": 512, "steps": {
        "0": {"psnr_db": [14, 22, 25.5, 28.6, 30.9, 32, 32.5],
              "ms_ssim": [0.5, 0.856, 0.939, 0.972, 0.984, 0.988, 0.99],
              "accuracy": [0.12, 0.34, 0.60, 0.72, 0.77, 0.78, 0.79], "decode_ms": 2.0},
        "1": {"psnr_db": [14, 21.9, 25.4, 28.5, 30.8, 31.9, 32.4],
              "ms_ssim": [0.52, 0.863, 0.941, 0.972, 0.984, 0.988, 0.99],
              "accuracy": [0.15, 0.43, 0.64, 0.73, 0.77, 0.78, 0.79], "decode_ms": 6.0}}}}}


def test_quality_metrics_convert_the_table_and_the_lost_image():
    psnr = CalibrationTable(SEMANTIC)
    ssim = CalibrationTable(SEMANTIC, "ms_ssim_db")
    acc = CalibrationTable(SEMANTIC, "accuracy_pct")
    assert psnr.quality(0, 0, 5.0) == 25.5 and psnr.lost_quality == 11.0
    assert ssim.quality(0, 0, 5.0) == pytest.approx(-10 * np.log10(1 - 0.939))
    assert ssim.lost_quality == pytest.approx(-10 * np.log10(0.81))
    assert acc.quality(0, 1, 2.5) == pytest.approx(53.5) and acc.lost_quality == pytest.approx(10.0)
    assert CostModel(acc).costs(Action(0, 0, 0), -20.0).quality == pytest.approx(10.0, abs=1e-6)
    with pytest.raises(ValueError, match="quality metric 'lpips': expected one of psnr_db, ms_ssim_db, accuracy_pct"):
        CalibrationTable(SEMANTIC, "lpips")
    with pytest.raises(ValueError, match="rate 0 steps 0 has no accuracy column, which quality metric accuracy_pct "
                                         "needs; remeasure it"):
        CalibrationTable(TABLE_JSON := {"snr_db": SNR, "rates": {"0": {"symbols": 1, "steps": {"0": {
            "psnr_db": [1] * len(SNR), "decode_ms": 1}}}}}, "accuracy_pct")
    assert CalibrationTable(TABLE_JSON).lost_quality is None


def test_with_a_semantic_target_the_refiner_steps_stand_in_for_transmit_power():
    """Accuracy as the quality: the refiner's steps cost no energy and raise accuracy in fades, so
    the controller refines there instead of paying the power, and spends less than it does when
    its actions have no steps; with PSNR, where refining costs a little, it never refines."""
    trace = jakes_snr_trace(2000, 12.0, 0.01, seed=1)
    acc = CalibrationTable(SEMANTIC, "accuracy_pct")
    model = CostModel(acc, lost_delay_ms=250.0)
    every = acc.actions(range(8))
    no_steps = acc.actions(range(8), refine_steps=[0])
    assert no_steps == [a for a in every if a.refine_steps == 0]
    with pytest.raises(ValueError, match=r"refine steps \[4\]: the calibration table has \[0, 1\]"):
        acc.actions(range(8), refine_steps=[4])
    runs = {}
    for name, actions in (("steps", every), ("no_steps", no_steps)):
        ctrl = LyapunovController(model, actions, V=2e4, delay_target_ms=10.0, quality_target=68.0)
        picks = []

        def choose(m, s):
            picks.append(ctrl.decide(s))
            return picks[-1]
        runs[name] = simulate(choose, trace, model, ctrl.update), picks
    (e_s, d_s, q_s), picks = runs["steps"]
    (e_n, d_n, q_n), _ = runs["no_steps"]
    assert q_s >= 68.0 * 0.98 and q_n >= 68.0 * 0.98 and d_s <= 10.0 * 1.02
    assert 0.05 < np.mean([a.refine_steps for a in picks]) < 0.95
    assert e_s < 0.97 * e_n
    psnr_model = CostModel(CalibrationTable(SEMANTIC), lost_delay_ms=250.0)
    ctrl = LyapunovController(psnr_model, every, V=2e4, delay_target_ms=10.0, quality_target=27.0)
    assert all(ctrl.decide(float(s)).refine_steps == 0 for s in trace[:300])


def test_controller_block_charges_the_measured_metric(tmp_path):
    """A sink report carries psnr_db, ms_ssim and correct: the block charges the one its metric
    names, the table's expectation when the report lacks it, and the table's lost quality for a
    lost slot; its decode time updates the cost model's."""
    import json

    from gsc_blocks.lyapunov_controller import lyapunov_controller
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(SEMANTIC))
    report = {"snr_est_db": 5.0, "snr_eff_db": 5.0, "decode_ms": 3.0, "rate_index": 0, "power_level": 0,
              "refine_steps": 1, "psnr_db": 25.0, "ms_ssim": 0.9, "correct": True}
    acc = lyapunov_controller(str(path), quality_metric="accuracy_pct", quality_target=60.0)
    assert acc.slot_costs(report)["quality"] == 100.0
    assert acc.slot_costs({**report, "correct": False})["quality"] == 0.0
    assert acc.slot_costs({k: v for k, v in report.items() if k != "correct"})["quality"] == pytest.approx(64.0)
    assert acc.slot_costs({"lost": True, "snr_est_db": 5.0, "delay_ms": 250.0})["quality"] == pytest.approx(10.0)
    ssim = lyapunov_controller(str(path), quality_metric="ms_ssim_db", quality_target=10.0)
    assert ssim.slot_costs(report)["quality"] == pytest.approx(10.0)
    assert lyapunov_controller(str(path)).slot_costs(report)["quality"] == 25.0
    # the decode time the receiver measures replaces the table's, as a running mean
    assert acc.model.decode_ms(Action(0, 0, 1)) == 3.0 and acc.model.decode_ms(Action(0, 0, 0)) == 2.0
    acc.slot_costs({**report, "decode_ms": 13.0})
    assert acc.model.decode_ms(Action(0, 3, 1)) == pytest.approx(3.5)


def test_the_setup_schema_offers_every_quality_metric():
    """config.py stays free of the controller's imports, so it lists the metrics itself."""
    from gsc_blocks.core.config import SCHEMA
    from gsc_blocks.core.controller import QUALITY_METRICS
    assert SCHEMA["controller"]["quality_metric"]["choices"] == list(QUALITY_METRICS)


def test_v_sweep_plot_places_the_main_run_among_the_sweep(tmp_path):
    from gsc_blocks.bench.control import plot_control
    slots = [{"Z": 0.0, "Y": 1.0, "power_level": k % 3, "quality": 60.0 + k % 2, "energy": 1e-3, "snr_est_db": 10.0}
             for k in range(20)]
    summary = lambda e, met: {"energy_per_image": e, "avg_delay_ms": 9.0, "avg_quality": 67.0,  # noqa: E731
                              "constraints_met": met}
    result = {"V": 1e7, "codec": "swinjscc", "targets": {"delay_ms": 10.0, "quality": 67.0,
                                                         "quality_metric": "accuracy_pct"},
              "policies": {"lyapunov": summary(8e-4, False)},
              "v_sweep": {"1e+06": summary(1.1e-3, True), "1e+08": summary(5e-4, False)}}
    plot_control(result, slots, np.full(20, 10.0), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "c_vsweep.png").stat().st_size > 0


def test_the_loss_width_key_reaches_the_cost_model():
    from gsc_blocks.core.config import load_config
    from gsc_blocks.lyapunov_controller import lyapunov_controller
    repo = Path(__file__).resolve().parents[1]
    setup = load_config(repo / "radio_config" / "zmq_loopback.yaml", {"controller.loss_width_db": 0.25})
    assert setup["controller"]["loss_width_db"] == 0.25
    table = repo / "models" / "deepjscc" / "calibration.json"
    narrow = lyapunov_controller(str(table), loss_snr_db=-3.5, loss_width_db=0.25)
    wide = lyapunov_controller(str(table), loss_snr_db=-3.5)
    assert wide.model.loss_width_db == 0.5 and narrow.model.loss_width_db == 0.25
    # one e-fold of the narrow curve below the midpoint is two of the wide one's
    assert np.isclose(narrow.model.loss_probability(np.array([-3.75]))[0], 1 / (1 + np.exp(-1)))
    assert np.isclose(wide.model.loss_probability(np.array([-4.0]))[0], 1 / (1 + np.exp(-1)))


def test_a_lost_slot_leaves_the_delay_queue_and_feeds_the_loss_queue():
    model = CostModel(TABLE)
    ctrl = LyapunovController(model, TABLE.actions(range(8)), V=1.0, delay_target_ms=5.0, quality_target=25.0,
                              loss_target=0.1)
    ctrl.update(7.0, 26.0)
    assert (ctrl.Z, ctrl.Y, ctrl.L) == (2.0, 0.0, 0.0)
    ctrl.update(250.0, 11.0, lost=True)          # the slot timeout is not a delay
    assert ctrl.Z == 2.0 and ctrl.Y == 14.0 and ctrl.L == pytest.approx(0.9)
    assert ctrl.history[-1] == (ctrl.Z, ctrl.Y, ctrl.L)


def _lossy_run(ctrl, trace, model, seed=0):
    """Slots with losses drawn from the model's loss probability: (loss rate, mean delay of the
    delivered, mean energy)."""
    rng = np.random.default_rng(seed)
    lost_n, delays, energy = 0, [], []
    for snr in trace:
        action = ctrl.decide(snr)
        c = model.costs(action, snr)
        lost = rng.random() < c.loss
        delivered_quality = (c.quality - c.loss * model.lost_quality) / max(1 - c.loss, 1e-9)
        ctrl.update(c.delay_ms, model.lost_quality if lost else delivered_quality, lost)
        lost_n += lost
        energy.append(c.energy)
        if not lost:
            delays.append(c.delay_ms)
    return lost_n / len(trace), float(np.mean(delays)), float(np.mean(energy))


def test_the_loss_target_holds_the_loss_rate_under_rayleigh_fading():
    """On a Rayleigh trace where saving energy costs losses, the loss queue brings the loss rate
    down to near its target (the queue's O(V) build-up over 3000 slots is the rest), and the
    delay of the delivered images stays a delay, not timeouts."""
    trace = jakes_snr_trace(3000, 15.0, 0.01, seed=3)
    model = CostModel(TABLE, loss_snr_db=-3.0, loss_width_db=1.0, lost_quality=11.0)
    actions = TABLE.actions(power_levels=range(8))
    free = LyapunovController(model, actions, V=2e4, delay_target_ms=10.0, quality_target=15.0)
    held = LyapunovController(model, actions, V=2e4, delay_target_ms=10.0, quality_target=15.0, loss_target=0.03)
    loss_free, delay_free, energy_free = _lossy_run(free, trace, model)
    loss_held, delay_held, energy_held = _lossy_run(held, trace, model)
    assert loss_free > 0.10                        # left alone, energy is saved with losses
    assert loss_held < 0.045, loss_held            # held near the target (0.037 here)
    assert energy_held > energy_free               # paid for with power
    assert delay_held < 10.0 and delay_free < 10.0
