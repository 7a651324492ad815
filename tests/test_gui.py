"""The loopback flowgraph's live GUI, run headless (Qt's offscreen platform) through
scripts/gsc gui: its image display shows received images, with PSNR, and the
screenshot of its tabs is written."""
import re
import subprocess
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_loopback_gui_shows_received_images_headless(tmp_path):
    shot = tmp_path / "gui.png"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([str(REPO / "scripts" / "gsc"), "gui", "--seconds", "10", "--out", str(shot)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    found = re.search(r"display: (\d+) images shown, last image \d+ at ([\d.]+) dB", result.stdout)
    assert found, result.stdout[-2000:]
    assert int(found.group(1)) >= 3                      # the paced loop keeps sending
    assert 18.0 < float(found.group(2)) < 45.0           # a CIFAR image through 10 dB: about 26 dB
    width, height = Image.open(shot).size
    assert width >= 800 and height >= 3 * 500            # three tabs, stacked
