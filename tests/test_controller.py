"""Lyapunov controller core (no GNU Radio): decisions, queues, policies, traces."""
from pathlib import Path

import numpy as np
import pytest

from gsc_blocks.core.controller import (Action, CalibrationTable, CostModel, LyapunovController, fixed_policy,
                                        greedy_policy, jakes_snr_trace, read_trace, write_trace)

SNR = [-10, 0, 5, 10, 15, 20, 30]
TABLE = CalibrationTable({"snr_db": SNR, "rates": {
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
        quality.append(c.quality_db)
        if update:
            update(c.delay_ms, c.quality_db)
    return np.mean(energy), np.mean(delay), np.mean(quality)


def test_table_interpolates_and_checks_shape():
    assert TABLE.quality(1, 0, 12.5) == pytest.approx(26.25)
    assert TABLE.quality(1, 0, 99) == 29
    with pytest.raises(ValueError, match="PSNR values"):
        CalibrationTable({"snr_db": [0, 1], "rates": {"0": {"symbols": 1, "steps": {"0": {"psnr_db": [1],
                                                                                       "decode_ms": 1}}}}})


def test_power_level_lowers_energy_and_effective_snr():
    model = CostModel(TABLE)
    full, low = model.costs(Action(1, 0, 0), 10.0), model.costs(Action(1, 3, 0), 10.0)
    assert low.energy == pytest.approx(full.energy * 10 ** -0.6)
    assert low.quality_db == pytest.approx(TABLE.quality(1, 0, 4.0), abs=1e-3)
    assert low.delay_ms == pytest.approx(full.delay_ms, abs=1e-3)


def test_lyapunov_meets_targets_with_less_energy_than_fixed_max():
    trace = jakes_snr_trace(2000, 12.0, 0.01, seed=1)
    model = CostModel(TABLE, loss_snr_db=-100.0)      # the table alone: no radio losses
    actions = TABLE.actions(power_levels=range(8))
    q_target, d_target = 25.0, 5.0
    ctrl = LyapunovController(model, actions, V=2e4, delay_target_ms=d_target, quality_target_db=q_target)
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
        ctrl = LyapunovController(model, actions, V=V, delay_target_ms=5.0, quality_target_db=25.0)
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
    path.write_text(json.dumps({"snr_db": SNR, "rates": {k: v for k, v in TABLE.rates.items()}}))
    tb = gr.top_block()
    ctrl = lyapunov_controller(str(path), V=2e4, delay_target_ms=5.0, psnr_target_db=25.0, power_levels=range(8))
    commands, states = blocks.message_debug(), blocks.message_debug()
    tb.msg_connect(ctrl, "command", commands, "store")
    tb.msg_connect(ctrl, "state", states, "store")
    tb.start()
    reports = [(15.0, 26.0), (15.0, 20.0), (15.0, 20.0), (15.0, 20.0)]   # then quality falls short
    for snr, quality in reports:
        ctrl.to_basic_block()._post(pmt.intern("report"),
                                    pmt.to_pmt({"snr_db": snr, "delay_ms": 4.0, "quality_db": quality}))
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


def test_cost_model_expects_loss_below_the_loss_snr():
    model = CostModel(TABLE, loss_snr_db=-3.5, lost_quality_db=11.0, lost_delay_ms=1000.0)
    assert model.loss_probability(-3.5) == 0.5
    assert model.loss_probability(-5.0) > 0.95 and model.loss_probability(-2.0) < 0.05
    lost = model.costs(Action(0, 7, 0), 8.0)           # 8 - 14 dB = -6 dB effective
    assert abs(lost.quality_db - 11.0) < 0.1 and lost.delay_ms > 990
    kept = model.costs(Action(0, 5, 0), 10.0)          # 0 dB effective
    assert abs(kept.quality_db - TABLE.quality(0, 0, 0.0)) < 0.01 and kept.delay_ms < 10
    # more power always buys back expected quality, even deep in a fade
    assert model.costs(Action(0, 0, 0), -6.0).quality_db > model.costs(Action(0, 1, 0), -6.0).quality_db


def test_fixed_policy_and_first_command_use_the_full_rate_whatever_its_index(tmp_path):
    """deepjscc_sr numbers its rates from full (0) down; the fixed policy and the first command
    (nothing known of the channel yet) take the rate with the most symbols, unless told otherwise."""
    import json

    from gsc_blocks.lyapunov_controller import lyapunov_controller
    sr = {"snr_db": SNR, "rates": {"0": TABLE.rates[1], "4": TABLE.rates[0]}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(sr))
    fixed = lyapunov_controller(str(path), policy="fixed", fixed_power_level=2, power_levels=range(4))
    assert fixed.fixed == Action(0, 2, 4) and fixed.initial_command()["rate_index"] == 0
    assert lyapunov_controller(str(path), power_levels=range(4)).initial_command() == \
        {"rate_index": 0, "power_level": 0, "refine_steps": 4}
    half = lyapunov_controller(str(path), policy="fixed", fixed_rate_index=4, power_levels=range(4))
    assert half.fixed.rate_index == 4
    with pytest.raises(ValueError, match=r"fixed_rate_index 3: the calibration table has rates \[0, 4\]"):
        lyapunov_controller(str(path), policy="fixed", fixed_rate_index=3)


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
    assert bound["feasible"] and bound["avg_psnr_db"] >= 22.0 and bound["avg_delay_ms"] <= 10.0
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
    """The closed loop runs with any shipped JSCC codec: its table covers every rate, fewer groups
    mean fewer symbols, and quality rises with SNR."""
    from gsc_blocks.core.codec import JSCCCodec
    models = Path(__file__).resolve().parents[1] / "models"
    table = CalibrationTable.load(models / codec / "calibration.json")
    rates = JSCCCodec(codec, models).rate_count
    assert sorted(table.rates) == list(range(rates))
    assert [table.symbols(r) for r in range(rates)] == sorted((table.symbols(r) for r in range(rates)), reverse=True)
    assert table.quality(0, 0, 0.0) < table.quality(0, 0, 10.0) < table.quality(0, 0, 20.0)
