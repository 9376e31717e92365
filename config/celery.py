"""The Celery configuration, derived from Settings.

Chosen for long I/O-bound provider calls on a Redis broker (see the README's
"Worker model"): late acks, no prefetch (strict priorities, nothing
held while busy), connection pools sized to the concurrency, events for Flower.
"""

from __future__ import annotations

from typing import Any

from kombu.entity import Queue

from config.settings import Settings

# Job priorities, highest first: the one list every part of Courier orders them by.
PRIORITIES = ("high", "normal", "low")
JOB_QUEUES = tuple(f"jobs.{priority}" for priority in PRIORITIES)
CALLBACK_QUEUE = "callbacks"
ALL_QUEUES = (*JOB_QUEUES, CALLBACK_QUEUE)
# Redis transport: a kombu visibility timeout shorter than a job is harmless here, because
# job leases (not redelivery) decide who runs a job: a message redelivered while its job runs
# finds the job running and is dropped. What it bounds is how long a message stays invisible
# when its worker died after taking it but before claiming the job (a window leases cannot
# cover), or when its ack could not be written during a Redis outage.
VISIBILITY_TIMEOUT_S = 60

# Message priorities, per broker, in this one place. kombu's Redis transport delivers 0 first
# (one list per priority step); AMQP (RabbitMQ) delivers the *higher* number first, up to the
# queue's ``x-max-priority``. Each job priority also has its own queue (strict queue order on
# Redis; on RabbitMQ the queues are consumed side by side, so the message priority orders a
# queue that holds several priorities, e.g. after aging).
REDIS_PRIORITIES = {"high": 0, "normal": 5, "low": 9}
AMQP_MAX_PRIORITY = 9
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://", "librabbitmq://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "sentinel://")


def queue_for(priority: str) -> str:
    return f"jobs.{priority}"


def is_amqp(broker_url: str) -> bool:
    return broker_url.startswith(AMQP_SCHEMES)


def message_priority(priority: str, broker_url: str) -> int:
    """The message priority of a job priority on this broker."""
    value = REDIS_PRIORITIES.get(priority, REDIS_PRIORITIES["normal"])
    return AMQP_MAX_PRIORITY - value if is_amqp(broker_url) else value


def task_queues(broker_url: str) -> list[Queue]:
    """The queues; on AMQP the job queues are declared with ``x-max-priority``."""
    args = {"x-max-priority": AMQP_MAX_PRIORITY} if is_amqp(broker_url) else None
    return [
        Queue(name, queue_arguments=args if name in JOB_QUEUES else None) for name in ALL_QUEUES
    ]


def celery_config(settings: Settings) -> dict[str, Any]:
    broker = settings.celery_broker_url
    is_redis = broker.startswith(REDIS_SCHEMES)
    pool_size = settings.worker_concurrency + 100
    transport: dict[str, Any] = {}
    if is_redis:
        transport = {
            "queue_order_strategy": "priority",
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            # The restore sweep's lock: kombu keeps it 300 s, so a worker killed while
            # holding it stopped every other worker restoring messages for five minutes.
            "unacked_mutex_expire": 15,
            "max_connections": pool_size,
            "health_check_interval": 10,
        }
        if broker.startswith("sentinel://"):
            # kombu asks the Sentinels of the URL for this master, again after a failover.
            transport["master_name"] = settings.redis_sentinel_master
    return {
        "broker_url": broker,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_pool_limit": 100,
        "result_backend": None,
        # The (disabled) backend holds no state; without this Celery builds one per
        # thread, and under gevent every task's greenlet is a thread: one backend per task.
        "result_backend_thread_safe": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_default_queue": "jobs.normal",
        "task_queues": task_queues(broker),
        "task_create_missing_queues": False,
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": is_redis,
        # Job leases, not Celery, prevent twin runs: a redelivered message finds its job
        # running or ended and does nothing. So a broker blip need not kill calls in flight
        # (that would only buy duplicate provider calls).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "include": ["tasks.jobs", "tasks.callbacks", "workers.lifecycle"],
    }
