"""An asyncio worker: jobs from a queue, each handled under its own span.

    otel-alloc run --mode live examples/async_worker.py

Several jobs are in flight at once on one thread; each job's bytes are
charged to its own span even though the tasks interleave at every await.
"""

from __future__ import annotations

import asyncio
import sys

from opentelemetry import trace

tracer = trace.get_tracer("examples.async_worker")
JOB_KINDS = {"thumbnail": 200_000, "report": 2_000_000, "ping": 1_000}


async def handle(kind: str, size: int) -> int:
    with tracer.start_as_current_span(f"job {kind}"):
        chunks = []
        for _ in range(10):  # allocate in steps, yielding to other jobs in between
            chunks.append(bytes(size // 10))
            await asyncio.sleep(0)
        return sum(len(c) for c in chunks)


async def worker(queue: asyncio.Queue[str | None]) -> None:
    while (kind := await queue.get()) is not None:
        await handle(kind, JOB_KINDS[kind])


async def main(jobs: int, concurrency: int = 4) -> None:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    kinds = list(JOB_KINDS)
    for i in range(jobs):
        queue.put_nowait(kinds[i % len(kinds)])
    for _ in range(concurrency):
        queue.put_nowait(None)
    await asyncio.gather(*(worker(queue) for _ in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 60))
