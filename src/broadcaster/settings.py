"""Configuration: environment variables prefixed BROADCASTER_, DATABASE_URL, and an optional TOML
file (named by BROADCASTER_CONFIG) holding the list of gateways.

Settings are built at start-up by `load_settings()`, never at import time.
"""

from __future__ import annotations

import difflib
import tomllib
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from broadcaster.ingest.schedule import QuietHours
from gateway_adapters.base import GatewayConfig
from gateway_adapters.registry import ADAPTERS, known_types


class ConfigError(Exception):
    """A configuration problem, reported as one line by the CLI."""


class GatewaySettings(BaseModel):
    """One `[[gateways]]` entry of the TOML file: the fields every gateway has, plus the options
    of its type (the adapter's `options`, checked by `check_gateway`; they reach the adapter in
    `GatewayConfig.extra`)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    type: str
    base_url: str
    token: str = ""
    webhook_secret: str = ""
    rate_per_second: float = Field(500.0, gt=0)
    # Messages that may go at once after an idle moment, on top of the rate (the bucket's
    # size); unset: a twentieth of a second's worth, at least one, and below 200/s up to a
    # tenth of a second's worth (at most max_batch, at most 10; ratelimit.py).
    burst: float | None = Field(None, ge=1)
    max_batch: int = Field(1000, ge=1, le=100_000)
    concurrency: int = Field(4, ge=1, le=256)
    timeout_seconds: float = Field(30.0, gt=0)
    sender: str = "POLITI"
    # What one SMS segment costs through this gateway, in Settings.currency: the estimate of
    # POST /v1/alerts/preview (unset: no estimate for this gateway).
    price_per_segment: float | None = Field(None, ge=0, le=1000)

    def to_config(self) -> GatewayConfig:
        options = dict(self.model_extra or {})
        fields = {
            k: v
            for k, v in self.model_dump().items()
            if k not in options and k not in SERVICE_ONLY_FIELDS
        }
        return GatewayConfig(**fields, extra=options)


# GatewaySettings fields for the service, not the adapter.
SERVICE_ONLY_FIELDS = frozenset({"price_per_segment"})


def check_gateway(gateway: GatewaySettings) -> None:
    """Refuse an unknown type, an option its type does not have (a typo must not pass
    silently) and an option value of the wrong type; raise ConfigError naming both."""
    where = f"gateway {gateway.name!r}"
    adapter = ADAPTERS.get(gateway.type)
    if adapter is None:
        raise ConfigError(
            f"{where}: unknown type {gateway.type!r}; known types: {', '.join(known_types())}"
        )
    options: dict[str, type] = dict(adapter.options)
    for key, value in (gateway.model_extra or {}).items():
        if key not in options:
            known = sorted(set(GatewaySettings.model_fields) | set(options))
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown setting {key!r}{hint}")
        try:
            TypeAdapter(options[key]).validate_python(value, strict=options[key] is not float)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {key}: {exc.errors()[0]['msg']}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BROADCASTER_", extra="ignore", populate_by_name=True
    )

    database_url: str | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "BROADCASTER_DATABASE_URL")
    )
    data_dir: Path = Path(".data")
    config: Path | None = None
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # json (one object per line), text (for people), auto: text on a terminal, else json.
    log_format: str = "auto"
    # Messages longer than this many SMS segments are refused at the API.
    max_segments: int = Field(6, ge=1, le=255)
    # Dispatcher tuning. A claimed batch is held by an open transaction; one that sits idle for
    # lease_seconds (a hung dispatcher) is ended by the server and its rows are due again.
    # Keep it above the gateways' timeout_seconds plus the 15 s write budget.
    lease_seconds: float = Field(120.0, gt=0)
    # Bulk batches each dispatcher submits at once (each holds one database connection while
    # it is out); at most the largest gateway concurrency.
    batches_in_flight: int = Field(8, ge=1, le=256)
    poll_interval: float = Field(1.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    retry_base_seconds: float = Field(2.0, gt=0)
    # Consecutive failed submissions that open a gateway's circuit, and how long it stays open
    # before a probe batch is let through.
    breaker_failures: int = Field(3, ge=1)
    breaker_open_seconds: float = Field(2.0, gt=0)
    # Gateway callbacks are answered within this many seconds: 2xx once their receipts are
    # committed, else 503 (the gateway sends them again). Below GatewayAPI's 5 s window
    # (Twilio waits 15 s).
    callback_deadline_seconds: float = Field(4.0, gt=0, le=60)
    # The API's wait for a database connection: longer, and the request is answered 503.
    db_timeout_seconds: float = Field(1.0, gt=0, le=60)
    # The longest a statement of an API request may run (PostgreSQL's statement_timeout on the
    # API's connections; 0: no limit): beyond, the request is answered 503 with Retry-After,
    # not held while a table is locked by someone else or the database is overloaded.
    db_statement_timeout_seconds: float = Field(5.0, ge=0, le=600)
    # The longest a dispatcher statement waits for a lock (lock_timeout on its connections; 0:
    # forever): beyond, the dispatcher logs it and tries again with backoff. Its statements
    # themselves have no time limit (a large fan-out takes seconds).
    db_lock_timeout_seconds: float = Field(10.0, ge=0, le=600)
    # Request bodies, refused with 413 before they are read: alerts carry polygons (up to
    # geo.MAX_POSITIONS positions), callbacks one or a few receipts, everything else a small
    # JSON document.
    max_alert_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # POST /v1/zones: a FeatureCollection of zones (larger sets: `broadcaster import-zones`).
    max_zone_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_callback_bytes: int = Field(256 * 1024, ge=1024)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    metrics_port: int | None = None
    # Writes (POST, DELETE) one API key may make per minute, answered 429 beyond.
    writes_per_key_per_minute: int = Field(600, ge=1)
    # Citizens. The name that starts every SMS the service writes itself (codes, answers to
    # keywords) and heads the public pages.
    organisation: str = Field("Broadcaster", min_length=1, max_length=40)
    signup_code_minutes: int = Field(10, ge=1, le=60)
    # The public web pages (web/: /tilmeld, /en/signup, /afmeld, /en/leave): whether they are
    # served, the contact line under every page (an address, a phone number, a web page) and
    # the link to the organisation's privacy policy (both shown only when set).
    web_pages: bool = True
    contact: str | None = Field(None, max_length=200)
    privacy_url: str | None = Field(None, pattern=r"^https?://\S+$", max_length=500)
    # Per hour: sign-up SMS to one number, sign-up SMS asked for by one client (address), and
    # codes tried by one client.
    signup_sms_per_number: int = Field(3, ge=1)
    signup_sms_per_client: int = Field(20, ge=1)
    code_attempts_per_client: int = Field(30, ge=1)
    # Inbound messages and receipts keep the number this long; pending sign-ups never
    # confirmed are deleted after pending_days (citizens/retention.py).
    retention_days: int = Field(90, ge=1)
    pending_days: int = Field(7, ge=1)
    # Clients whose X-Forwarded-For is believed (the ingress in front of the API), as uvicorn's
    # forwarded_allow_ips: the client address is what sign-up throttling counts.
    forwarded_allow_ips: str = "127.0.0.1"
    # Inbound SMS. A text that is no keyword is a tip about the most recent alert the number got
    # within this many hours. Answers to keywords per number and hour (a machine answering our
    # answers must not make a loop).
    tip_window_hours: float = Field(48.0, gt=0, le=24 * 366)
    keyword_replies_per_number: int = Field(5, ge=1)
    # Webhooks (webhooks.py: tips to an alert's tip_webhook, its outcome to its status_webhook):
    # the HMAC-SHA256 key of X-Broadcaster-Signature (unset: posts wait in the outbox and alerts
    # with a webhook are refused), the first retry delay (doubled per attempt) and the longest,
    # and whether http:// URLs are taken (tests and local development only: tips carry
    # personal data). The names say tip: they were the first webhook.
    webhook_secret: str | None = Field(None, min_length=16)
    tip_retry_base_seconds: float = Field(2.0, gt=0)
    tip_retry_max_seconds: float = Field(900.0, gt=0)
    tip_webhook_allow_http: bool = False
    # An alert's outcome (status_webhook) is posted once it has ended and its receipts are in,
    # or this long after it ended with those still missing counted as 'sent'. The webhook
    # secret, retry delays and http rule above apply to it as to tips.
    outcome_receipt_wait_seconds: float = Field(600.0, ge=0)
    # Scheduling. Alerts other than emergencies are not sent during the quiet hours, local
    # wall-clock times [start, end) in quiet_hours_timezone (start = end: no quiet hours); they
    # wait for the end, or expire first. send_at may lie at most max_send_ahead_days ahead.
    quiet_hours_start: time = time(22, 0)
    quiet_hours_end: time = time(7, 0)
    quiet_hours_timezone: str = "Europe/Copenhagen"
    max_send_ahead_days: int = Field(30, ge=1, le=365)
    # The currency of the gateways' price_per_segment, as the preview names it.
    currency: str = Field("DKK", pattern=r"^[A-Z]{3}$")
    # Testing only: the service's clock runs this many seconds ahead of the system's (negative:
    # behind) for every scheduling decision (send_at, quiet hours, expiry at fan-out), so a test
    # can stand at 06:59:58 in Copenhagen without waiting for it.
    clock_offset_seconds: float = 0.0
    gateways: list[GatewaySettings] = Field(default_factory=list)

    @field_validator("quiet_hours_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def quiet_hours(self) -> QuietHours:
        return QuietHours(
            self.quiet_hours_start.replace(tzinfo=None),
            self.quiet_hours_end.replace(tzinfo=None),
            ZoneInfo(self.quiet_hours_timezone),
        )

    def now(self) -> datetime:
        """The service's clock (see clock_offset_seconds)."""
        now = datetime.now(UTC)
        return (
            now + timedelta(seconds=self.clock_offset_seconds) if self.clock_offset_seconds else now
        )

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def callback_url(self, gateway_name: str) -> str:
        return f"{self.public_url}/v1/callbacks/{gateway_name}"

    def inbound_url(self, gateway_name: str) -> str:
        return f"{self.public_url}/v1/inbound/{gateway_name}"

    def gateway_configs(self) -> list[GatewayConfig]:
        return [g.to_config() for g in self.gateways]


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and the TOML file it names; raise ConfigError."""
    try:
        settings = Settings(**overrides)
        if settings.config is not None and "gateways" not in overrides:
            settings = settings.model_copy(update={"gateways": _read_gateways(settings.config)})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
    for gateway in settings.gateways:
        check_gateway(gateway)
    names = [g.name for g in settings.gateways]
    if len(set(names)) != len(names):
        raise ConfigError("gateway names in the configuration file must be unique")
    return settings


def _read_gateways(path: Path) -> list[GatewaySettings]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    raw = data.get("gateways", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: 'gateways' must be an array of tables ([[gateways]])")
    try:
        return [GatewaySettings(**entry) for entry in raw]
    except (ValidationError, TypeError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: gateways: {where}: {first['msg']}") from None
        raise ConfigError(f"{path}: gateways: {exc}") from None
