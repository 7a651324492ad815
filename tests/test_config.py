"""radio_config: every shipped file validates; bad keys and values are named."""
from pathlib import Path

import pytest

from gsc_blocks.core.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "radio_config").glob("*.yaml"))


def test_three_setups_ship():
    assert {p.stem for p in CONFIGS} >= {"zmq_loopback", "usrp_b210", "usrp_x310"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path):
    config = load_config(path)
    assert config["link"] in ("zmq", "usrp")
    assert config["ofdm"]["fft_len"] == 64


def test_zmq_binds_loopback_by_default():
    assert "127.0.0.1" in load_config(CONFIGS[-1].parent / "zmq_loopback.yaml")["zmq"]["address"]


@pytest.mark.parametrize("text, message", [
    ("channel:\n  snr_dB: 5\n", "unknown key channel.snr_dB: allowed keys here are"),
    ("channel:\n  snr_db: loud\n", "key channel.snr_db: value 'loud' is not allowed: expected a number between -20 and 80"),
    ("ofdm:\n  cp_len: 16.5\n", "key ofdm.cp_len: value 16.5 is not allowed: expected an integer"),
    ("link: wifi\n", "key link: value 'wifi' is not allowed: expected one of zmq, usrp"),
    ("channel:\n  fading: jakes\n", "expected one of none, rayleigh, rician"),
    ("channel:\n  multipath_taps: [1, [0.2]]\n", "each a number or [re, im]"),
    ("ofdm: 3\n", "ofdm must be a mapping"),
    ("channel: [\n", "not valid YAML"),
    ("ofdm:\n  cfo_search: 0.1\nchannel:\n  cfo: 0.3\n",
     "key channel.cfo: value 0.3 is outside ofdm.cfo_search 0.1: the receiver would find no frame; "
     "set ofdm.cfo_search to at least 0.3"),
    ("ofdm:\n  cfo_search: 1.5\n", "key ofdm.cfo_search: value 1.5 is not allowed: expected a number between 0.0 and 1.0"),
])
def test_bad_values_are_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_override_is_validated(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: x\n")
    assert load_config(path, {"channel.snr_db": 3})["channel"]["snr_db"] == 3.0
    with pytest.raises(ConfigError, match="channel.snr_db"):
        load_config(path, {"channel.snr_db": 500})


def test_channel_cfo_within_the_receivers_search_is_accepted(tmp_path):
    loopback = CONFIGS[-1].parent / "zmq_loopback.yaml"
    assert load_config(loopback)["ofdm"]["cfo_search"] == 0.1
    assert load_config(loopback, {"channel.cfo": -0.1})["channel"]["cfo"] == -0.1
    with pytest.raises(ConfigError, match="set ofdm.cfo_search to at least 0.5"):
        load_config(loopback, {"channel.cfo": -0.5})
    config = load_config(loopback, {"channel.cfo": -0.5, "ofdm.cfo_search": 0.5})
    assert config["channel"]["cfo"] == -0.5
    path = tmp_path / "usrp.yaml"          # over the air the channel section is not used: no check
    path.write_text("link: usrp\nofdm:\n  cfo_search: 0.1\nchannel:\n  cfo: 0.5\n")
    assert load_config(path)["link"] == "usrp"
