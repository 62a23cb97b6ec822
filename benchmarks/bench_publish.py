"""CPU per job message published to Redis: one send_task at a time (the usual way) against the dispatcher's
batches of 1, 4 and 32 (core.queue.send_batch: one pooled producer, one pipeline, task-sent events included).

Publishes to a queue of its own on LETHE_BENCH_BROKER_URL (else the local test Redis), deletes it after,
and prints one JSON line per way with the process CPU (user + system, load-independent) per message.

    python benchmarks/bench_publish.py [--messages 640]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import LOCAL_BROKER_URL, machine, reachable  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=640, help="messages per way")
    args = parser.parse_args()
    broker = os.environ.get("LETHE_BENCH_BROKER_URL", "") or LOCAL_BROKER_URL
    if not reachable(broker):
        print(json.dumps({"bench": "publish", "skipped": f"no Redis answers at {broker}"}))
        return
    os.environ["LETHE_BROKER_URL"] = broker
    os.environ["LETHE_QUEUE"] = f"lethe-bench-publish-{uuid.uuid4().hex[:8]}"
    import redis

    from core.queue import publish_job, send_batch, worker_queues

    send_batch([("warm-up", "unlearn")])  # connects and declares the queues
    ways: list[tuple[str, int | None]] = [
        ("send_task one at a time", None),
        *(("dispatcher batch", n) for n in (1, 4, 32)),
    ]
    try:
        for way, size in ways:
            sent, start = 0, time.process_time()
            while sent < args.messages:
                if size is None:
                    publish_job(f"{way}-{sent}", "unlearn")
                    sent += 1
                else:
                    send_batch([(f"{size}-{sent + i}", "unlearn") for i in range(size)])
                    sent += size
            cpu_us = (time.process_time() - start) / sent * 1e6
            print(
                json.dumps(
                    {
                        "bench": "publish",
                        **machine(),
                        "way": way,
                        "batch": size,
                        "messages": sent,
                        "cpu_us_per_message": round(cpu_us),
                    }
                )
            )
    finally:
        redis.Redis.from_url(broker).delete(*worker_queues())


if __name__ == "__main__":
    main()
