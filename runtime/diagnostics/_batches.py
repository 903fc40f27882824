"""The span queue both exporters share: spans in on the node's loop, batches out on a thread."""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

__all__ = ["BatchThread"]

T = TypeVar("T")


class BatchThread(Generic[T]):
    """A bounded queue drained in batches by a thread of its own.

    :meth:`offer` (on the node's loop, as a span ends) only appends to a deque:
    no lock, no wake-up per item. The thread wakes every ``flush_interval``
    seconds, or when a batch is full, and hands batches of up to ``batch_size``
    to :meth:`_send`. Items over ``queue_limit`` are dropped and counted in
    ``dropped``; :meth:`_send` counts the rest as ``sent`` or ``failed``.
    """

    def __init__(self, name: str, *, flush_interval: float, batch_size: int, queue_limit: int) -> None:
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.queue_limit = queue_limit
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._queue: collections.deque[T] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, item: T) -> None:
        queue = self._queue
        if len(queue) >= self.queue_limit:
            self.dropped += 1
            return
        queue.append(item)
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def _finish(self, timeout: float) -> bool:
        """Send what is queued and end the thread; False when ``timeout`` ran out first."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _send(self, batch: list[T]) -> None:
        raise NotImplementedError

    def _running(self) -> None:
        """The thread's loop (:meth:`_run` may wrap it)."""
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping
            while self._queue:
                batch: list[T] = []
                while self._queue and len(batch) < self.batch_size:
                    batch.append(self._queue.popleft())
                self._send(batch)
            if stopping:
                return

    def _run(self) -> None:
        self._running()
