"""Dynamic batching: requests that arrive together are processed in one call.

A single worker takes the first waiting request, lets others join it for a few milliseconds or until
the batch is full, and hands the whole batch to a processing function running in its own thread
(one forward pass for all of them). While that runs, new requests queue up and form the next batch,
so batches grow, and throughput with them, as concurrency rises.

One bad request cannot fail the others: when a batch fails, each of its requests is processed again on
its own, so only those that fail alone get an error (each its own).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import BatchResultError, ServingSettingsError

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")

logger = logging.getLogger(__name__)


@dataclass
class _Pending(Generic[RequestT, ResultT]):
    request: RequestT
    future: asyncio.Future[ResultT]


class DynamicBatcher(Generic[RequestT, ResultT]):
    """Collect concurrent requests into batches for ``process_batch``.

    Args:
        process_batch: maps a list of requests to their results, in order; it runs in a dedicated
            thread, one batch at a time, so it may block (a model forward pass).
        max_batch_size: most requests per batch.
        max_wait_ms: how long the first request of a batch waits for more to arrive.
        history: how many recent batch sizes ``batch_sizes`` keeps.
        request_errors: exception types that are a request's own fault (a query the model rejects):
            logged without a traceback when a request fails alone with one.

    Raises:
        ServingSettingsError: ``max_batch_size`` is not positive.

    Example:
        >>> async def demo():
        ...     batcher = DynamicBatcher(lambda texts: [t.upper() for t in texts], max_batch_size=8)
        ...     await batcher.start()
        ...     results = await asyncio.gather(*(batcher.submit(t) for t in ["a", "b", "c"]))
        ...     await batcher.stop()
        ...     return results, list(batcher.batch_sizes)
        >>> asyncio.run(demo())
        (['A', 'B', 'C'], [3])

        A request that fails alone fails alone (here "b"); its batch-mates get their results:

        >>> def shout(texts):
        ...     if "b" in texts:
        ...         raise ValueError("no b")
        ...     return [t.upper() for t in texts]
        >>> async def isolated():
        ...     batcher = DynamicBatcher(shout, max_batch_size=8)
        ...     await batcher.start()
        ...     results = await asyncio.gather(*(batcher.submit(t) for t in "abc"), return_exceptions=True)
        ...     await batcher.stop()
        ...     return results
        >>> asyncio.run(isolated())
        ['A', ValueError('no b'), 'C']
    """

    def __init__(
        self,
        process_batch: Callable[[list[RequestT]], Sequence[ResultT]],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        history: int = 1000,
        request_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        if max_batch_size < 1:
            raise ServingSettingsError(f"max_batch_size must be positive, got {max_batch_size}")
        self.process_batch = process_batch
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_ms / 1000
        self.request_errors = request_errors
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=history)
        self.num_batches = 0
        self.num_requests = 0
        self._queue: asyncio.Queue[_Pending[RequestT, ResultT]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        """Start the worker on the running event loop."""
        if self.running:
            return
        self._queue = asyncio.Queue()
        # One thread: batches run one after another, never two forward passes at once.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flmr-batch")
        self._worker = asyncio.create_task(self._run(), name="flmr-dynamic-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still waiting fail with ``RuntimeError``."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._queue is not None:
            waiting = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
            _fail(waiting, RuntimeError("the batcher stopped"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, request: RequestT) -> ResultT:
        """Queue one request and wait for its result (or the exception its batch raised)."""
        return (await self.submit_many([request]))[0]

    async def submit_many(self, requests: Sequence[RequestT]) -> list[ResultT]:
        """Queue several requests at once (they share a batch when they fit) and wait for all results."""
        if not self.running or self._queue is None:
            raise RuntimeError("the batcher is not running: call start() first")
        loop = asyncio.get_running_loop()
        futures = []
        for request in requests:
            future: asyncio.Future[ResultT] = loop.create_future()
            self._queue.put_nowait(_Pending(request, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        while True:
            batch = await self._collect_batch()
            # A client that went away cancelled its future: its query is not worth encoding.
            batch = [pending for pending in batch if not pending.future.done()]
            if batch:
                await self._process(batch)

    async def _process(self, batch: list[_Pending[RequestT, ResultT]]) -> None:
        self.batch_sizes.append(len(batch))
        self.num_batches += 1
        self.num_requests += len(batch)
        try:
            results = await self._run_batch([pending.request for pending in batch])
        except asyncio.CancelledError:
            _fail(batch, RuntimeError("the batcher stopped"))
            raise
        except Exception as error:
            if len(batch) == 1 or isinstance(error, BatchResultError):
                self._log_failure(error)
                _fail(batch, error)
                return
            # Some request spoils the batch: each runs on its own, so only the bad ones fail.
            logger.warning("a batch of %d requests failed (%s); running them one by one", len(batch), error)
            for pending in batch:
                if not pending.future.done():
                    await self._process_alone(pending)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def _process_alone(self, pending: _Pending[RequestT, ResultT]) -> None:
        try:
            result = (await self._run_batch([pending.request]))[0]
        except asyncio.CancelledError:
            _fail([pending], RuntimeError("the batcher stopped"))
            raise
        except Exception as error:  # this request's caller gets the error; the worker goes on
            self._log_failure(error)
            _fail([pending], error)
            return
        if not pending.future.done():
            pending.future.set_result(result)

    async def _run_batch(self, requests: list[RequestT]) -> Sequence[ResultT]:
        results = await asyncio.get_running_loop().run_in_executor(
            self._executor, self.process_batch, requests
        )
        if len(results) != len(requests):
            raise BatchResultError(
                f"process_batch returned {len(results)} results for {len(requests)} requests"
            )
        return results

    def _log_failure(self, error: Exception) -> None:
        if isinstance(error, self.request_errors):
            logger.info("a request was refused: %s", error)
        else:
            logger.error("a request failed", exc_info=error)

    async def _collect_batch(self) -> list[_Pending[RequestT, ResultT]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_seconds
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
