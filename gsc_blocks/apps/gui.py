"""Run a QT GUI flowgraph of this module for a while, headless or not, and save a screenshot.

    scripts/gsc gui [--flowgraph flowgraphs/gsc_loopback.grc] [--seconds 20] [--out docs/gui_loopback.png]

grcc compiles the flowgraph (with the [GSC] blocks scripts/gsc installed), the
generated top block runs in this process for the given time, and its window is
saved as a PNG. Without a display, Qt's offscreen platform draws it.
"""
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def compile_flowgraph(grc: Path, out_dir: Path) -> Path:
    result = subprocess.run(["grcc", "-o", str(out_dir), str(grc)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"grcc could not compile {grc}:\n{result.stdout}{result.stderr}")
    generated = sorted(out_dir.glob("*.py"))
    if not generated:
        raise RuntimeError(f"grcc wrote no Python for {grc}")
    return generated[0]


def run_gui(grc, seconds=20.0, screenshot=None, size=(1100, 640)) -> dict:
    """Run the flowgraph's top block for `seconds`; save its window to `screenshot`. Returns what
    its image displays showed: {block name: {"images_shown": n, "last": (image id, PSNR)}}. The
    screenshot stacks the window once per tab of its tab widget."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5 import Qt, QtCore
    from ..image_display import image_display
    grc = Path(grc).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        module_path = compile_flowgraph(grc, Path(tmp))
        spec = importlib.util.spec_from_file_location(module_path.stem, module_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    app = Qt.QApplication.instance() or Qt.QApplication(sys.argv[:1])
    top = getattr(module, module_path.stem)()
    top.resize(*size)
    top.start()
    top.show()
    shown = {}

    def finish():
        if screenshot:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            _grab_tabs(top, app).save(str(screenshot))
        for name, block in vars(top).items():
            if isinstance(block, image_display):
                shown[name] = {"images_shown": block.images_shown, "last": block.last}
        top.stop()
        top.wait()
        app.quit()

    QtCore.QTimer.singleShot(int(seconds * 1000), finish)
    app.exec_()
    return shown


def _grab_tabs(top, app):
    """The window, once per tab of its first tab widget, stacked top to bottom."""
    from PyQt5 import Qt
    tabs = next((w for w in vars(top).values() if isinstance(w, Qt.QTabWidget)), None)
    if tabs is None:
        return top.grab()
    shots = []
    for i in range(tabs.count()):
        tabs.setCurrentIndex(i)
        app.processEvents()
        shots.append(top.grab())
    tabs.setCurrentIndex(0)
    sheet = Qt.QPixmap(max(s.width() for s in shots), sum(s.height() for s in shots))
    sheet.fill(Qt.QColor("white"))
    painter, y = Qt.QPainter(sheet), 0
    for shot in shots:
        painter.drawPixmap(0, y, shot)
        y += shot.height()
    painter.end()
    return sheet


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flowgraph", default=str(REPO / "flowgraphs" / "gsc_loopback.grc"))
    p.add_argument("--seconds", type=float, default=20.0, help="how long it runs before the screenshot")
    p.add_argument("--out", default=str(REPO / "out" / "gui.png"), help="the screenshot (PNG)")
    args = p.parse_args(argv)
    shown = run_gui(args.flowgraph, args.seconds, args.out)
    for name, state in shown.items():
        last = state["last"]
        psnr = f", last image {last[0]} at {last[1]:.2f} dB" if last and last[1] is not None else ""
        print(f"{name}: {state['images_shown']} images shown{psnr}")
    print(f"screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
