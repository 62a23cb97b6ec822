"""profile_api's reading of py-spy's collapsed stacks: waits are not CPU, parts count inclusively."""

from __future__ import annotations

import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from profile_api import breakdown

STACKS = "\n".join(
    [
        # a worker thread running the route through a Session: flush, then its wait for Postgres
        "Thread 1 (idle);_bootstrap_inner (threading.py:1);_run_sync_endpoint (routing.py:2);"
        "Session.flush (session.py:3);do_execute (default.py:4) 6",
        "Thread 1;_bootstrap_inner (threading.py:1);_run_sync_endpoint (routing.py:2);"
        "Session.commit (session.py:5);Connection.wait (connection.py:6) 50",
        # the event loop: the key check, and uvicorn sending an answer
        "Thread 2;Runner.run (runners.py:7);get_tenant (deps.py:8);check_rate (limits.py:9) 2",
        "Thread 2;Runner.run (runners.py:7);RequestResponseCycle.send (httptools_impl.py:10) 2",
        "Thread 3;_bootstrap_inner (threading.py:1);Queue.get (queue.py:11);Condition.wait (threading.py:12) 40",
    ]
)


def test_waits_are_left_out_and_each_part_counts_every_sample_under_it() -> None:
    result = breakdown(STACKS, top=2)
    assert result["samples"] == 10  # the 90 samples of waiting threads are not CPU
    assert result["share_inclusive"] == {
        "route in a worker thread (Session)": 0.6,
        "flush and commit": 0.6,
        "API key and rate limit": 0.2,
        "event loop outside the route and the key check": 0.2,
    }
    assert result["top_own"] == [("do_execute (default.py)", 0.6), ("check_rate (limits.py)", 0.2)]
