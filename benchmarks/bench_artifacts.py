"""Write and read a checkpoint-sized object through each artifact store: MB/s, and how much memory a
write and a read add beyond the object itself (the object store must not hold a checkpoint twice).

Stores: the local folder (a temporary one) and the S3 store, on --s3-endpoint (MinIO, AWS; credentials
from LETHE_S3_* / AWS_*) or else on moto's server mode started here on a free loopback port (a Python
server: its MB/s says little about MinIO, its memory figures are the client's alone). Memory: how far this
process's peak RSS rose during the call above where holding the object once had already put it, in MB;
about 0 means no second copy was made, about the object's size means one was. One JSON line per store:

    python benchmarks/bench_artifacts.py [--mb 45] [--repeat 3] [--s3-endpoint URL --bucket NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.artifacts import ArtifactStore, LocalStore
from core.objectstore import S3Store


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def moto() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def s3_store(endpoint: str, bucket: str | None) -> S3Store:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("LETHE_S3_REGION") or "us-east-1",
        aws_access_key_id=os.environ.get("LETHE_S3_ACCESS_KEY_ID")
        or os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
        aws_secret_access_key=os.environ.get("LETHE_S3_SECRET_ACCESS_KEY")
        or os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
    )
    if bucket is None:
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=bucket)
    return S3Store(client, bucket, f"bench/{uuid.uuid4().hex[:8]}")


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """Seconds the call took and the MB its peak RSS grew by."""
    before = peak_mb()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start, max(0.0, peak_mb() - before)


def measure(name: str, store: ArtifactStore, mb: int, repeat: int) -> dict:
    writes, reads, write_growth, read_growth = [], [], [], []
    for i in range(repeat):
        key = f"models/bench-{i}/model.safetensors"
        data = os.urandom(mb * 1024 * 1024)
        seconds, grew = timed(lambda key=key, data=data: store.write_bytes(key, data))
        writes.append(seconds)
        write_growth.append(grew)
        del data  # the read then starts with no copy of the object in this process
        back: list[bytes] = []
        seconds, grew = timed(lambda key=key, back=back: back.append(store.read_bytes(key)))
        assert len(back[0]) == mb * 1024 * 1024
        back.clear()
        reads.append(seconds)
        read_growth.append(grew)
    return {
        "bench": "artifacts",
        "store": name,
        "object_mb": mb,
        "repeat": repeat,
        "write_mb_per_s": round(mb / statistics.median(writes), 1),
        "read_mb_per_s": round(mb / statistics.median(reads), 1),
        "write_peak_rss_growth_mb": round(max(write_growth), 1),
        "read_peak_rss_growth_mb": round(max(read_growth), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=45, help="object size (a CIFAR ResNet-18 checkpoint: 45)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--s3-endpoint", default="", help="an S3-compatible endpoint; default: moto, started here"
    )
    parser.add_argument("--bucket", default=None, help="an existing bucket there; default: a new one")
    args = parser.parse_args()
    # The object store first: peak RSS only grows, so a later store's growth would hide behind an earlier one.
    if args.s3_endpoint:
        print(
            json.dumps(measure("s3", s3_store(args.s3_endpoint, args.bucket), args.mb, args.repeat)),
            flush=True,
        )
    else:
        with moto() as endpoint:
            record = measure("s3 (moto)", s3_store(endpoint, None), args.mb, args.repeat)
            print(json.dumps(record), flush=True)
    with tempfile.TemporaryDirectory() as root:
        print(json.dumps(measure("local", LocalStore(Path(root)), args.mb, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
