"""``[[orchestrator.webhooks]]``: where run events are posted, and with which secret.

A table per receiver::

    [[orchestrator.webhooks]]
    url = "https://chat.example.org/hooks/moonmind"
    secret = "a long random string shared with the receiver"
    events = ["run.awaiting_approval", "run.failed", "run.rolled_back"]

``events`` defaults to every event. The secret only signs bodies (HMAC-SHA256); it is
never stored in the database, printed or logged.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

WebhookEvent = Literal[
    "run.awaiting_approval", "run.succeeded", "run.failed", "run.rolled_back", "run.cancelled"
]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = (
    "run.awaiting_approval",
    "run.succeeded",
    "run.failed",
    "run.rolled_back",
    "run.cancelled",
)


class WebhookConfig(BaseModel):
    """One receiver of run events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, max_length=2000)
    secret: SecretStr = Field(min_length=16)
    events: tuple[WebhookEvent, ...] = Field(default=WEBHOOK_EVENTS, min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a webhook url must be an http:// or https:// URL with a host")
        return value

    def wants(self, event: str) -> bool:
        return event in self.events


def _unique_urls(value: tuple[WebhookConfig, ...]) -> tuple[WebhookConfig, ...]:
    urls = [hook.url for hook in value]
    if len(set(urls)) != len(urls):
        raise ValueError("two webhooks share a url; list the events of one receiver once")
    return value


Webhooks = Annotated[tuple[WebhookConfig, ...], AfterValidator(_unique_urls)]


def display_url(url: str) -> str:
    """The URL without user info or query string (either may carry a credential)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
