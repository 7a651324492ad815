"""CMake installs the package, block files and models; grcc compiles every flowgraph
against the installed blocks, and the installed package imports from the prefix."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    if not shutil.which("cmake") or not shutil.which("grcc"):
        pytest.skip("cmake and grcc are needed (scripts/gsc installs them)")
    build = tmp_path_factory.mktemp("build")
    prefix = tmp_path_factory.mktemp("prefix")
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, text=True)
    run("cmake", "-S", str(REPO), "-B", str(build), "-DPYTHON_EXECUTABLE=/usr/bin/python3")
    run("cmake", "--build", str(build))
    run("cmake", "--install", str(build), "--prefix", str(prefix))
    return prefix


def test_install_layout(prefix):
    blocks = prefix / "share" / "gnuradio" / "grc" / "blocks"
    names = {p.name for p in blocks.iterdir()}
    assert "gsc.tree.yml" in names
    assert {f"gsc_{b}.block.yml" for b in ("image_source", "semantic_encoder", "ofdm_analog_tx", "ofdm_analog_rx",
                                          "semantic_decoder", "image_sink", "channel", "lyapunov_controller")} <= names
    site = next(prefix.glob("lib/python3*/site-packages"))
    assert (site / "gsc_blocks" / "ofdm_analog_rx.py").is_file()
    assert (prefix / "share" / "gsc" / "models" / "deepjscc" / "card.json").is_file()
    assert (prefix / "share" / "gsc" / "models" / "deepjscc" / "calibration.json").is_file()
    assert not (prefix / "share" / "gsc" / "models" / "gsc_models").exists()


def test_installed_package_imports_from_prefix(prefix, tmp_path):
    site = next(prefix.glob("lib/python3*/site-packages"))
    code = ("import gsc_blocks.ofdm_analog_tx as m, gsc_blocks.core.models as c; print(m.__file__); "
            "print(c.find_model('deepjscc'))")
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert str(site) in out.stdout


@pytest.mark.parametrize("grc", sorted((REPO / "flowgraphs").glob("*.grc")), ids=lambda p: p.stem)
def test_grcc_compiles_with_installed_blocks(prefix, grc, tmp_path):
    env = dict(os.environ, GRC_BLOCKS_PATH=str(prefix / "share" / "gnuradio" / "grc" / "blocks"))
    result = subprocess.run(["grcc", "-o", str(tmp_path), str(grc)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    generated = tmp_path / f"{grc.stem}.py"
    assert generated.is_file() and "gsc_blocks" in generated.read_text()
