"""The issue-9 speed table, measured in one go: see bench_orchestrator.main()."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kombu import Connection
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api_service.db.base import normalize_url
from api_service.db.migrate import upgrade
from bench import speed_post, speed_rollback
from bench import speed_runs as runs
from bench.speed_list import POSTGRES_URL, bench_list_postgres, bench_list_sqlite
from bench.speed_report import Line, median, ms, pct
from tests.support.broker import delete_queues

AMQP_URL = os.environ.get("MOONMIND_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
EMBEDDED = {"MOONMIND_DATABASE_URL": "", "CELERY_BROKER_URL": "", "ORCHESTRATOR_QUEUE": ""}


@contextmanager
def busy_worker(amqp_url: str, queue: str) -> Iterator[None]:
    """A live consumer that holds one message and acknowledges nothing: a worker busy with a
    long step, so the POSTed runs wait in the queue (and the API sees a consumer)."""
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        channel.queue_declare(queue, passive=True)
        channel.basic_consume(queue, callback=lambda message: None, no_ack=False)
        yield


def _embedded_env() -> dict[str, str]:
    for key in EMBEDDED:
        os.environ.pop(key, None)
    return {}


def p1_and_embedded(stack: runs.Stack, home: Path) -> list[Line]:
    orch = runs.start(stack, home / "embedded", runs.app_config(stack, 0), _embedded_env())
    try:
        runs.break_app(stack)
        runs.fix_by_orchestrator(orch)  # warm-up: both sides then build from the same cache
        runs.break_app(stack)
        runs.fix_by_hand(stack)
        pairs, details = [], []
        for _ in range(3):
            runs.break_app(stack)
            hand = runs.fix_by_hand(stack)
            runs.break_app(stack)
            took, detail = runs.fix_by_orchestrator(orch)
            pairs.append((took, hand))
            details.append(runs.step_times(detail))
        runs.break_app(stack)
        delays = runs.p6(orch)
    finally:
        orch.stop()
    ratio = median([o / h for o, h in pairs])
    data = {"pairs_s": pairs, "steps_s": details}
    figure = f"{ratio:.2f} (orch {median([o for o, _ in pairs]):.2f}s / hand "
    figure += f"{median([h for _, h in pairs]):.2f}s)"
    analyze = [d["analyze"] for d in details]
    return [
        Line(
            "P1 fix run / by hand (median of 3 pairs, stable_seconds 0)",
            figure,
            "<= 1.10",
            ratio <= 1.10,
            data,
        ),
        Line(
            "analyze on an exited container (in the P1 runs)",
            f"median {ms(median(analyze))}",
            "<= 100 ms",
            median(analyze) <= 0.100,
            {"samples": analyze},
        ),
        runs.lines_p6("P6 POST -> first step started, embedded (SQLite+fs)", delays),
    ]


def p1_default_window(stack: runs.Stack, home: Path) -> Line:
    orch = runs.start(stack, home / "default", runs.app_config(stack, None), _embedded_env())
    try:
        runs.break_app(stack)
        took, detail = runs.fix_by_orchestrator(orch)
    finally:
        orch.stop()
    steps = runs.step_times(detail)
    return Line(
        "P1 beside it: the default window (stable_seconds 3)",
        f"{took:.2f}s, verify {steps.get('verify', 0):.2f}s",
        "(for reference)",
        None,
        {"steps_s": steps},
    )


def rabbitmq(stack: runs.Stack, home: Path) -> list[Line]:
    admin = create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"moonmind_bench_{uuid.uuid4().hex[:8]}"
    queue = f"orchestrator.run.bench-{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(normalize_url(POSTGRES_URL)).set(database=name)
    db_url = url.render_as_string(hide_password=False)
    try:
        upgrade(db_url)
        env = {
            "MOONMIND_DATABASE_URL": db_url,
            "CELERY_BROKER_URL": AMQP_URL,
            "ORCHESTRATOR_QUEUE": queue,
        }
        # deployed as on 2 cores: one API process per core (MOONMIND_API_WORKERS)
        orch = runs.start(stack, home / "rabbit", runs.app_config(stack, 0), env, "--workers", "2")
        try:
            runs.break_app(stack)
            delays = runs.p6(orch)
            orch.worker.stop()
            with busy_worker(AMQP_URL, queue):  # P5: the runs wait in the queue
                rate, p99 = runs.p5(orch)
                load = speed_post.constant_rate(orch.base)
        finally:
            orch.stop()
    finally:
        delete_queues(AMQP_URL, queue)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return [
        runs.lines_p6("P6 POST -> first step started, RabbitMQ + PostgreSQL", delays),
        speed_post.line(load, rate, p99),
    ]


def measure() -> list[Line]:
    samples = runs.p3()
    lines = [
        Line(
            "P3 health detected after the service first answers",
            f"p50 {ms(median(samples))}, p95 {ms(pct(samples, 95))}",
            "<= 100 ms p50, 200 p95",
            median(samples) <= 0.1 and pct(samples, 95) <= 0.2,
            {"samples": samples},
        ),
    ]
    home = runs.tmp_home()
    stack = runs.demo_stack(home)
    try:
        lines += p1_and_embedded(stack, home)
        lines.append(p1_default_window(stack, home))
        queued = rabbitmq(stack, home)
        # P2 last on this stack: it commits the fix (a healthy service to roll back to).
        lines.append(speed_rollback.p2(stack, home, _embedded_env()))
        lines += queued
    finally:
        runs.cleanup(stack, home)
        shutil.rmtree(home, ignore_errors=True)
    lines.append(bench_list_postgres())
    lines.append(bench_list_sqlite())
    return lines
