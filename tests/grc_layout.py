"""Block extents as gnuradio-companion draws them (its GTK canvas, under Xvfb): run as a
script on flowgraphs, prints one line per pair of blocks that overlap and 'checked NAME N'
per flowgraph. tests/test_grc_gui.py runs it."""
import os
import sys

import gi

gi.require_version("Gtk", "3.0")
gi.require_version("PangoCairo", "1.0")
from gi.repository import Gio, Gtk  # noqa: E402
from gnuradio import gr  # noqa: E402
from gnuradio.grc.gui.canvas import flowgraph as canvas_flowgraph  # noqa: E402
from gnuradio.grc.gui.Platform import Platform  # noqa: E402

# The canvas asks for GRC's main window (for its context menu); there is none here.
canvas_flowgraph._ContextMenu = lambda *args, **kwargs: None


def main(paths):
    app = Gtk.Application(application_id="org.grgsc.layout", flags=Gio.ApplicationFlags.NON_UNIQUE)
    app.register(None)
    app.set_default()
    platform = Platform(version=gr.version(), prefs=gr.prefs(), install_prefix=gr.prefix(),
                        version_parts=(gr.major_version(), gr.api_version(), gr.minor_version()))
    platform.build_library()
    for path in paths:
        flowgraph = platform.make_flow_graph(path)
        boxes = []
        for block in flowgraph.blocks:
            block.create_labels()
            block.create_shapes()
            boxes.append((block.name, *block.get_extents()))
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]:
                    print(f"OVERLAP {os.path.basename(path)}: {a[0]} {a[1:]} and {b[0]} {b[1:]}")
        print(f"checked {os.path.basename(path)} {len(boxes)}")


if __name__ == "__main__":
    main(sys.argv[1:])
