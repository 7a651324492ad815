"""Lyapunov controller core (no GNU Radio): decisions, queues, policies, traces."""
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
    assert low.quality_db == pytest.approx(TABLE.quality(1, 0, 4.0))
    assert low.delay_ms == full.delay_ms


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
    model = CostModel(TABLE, loss_snr_db=-1.0, lost_quality_db=11.0, lost_delay_ms=1000.0)
    lost = model.costs(Action(0, 7, 0), 10.0)          # 10 - 14 dB = -4 dB effective
    assert lost.quality_db == 11.0 and lost.delay_ms == 1000.0
    kept = model.costs(Action(0, 5, 0), 10.0)          # 0 dB effective
    assert kept.quality_db == TABLE.quality(0, 0, 0.0) and kept.delay_ms < 10
