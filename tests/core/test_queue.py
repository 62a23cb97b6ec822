"""The Celery app's broker settings."""

from __future__ import annotations

import os

import pytest
from kombu import Queue
from kombu.transport import sqlalchemy as sqla_transport

from core.fanout import FANOUT_KINDS
from core.queue import EVALUATE_KINDS, get_celery, parse_roles, queue_for, queue_length, worker_queues
from tests.utils import configure


def _require_redis() -> str:
    url = os.environ.get("LETHE_TEST_BROKER_URL", "")
    if not url:
        pytest.skip("LETHE_TEST_BROKER_URL is not set")
    return url


def test_embedded_broker_is_polled_at_the_configured_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(sqla_transport.Transport, "polling_interval", 1.0)
    configure(monkeypatch, home=tmp_path, broker_poll_seconds=0.25)
    app = get_celery()
    assert sqla_transport.Transport.polling_interval == 0.25
    with app.connection_for_write() as conn:
        assert conn.transport.polling_interval == 0.25  # what the consumer's drain loop sleeps between polls
    get_celery.cache_clear()


def test_redis_broker_leaves_the_embedded_transport_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(sqla_transport.Transport, "polling_interval", 1.0)
    configure(monkeypatch, home=tmp_path, broker_url="redis://127.0.0.1:6379/15", broker_poll_seconds=0.25)
    get_celery()
    assert sqla_transport.Transport.polling_interval == 1.0
    get_celery.cache_clear()


def test_publishing_jobs_just_committed_needs_no_query(pg_env):
    """Kinds (and so time limits) of jobs the session holds come from it; others from the database."""
    import json

    import redis
    from sqlalchemy import event

    from core.db import get_engine, session_scope
    from core.jobs import create_job
    from core.queue import TIME_LIMITS
    from core.services import publish_jobs

    with session_scope() as other:
        earlier = create_job(other, "train", tenant_id="local", params={}).id
    statements: list[str] = []

    def record(*args) -> None:
        statements.append(args[2])

    event.listen(get_engine(), "before_cursor_execute", record)
    with session_scope() as session:
        job = create_job(session, "unlearn", tenant_id="local", params={})
        session.commit()
        statements.clear()
        publish_jobs([job.id], session)
        assert statements == []
        publish_jobs([earlier], session)  # not in this session: looked up
        assert len(statements) == 1 and "FROM jobs" in statements[0]
    event.remove(get_engine(), "before_cursor_execute", record)
    broker = redis.Redis.from_url(pg_env["LETHE_BROKER_URL"])
    queued = [json.loads(m) for q in worker_queues() for m in broker.lrange(q, 0, -1)]
    broker.delete(*worker_queues())
    limits = {m["headers"]["id"]: m["headers"]["timelimit"] for m in queued}
    assert limits[job.id] == [TIME_LIMITS["unlearn"], TIME_LIMITS["unlearn"] - 60]
    assert limits[earlier] == [TIME_LIMITS["train"], TIME_LIMITS["train"] - 60]


def test_each_job_kind_goes_to_its_roles_queue_and_workers_take_forget_first(tmp_path, monkeypatch):
    configure(monkeypatch, home=tmp_path, queue="q1")
    assert {queue_for(k) for k in ("unlearn", "forget_batch")} == {"q1.forget"}
    assert {queue_for(k) for k in ("train", "logits", "some_new_kind", None)} == {"q1"}
    assert {queue_for(k) for k in ("reference_run", "unlearn_run", "evaluate", "reference", "study")} == {
        "q1.evaluate"
    }
    assert set(FANOUT_KINDS) <= EVALUATE_KINDS  # a parent sent to be scored goes with its runs
    assert worker_queues() == ["q1.forget", "q1", "q1.evaluate"]
    assert [q.name for q in get_celery().conf.task_queues] == ["q1.forget", "q1", "q1.evaluate"]
    get_celery.cache_clear()


def test_a_worker_can_be_given_some_roles_only(tmp_path, monkeypatch):
    configure(monkeypatch, home=tmp_path, queue="q1")
    assert worker_queues(parse_roles("evaluate,forget")) == ["q1.forget", "q1.evaluate"]  # forget still first
    assert worker_queues(parse_roles("train")) == ["q1"]
    assert worker_queues(parse_roles("")) == worker_queues()
    with pytest.raises(ValueError, match=r"unknown queue role.*gpu.*valid: forget, train, evaluate"):
        parse_roles("forget,gpu")
    with pytest.raises(ValueError, match="named twice"):
        parse_roles("forget,forget")


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_a_consumer_takes_every_forget_message_before_any_other(backend, tmp_path, monkeypatch):
    """Not round-robin (kombu's default): with both queues full, the forget queue empties first."""
    import uuid

    values = {"queue": f"lethe-order-{uuid.uuid4().hex[:8]}"}
    if backend == "redis":
        values["broker_url"] = _require_redis()
    configure(monkeypatch, home=tmp_path, **values)
    app = get_celery()
    taken: list[str] = []
    with app.connection_for_write() as conn:
        for i in range(3):
            for kind in ("train", "unlearn"):
                app.send_task("t", args=[kind], queue=queue_for(kind), connection=conn, task_id=f"{kind}-{i}")
        assert queue_length() == 6
        queues = [Queue(name) for name in worker_queues()]
        with conn.Consumer(queues, accept=["json"], prefetch_count=1) as consumer:

            def on_message(body, message) -> None:
                taken.append(message.headers["id"].split("-")[0])
                message.ack()

            consumer.register_callback(on_message)
            while len(taken) < 6:
                conn.drain_events(timeout=10)
        for name in worker_queues():
            conn.default_channel.queue_delete(name)
    get_celery.cache_clear()
    assert taken == ["unlearn"] * 3 + ["train"] * 3


def _queued_messages(url: str) -> list[dict]:
    import json

    import redis

    broker = redis.Redis.from_url(url)
    return [json.loads(m) | {"queue": q} for q in worker_queues() for m in broker.lrange(q, 0, -1)]


def test_the_dispatcher_sends_a_batch_in_one_pipeline_with_its_task_sent_events(pg_env, monkeypatch):
    """Jobs handed over together go out in one trip (kombu's Producer.batch): each on its kind's queue
    with its time limits, and each with the task-sent event send_task writes (Flower's)."""
    import asyncio

    from redis.client import Pipeline, Redis

    from core.queue import DISPATCHER, TIME_LIMITS, send_batch

    commands: list[str] = []
    trips: list[list[str]] = []
    plain, piped = Redis.execute_command, Pipeline.execute

    def execute_command(self, *args, **kwargs):
        if not isinstance(self, Pipeline):
            commands.append(str(args[0]).upper())
        return plain(self, *args, **kwargs)

    def execute(self, *args, **kwargs):
        trips.append([str(c[0][0]).upper() for c in self.command_stack])
        return piped(self, *args, **kwargs)

    monkeypatch.setattr(Redis, "execute_command", execute_command)
    monkeypatch.setattr(Pipeline, "execute", execute)
    jobs = [("j-1", "unlearn"), ("j-2", "train"), ("j-3", "unlearn")]
    send_batch(jobs)
    assert "LPUSH" not in commands and "PUBLISH" not in commands
    # The messages and their task-sent events in one trip (others declare the queues, once per connection).
    assert [t for t in trips if "LPUSH" in t] == [["LPUSH", "PUBLISH"] * 3]
    queued = {m["headers"]["id"]: m for m in _queued_messages(pg_env["LETHE_BROKER_URL"])}
    assert set(queued) == {"j-1", "j-2", "j-3"}
    for job_id, kind in jobs:
        assert queued[job_id]["queue"] == queue_for(kind)
        assert queued[job_id]["headers"]["timelimit"] == [TIME_LIMITS[kind], TIME_LIMITS[kind] - 60]

    # Through the dispatcher's thread: the caller waits on its event loop until its message went out.
    async def publish_three() -> None:
        await asyncio.gather(*(DISPATCHER.publish_async(f"k-{i}", "unlearn") for i in range(3)))

    asyncio.run(publish_three())
    ids = {m["headers"]["id"] for m in _queued_messages(pg_env["LETHE_BROKER_URL"])}
    assert {"k-0", "k-1", "k-2"} <= ids
    sent = [t for t in trips if "LPUSH" in t][1:]
    assert sum(t.count("LPUSH") for t in sent) == 3 and len(sent) <= 3


def test_a_batch_that_fails_is_sent_one_by_one_and_a_failure_leaves_the_job_to_the_sweep(
    pg_env, monkeypatch, caplog
):
    import asyncio

    from kombu import messaging

    from core import queue

    def broken(self, max_size=1):
        raise ConnectionError("the pipeline broke")

    monkeypatch.setattr(messaging.Producer, "batch", broken)
    queue.send_batch([("b-1", "unlearn"), ("b-2", "unlearn")])
    assert {m["headers"]["id"] for m in _queued_messages(pg_env["LETHE_BROKER_URL"])} == {"b-1", "b-2"}
    assert "one by one" in caplog.text

    real = queue.publish_job

    def fail_one(job_id, kind=None, producer=None):
        if job_id == "b-3":
            raise ConnectionError("the broker is away")
        return real(job_id, kind, producer)

    monkeypatch.setattr(queue, "publish_job", fail_one)
    # One by one until one fails: the rest wait for the sweep rather than hold the dispatcher up.
    queue.send_batch([("b-4", "train"), ("b-3", "unlearn"), ("b-5", "unlearn")])
    ids = {m["headers"]["id"] for m in _queued_messages(pg_env["LETHE_BROKER_URL"])}
    assert "b-4" in ids and not {"b-3", "b-5"} & ids
    assert "publishing job b-3 failed; it and the 1 after it stay queued" in caplog.text
    dispatcher = queue.Dispatcher()

    async def publish() -> None:
        await asyncio.gather(
            dispatcher.publish_async("b-3", "unlearn"), dispatcher.publish_async("b-6", "train")
        )

    asyncio.run(
        asyncio.wait_for(publish(), 10)
    )  # both answered, the failed one too: neither waits for the sweep


def test_without_kombus_batches_the_dispatcher_sends_each_message_through_one_producer(
    pg_env, monkeypatch, caplog
):
    """kombu before 5.7 has no Producer.batch: the messages still go, without a warning each time."""
    from kombu import messaging

    from core import queue

    monkeypatch.delattr(messaging.Producer, "batch")
    queue.send_batch([("o-1", "unlearn"), ("o-2", "train")])
    assert {m["headers"]["id"] for m in _queued_messages(pg_env["LETHE_BROKER_URL"])} == {"o-1", "o-2"}
    assert "one by one" not in caplog.text
