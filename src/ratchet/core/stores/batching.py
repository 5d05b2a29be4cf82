"""Batching across threads: many threads' requests served by one database round trip.

A runner serving many clients at once would otherwise run one transaction a call, and the calls queue
on the database's write lock (SQLite has one; on PostgreSQL each commit waits for its own WAL flush);
and it would run one query a call to find the decisions a new conversation already has. With a
:class:`Batcher`, the first caller to arrive becomes the *leader*: it takes every request queued so
far, runs them as one batch (one transaction: *group commit*; one query), hands each caller its
answer, and passes leadership to the first caller that queued while it was working. No extra thread
and no timer: a lone caller runs at once, and under load a batch is whatever arrived during the
previous one (the scheme of LevelDB's writer queue and of databases' group commit).

A caller returns only when its own request is done, so a write is committed before its caller goes
on. If a batch fails, each of its requests is run again alone, so one bad request fails only its own
caller.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any


class _Waiter:
    __slots__ = ("request", "done", "lead", "result", "error", "wake")

    def __init__(self, request: Any):
        self.request = request
        self.done = False  # answered (``result``) or failed (``error``)
        self.lead = False  # woken to run the next batch
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()  # held until the waiter may go on: a bare lock is the cheapest wait
        self.wake.acquire()


class Batcher:
    """Serialise ``run(requests)`` calls across threads, batching the requests that queue meanwhile.

    :param run: serves a list of requests in one round trip and returns one result per request (in
        order), or raises.
    :param max_batch: the most requests one batch takes.
    """

    def __init__(self, run: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 512):
        self._run = run
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()

    def submit(self, request: Any) -> Any:
        """Serve ``request`` (in a batch with others' requests); return its result or raise its error."""
        me = _Waiter(request)
        with self._lock:
            self._queue.append(me)
            me.lead = len(self._queue) == 1  # nobody at work: lead at once
        if not me.lead:
            me.wake.acquire()
        if not me.done:  # woken (or born) to lead: run a batch that starts with our own request
            self._lead()
        if me.error is not None:
            raise me.error
        return me.result

    def _lead(self) -> None:
        with self._lock:
            batch = [self._queue[i] for i in range(min(len(self._queue), self._max_batch))]
        try:
            self._serve(batch)
        except BaseException as exc:  # interrupted mid-batch: nobody in it may think it was served
            for waiter in batch:
                waiter.error = waiter.error or exc
            raise
        finally:
            with self._lock:
                for _ in batch:
                    self._queue.popleft()
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.lead = True
            for waiter in batch:  # each still holds its lock: only a leader's finish releases one
                waiter.done = True
                waiter.wake.release()
            if successor is not None:
                successor.wake.release()

    def _serve(self, batch: list[_Waiter]) -> None:
        try:
            results = self._run([w.request for w in batch])
        except Exception as exc:  # noqa: BLE001 -- run again alone below, then reported to its caller
            if len(batch) == 1:
                batch[0].error = exc
                return
        else:
            for waiter, result in zip(batch, results, strict=True):
                waiter.result = result
            return
        for waiter in batch:
            try:
                (waiter.result,) = self._run([waiter.request])
            except Exception as exc:  # noqa: BLE001 -- raised in the caller's thread
                waiter.error = exc
