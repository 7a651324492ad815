"""A message block's one background thread, run between the flowgraph's start() and stop()."""
import queue
import threading


def take_batch(pending: queue.Queue, limit: int) -> list:
    """The next item of `pending` (waiting for it) and those queued behind it, up to `limit` in
    all; a None (the stop mark) ends the batch and is kept as its last item."""
    items = [pending.get()]
    while items[-1] is not None and len(items) < limit:
        try:
            items.append(pending.get_nowait())
        except queue.Empty:
            break
    return items


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
