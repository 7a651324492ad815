"""A message block's one background thread, run between the flowgraph's start() and stop()."""
import threading


class background_worker:
    """Mixin for a gr.basic_block that sets self._stop = threading.Event() in its __init__:
    start() runs self._work() in a daemon thread, stop() sets self._stop, on which _work()
    waits (self._stop.wait(interval) is True once the flowgraph stops)."""

    def _work(self):
        raise NotImplementedError

    def start(self):
        self._stop.clear()
        threading.Thread(target=self._work, daemon=True).start()
        return True

    def stop(self):
        self._stop.set()
        return True
