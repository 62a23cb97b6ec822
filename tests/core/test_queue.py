"""The Celery app's broker settings."""

from __future__ import annotations

from kombu.transport import sqlalchemy as sqla_transport

from core.queue import get_celery
from tests.utils import configure


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
