"""Webhook settings, signatures, retry policy and the outbox rows a status change writes
(SQLite, no worker: nothing is posted here)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from api_service.db.base import Database, get_database
from api_service.db.migrate import upgrade
from api_service.db.models import WebhookDelivery
from moonmind.config import Settings, SettingsError, get_settings, load_settings
from moonmind.utils.durations import parse_duration
from moonmind.webhook_settings import WebhookConfig, display_url
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator import webhooks
from moonmind.workflows.orchestrator.enums import RunStatus
from moonmind.workflows.orchestrator.webhook_delivery import Attempt, backoff, deliver, take_due
from tests.support.factories import create_run
from tests.support.webhooks import Receiver

SECRET = "s3cret-for-the-receiver-0042"


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2592000), ("12h", 43200), ("90m", 5400), ("45s", 45), ("1w", 604800)],
)
def test_durations_read_as_operators_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "d", "-1d", "0h", "3x", "1d2h"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_webhooks_and_prune_settings_load_from_config_toml(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        '[orchestrator]\nprune_older_than = "30d"\nprune_interval = "6h"\n'
        f'[[orchestrator.webhooks]]\nurl = "https://hooks.test/a?key=q"\nsecret = "{SECRET}"\n'
        'events = ["run.failed", "run.rolled_back"]\n'
        f'[[orchestrator.webhooks]]\nurl = "http://127.0.0.1:9/b"\nsecret = "{SECRET}"\n',
    )
    settings = load_settings(path)
    first, second = settings.webhooks
    assert first.events == ("run.failed", "run.rolled_back")
    assert len(second.events) == 5  # every event by default
    assert settings.prune_older_than == 30 * 86400
    assert settings.prune_interval == 6 * 3600
    assert SECRET not in repr(settings)  # a SecretStr: never printed by accident
    assert first.secret.get_secret_value() == SECRET
    assert display_url(first.url) == "https://hooks.test/a"


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ('url = "ftp://x/y"\nsecret = "' + SECRET + '"\n', "http"),
        ('url = "http://x/y"\nsecret = "short"\n', "16"),
        ('url = "http://x/y"\nsecret = "' + SECRET + '"\nevents = ["run.exploded"]\n', "run."),
    ],
)
def test_a_bad_webhook_entry_names_the_problem(tmp_path: Path, entry: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match="ORCHESTRATOR_WEBHOOKS") as raised:
        load_settings(_config(tmp_path, f"[[orchestrator.webhooks]]\n{entry}"))
    assert complaint in str(raised.value)
    assert SECRET not in str(raised.value)


def test_two_entries_for_one_url_are_refused(tmp_path: Path) -> None:
    entry = f'[[orchestrator.webhooks]]\nurl = "http://x/y"\nsecret = "{SECRET}"\n'
    with pytest.raises(SettingsError, match="share a url"):
        load_settings(_config(tmp_path, entry + entry))


def test_the_signature_is_the_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"event":"run.failed"}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert webhooks.sign(SECRET, body) == f"sha256={expected}"
    assert webhooks.sign(SECRET, body + b" ") != webhooks.sign(SECRET, body)


def test_retries_back_off_and_a_refusal_is_final() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(30) == 60.0
    assert Attempt(204, None).delivered
    assert not Attempt(500, "HTTP 500").final
    assert not Attempt(429, "HTTP 429").final
    assert not Attempt(None, "ConnectError").final
    assert Attempt(404, "HTTP 404").final


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """A migrated SQLite database, and settings with one receiver of failures only."""
    config = _config(
        tmp_path,
        '[orchestrator]\npublic_url = "https://moonmind.test/"\n'
        f'[[orchestrator.webhooks]]\nurl = "http://127.0.0.1:9/hook"\nsecret = "{SECRET}"\n'
        'events = ["run.failed", "run.awaiting_approval"]\n',
    )
    monkeypatch.setenv("MOONMIND_CONFIG", str(config))
    get_settings.cache_clear()
    url = f"sqlite:///{tmp_path / 'orchestrator.db'}"
    upgrade(url)
    yield get_database(url)
    get_settings.cache_clear()


def _deliveries(db: Database, run_id: uuid.UUID) -> list[WebhookDelivery]:
    with db.session() as session:
        return list(
            session.scalars(select(WebhookDelivery).where(WebhookDelivery.run_id == run_id))
        )


def test_a_status_change_writes_one_delivery_per_interested_receiver(db: Database) -> None:
    with db.session() as session:
        run = create_run(session, status=RunStatus.RUNNING, service="api")
        run.requested_by = "alice"
        moved = repo.transition_run(
            session, run.id, expected=[RunStatus.RUNNING], new=RunStatus.FAILED, message="boom"
        )
    assert moved is True
    (row,) = _deliveries(db, run.id)
    assert (row.event, row.status, row.attempts, row.url) == (
        "run.failed",
        "pending",
        0,
        "http://127.0.0.1:9/hook",
    )
    body = json.loads(row.body)
    assert body["event"] == "run.failed"
    assert body["delivery_id"] == str(row.id)
    assert (body["run_id"], body["service"], body["status"]) == (str(run.id), "api", "failed")
    assert (body["requested_by"], body["message"], body["dry_run"]) == ("alice", "boom", False)
    assert body["links"] == {
        "run_page": f"https://moonmind.test/runs/{run.id}",
        "api": f"https://moonmind.test/orchestrator/runs/{run.id}",
    }
    assert SECRET not in row.body


def test_no_delivery_for_an_unwanted_event_or_a_lost_compare_and_set(db: Database) -> None:
    with db.session() as session:
        done = create_run(session, status=RunStatus.RUNNING, service="api")
        assert repo.transition_run(
            session, done.id, expected=[RunStatus.RUNNING], new=RunStatus.SUCCEEDED
        )
        ended = create_run(session, status=RunStatus.SUCCEEDED, service="web")
        assert not repo.transition_run(
            session, ended.id, expected=[RunStatus.RUNNING], new=RunStatus.FAILED
        )
    assert _deliveries(db, done.id) == []  # the receiver only asked for failures
    assert _deliveries(db, ended.id) == []  # the run did not move: no event


def _failed_run_with_delivery(db: Database, url: str | None = None) -> WebhookDelivery:
    """A run that just failed, its delivery pointed at ``url`` (a receiver of this test)."""
    with db.session() as session:
        run = create_run(session, status=RunStatus.RUNNING, service="api")
        repo.transition_run(session, run.id, expected=[RunStatus.RUNNING], new=RunStatus.FAILED)
        (row,) = session.scalars(select(WebhookDelivery).where(WebhookDelivery.run_id == run.id))
        row.url = url or row.url
    return row


def _settings_for(url: str) -> Settings:
    return Settings(webhooks=(WebhookConfig.model_validate({"url": url, "secret": SECRET}),))


def test_a_due_delivery_is_leased_to_one_taker(db: Database) -> None:
    row = _failed_run_with_delivery(db)
    assert take_due(db, 10) == [row.id]
    assert take_due(db, 10) == []  # leased: nobody else sends the same attempt


def test_attempts_are_recorded_retried_with_backoff_or_ended(db: Database) -> None:
    flaky, refusing = Receiver(script=[503]), Receiver(script=[404])
    try:
        row = _failed_run_with_delivery(db, flaky.url)
        assert not deliver(db, _settings_for(flaky.url), row.id).delivered
        (after,) = _deliveries(db, row.run_id)
        assert (after.status, after.attempts, after.response_status) == ("pending", 1, 503)
        due, tried = repo.as_utc(after.next_attempt_at), repo.as_utc(after.last_attempt_at)
        assert due is not None
        assert tried is not None
        assert 0.9 <= (due - tried).total_seconds() <= 1.1  # the first backoff
        (received,) = flaky.received
        assert received.signed_with(SECRET)
        assert received.body == row.body.encode()

        refused = _failed_run_with_delivery(db, refusing.url)
        deliver(db, _settings_for(refusing.url), refused.id)
        (after,) = _deliveries(db, refused.run_id)
        assert (after.status, after.attempts, after.last_error) == ("failed", 1, "HTTP 404")

        unknown = _failed_run_with_delivery(db, flaky.url + "/other")
        deliver(db, _settings_for(flaky.url), unknown.id)
        (after,) = _deliveries(db, unknown.run_id)
        assert after.status == "failed"
        assert "no [[orchestrator.webhooks]] entry" in (after.last_error or "")
    finally:
        flaky.close()
        refusing.close()
