"""The task manager against a bare asyncio semaphore pool: 10,000 tiny tasks, one run.

    python bench/bench_tasks.py [--tasks N] [--workers W]

Both run the same coroutine (one `await asyncio.sleep(0)`) with at most W at
once; the manager also names each task, tracks its state and progress, and
keeps a status. Ratio = msuite throughput / semaphore pool throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from msuite.runtime.tasks import TaskContext, TaskManager


async def tiny(_: TaskContext | None = None) -> None:
    await asyncio.sleep(0)


async def with_manager(count: int, workers: int) -> float:
    tasks = TaskManager(min_workers=workers, max_workers=workers)
    await tasks.start()
    start = time.perf_counter()
    handles = [tasks.submit(tiny) for _ in range(count)]
    for handle in handles:
        await handle.wait()
    elapsed = time.perf_counter() - start
    await tasks.stop()
    return count / elapsed


async def with_semaphore(count: int, workers: int) -> float:
    limit = asyncio.Semaphore(workers)

    async def guarded() -> None:
        async with limit:
            await tiny()

    start = time.perf_counter()
    await asyncio.gather(*(guarded() for _ in range(count)))
    return count / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=20)
    args = parser.parse_args()
    ours = await with_manager(args.tasks, args.workers)
    raw = await with_semaphore(args.tasks, args.workers)
    print(
        f"{args.tasks} tiny tasks, {args.workers} workers: msuite {ours:,.0f}/s   "
        f"semaphore pool {raw:,.0f}/s   ratio {ours / raw:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
