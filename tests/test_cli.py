"""The command line as a user types it: scripts/gsc, its subcommands, their --help, their
errors, and the two per-host processes over the ZMQ loopback."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gsc_blocks.apps.run import child_env, free_port

REPO = Path(__file__).resolve().parents[1]
GSC = [str(REPO / "scripts" / "gsc")]
CONFIG = str(REPO / "radio_config" / "zmq_loopback.yaml")
SAMPLES = REPO / "tests" / "data" / "samples"


def gsc(*args, timeout=120, **kwargs):
    return subprocess.run(GSC + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def installed():
    """One call first, so the set-up step (a no-op when done) never runs in two processes at once."""
    result = gsc("--help", timeout=900)
    assert result.returncode == 0, result.stderr


def one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip() and "[gsc]" not in line]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("command, options", [
    ("tx", ["--config", "--images", "--out", "--set", "--linger", "--max-seconds"]),
    ("rx", ["--config", "--out", "--manifest", "--idle", "--max-seconds"]),
    ("train", ["--model", "--epochs", "--out"]),
    ("export", ["--model", "--checkpoint", "--out"]),
    ("train-refiner", ["--codecs", "--epochs", "--export"]),
    ("train-segmenter", ["--width", "--seed", "--epochs", "--out"]),
    ("train-spic", ["--channels", "--seg-weight", "--minutes", "--export"]),
    ("train-sqgan", ["--codes", "--map-codes", "--random-fraction", "--gan-start", "--export"]),
    ("bench", ["--codec", "--snr", "--json"]),
])
def test_help_lists_the_options(command, options):
    result = gsc(command, "--help")
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option in result.stdout, f"{command} --help lacks {option}:\n{result.stdout}"


def test_test_passes_pytest_options_through():
    result = gsc("test", "tests/test_frame.py", "-k", "header_round_trip or crc_rejects")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout and "4 deselected" in result.stdout


def test_bad_option_is_one_line(tmp_path):
    line = one_line_error(gsc("tx", "--config", CONFIG, "--out", tmp_path, "--images", SAMPLES, "--bogus", "1"))
    assert "unrecognized arguments: --bogus 1" in line and "scripts/gsc tx --help" in line
    line = one_line_error(gsc("rx", "--out", tmp_path))
    assert "the following arguments are required: --config" in line


@pytest.mark.parametrize("setting, expected", [
    ("channel.snr_db=[1", "--set 'channel.snr_db=[1': the value is not valid YAML"),
    ("channel.snr_db.x=1", "channel.snr_db is a value, not a section"),
    ("radio.gain=3", "radio is not a section of the setup; the sections are channel"),
    ("channel.snr_db=loud", "key channel.snr_db: value 'loud' is not allowed"),
])
def test_bad_set_is_one_line(tmp_path, setting, expected):
    line = one_line_error(gsc("tx", "--config", CONFIG, "--out", tmp_path, "--images", SAMPLES, "--set", setting))
    assert expected in line


def test_broken_card_is_one_line(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "deepjscc", models / "deepjscc")
    card = json.loads((models / "deepjscc" / "card.json").read_text())
    del card["files"]
    (models / "deepjscc" / "card.json").write_text(json.dumps(card))
    line = one_line_error(gsc("tx", "--config", CONFIG, "--out", tmp_path / "out", "--images", SAMPLES,
                              "--set", f"codec.models_dir={models}"))
    assert "card.json lacks the key files.encoder.path that a codec card needs" in line


def run_pair(tmp_path, images, port):
    """scripts/gsc rx and scripts/gsc tx as two processes with their own folders, as on two hosts."""
    setup = ["--config", CONFIG, "--set", f"zmq.address=tcp://127.0.0.1:{port}", "--set", "channel.snr_db=20"]
    rx = subprocess.Popen(GSC + ["rx", *setup, "--out", str(tmp_path / "rx")], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        tx = gsc("tx", *setup, "--out", tmp_path / "tx", "--images", images, timeout=180)
        rx_out, _ = rx.communicate(timeout=60)     # the receiver ends by itself
    finally:
        rx.kill()
    assert tx.returncode == 0, tx.stdout + tx.stderr
    assert rx.returncode == 0, rx_out
    return tx.stdout, rx_out


def test_tx_and_rx_as_two_processes_deliver_every_image(tmp_path):
    images = sorted(SAMPLES.glob("cifar_*.png"))
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(map(str, images)) + "\n")
    for attempt in (1, 2):      # the second run appends to both folders under a new session id
        tx_out, rx_out = run_pair(tmp_path, listing, free_port())
        assert f"{len(images)} of {len(images)} images sent" in tx_out
        assert json.loads((tmp_path / "tx" / "tx_stats.json").read_text())["stream"] in ("complete", "receiver_closed")
        assert f"{len(images)} images decoded" in rx_out and "ended by the transmitter's end-of-stream frame" in rx_out
        stats = json.loads((tmp_path / "rx" / "rx_stats.json").read_text())
        assert stats["ended"] == "end_of_stream" and stats["images_decoded"] == len(images)
        sent = [json.loads(line) for line in (tmp_path / "tx" / "tx_manifest.jsonl").read_text().splitlines()]
        assert [r["status"] for r in sent] == ["sent"] * len(images) * attempt
        received = [json.loads(line) for line in (tmp_path / "rx" / "received.jsonl").read_text().splitlines()]
        assert sorted((r["session"], r["image_id"]) for r in received) == sorted(
            (r["session"], r["image_id"]) for r in sent)
    assert len({r["session"] for r in sent}) == 2 and len(list((tmp_path / "rx" / "runs").glob("rx-*.json"))) == 2


def test_the_two_link_processes_split_the_cores_for_onnx_runtime_unless_told(monkeypatch):
    monkeypatch.delenv("GSC_ORT_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert child_env()["GSC_ORT_THREADS"] == "1"
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert child_env()["GSC_ORT_THREADS"] == "8"
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert child_env()["GSC_ORT_THREADS"] == "1"
    monkeypatch.setenv("GSC_ORT_THREADS", "3")
    assert child_env()["GSC_ORT_THREADS"] == "3" and child_env()["MALLOC_ARENA_MAX"] == "2"


def test_the_link_processes_run_on_jemalloc_unless_told(monkeypatch, tmp_path):
    """scripts/gsc installs Debian's libjemalloc2; run_link's two processes preload it (and say so
    in their stats), GSC_MALLOC=glibc keeps glibc's malloc, another preload is kept."""
    monkeypatch.delenv("GSC_MALLOC", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert child_env()["LD_PRELOAD"] == "libjemalloc.so.2"
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    assert child_env()["LD_PRELOAD"] == "libjemalloc.so.2:libother.so"
    monkeypatch.setenv("GSC_MALLOC", "glibc")
    assert child_env()["LD_PRELOAD"] == "libother.so"
    monkeypatch.delenv("LD_PRELOAD")
    assert "LD_PRELOAD" not in child_env()
    monkeypatch.delenv("GSC_MALLOC")
    tx = gsc("tx", "--config", CONFIG, "--set", f"zmq.address=tcp://127.0.0.1:{free_port()}", "--out", tmp_path,
             "--images", SAMPLES / "cifar_0_cat.png", "--stall-seconds", 1, timeout=180)
    assert json.loads((tmp_path / "tx_stats.json").read_text())["malloc"] == "jemalloc", tx.stdout + tx.stderr


def test_tx_without_a_receiver_stops_with_the_frame_samples_it_could_not_send(tmp_path):
    """No receiver on the socket: the radio sink takes nothing, and tx says so and exits 1."""
    tx = gsc("tx", "--config", CONFIG, "--set", f"zmq.address=tcp://127.0.0.1:{free_port()}", "--out", tmp_path,
             "--images", SAMPLES / "cifar_0_cat.png", "--stall-seconds", 3, timeout=180)
    assert tx.returncode == 1, tx.stdout + tx.stderr
    assert "frame samples unsent: is a receiver reading" in tx.stderr
    assert "no receiver has taken samples for" in tx.stderr
    assert "the receiver stopped reading" in tx.stdout
    assert json.loads((tmp_path / "tx_stats.json").read_text())["stream"] == "stalled"


def test_rx_without_a_transmitter_says_what_to_check_within_seconds(tmp_path):
    """No transmitter: the receiver keeps listening, and says within 5 s where it listens."""
    port = free_port()
    rx = gsc("rx", "--config", CONFIG, "--set", f"zmq.address=tcp://127.0.0.1:{port}", "--out", tmp_path,
             "--max-seconds", 7, timeout=180)
    assert rx.returncode == 0, rx.stdout + rx.stderr
    assert (f"no frame yet after 5 s: is the transmitter running with the same zmq.address "
            f"(tcp://127.0.0.1:{port})") in rx.stderr
    assert "0 images decoded" in rx.stdout and "ended by --max-seconds 7" in rx.stdout


def test_rx_with_no_usrp_attached_stops_at_once_saying_what_to_check(tmp_path):
    """The B210 setup with no radio on the machine: one line naming the args it looked for and
    how to check the device, exit 2, no traceback."""
    rx = gsc("rx", "--config", REPO / "radio_config" / "usrp_b210.yaml", "--out", tmp_path, timeout=120)
    assert rx.returncode == 2 and "Traceback" not in rx.stderr, rx.stderr
    (line,) = [line for line in rx.stderr.splitlines() if line.startswith("error:")]
    assert "no USRP found for usrp.args 'type=b200'" in line and "uhd_find_devices" in line
