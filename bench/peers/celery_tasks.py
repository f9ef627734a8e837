"""Celery app and tasks for peer_bench.py.

Imported both by the driver (peer_bench.py) and by the worker it starts
(`celery -A celery_tasks worker --pool=prefork --concurrency=2`). The Redis URL
(broker and result backend alike) comes from VOLLEY_PEER_REDIS_URL.
"""

import os

from celery import Celery

REDIS_URL = os.environ.get("VOLLEY_PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
# One queue per run, so a shared Redis (--redis-url) never mixes runs.
QUEUE = os.environ.get("VOLLEY_PEER_CELERY_QUEUE", "celery")

app = Celery("volley_peer", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue=QUEUE,
)


@app.task(name="peer.noop")
def noop(x):
    return x


@app.task(name="peer.inc")
def inc(x):
    return x + 1


@app.task(name="peer.add")
def add(x, y):
    return x + y


@app.task(name="peer.total")
def total(values):
    return sum(values)
