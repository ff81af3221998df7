"""The one settings object, built from the environment (and CLI flags) at start-up.

Nothing below the CLI reads the environment: every component receives the
`Settings` (or the few values it needs) from its caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from firesafe.i18n import N_


class NotConfigured(RuntimeError):
    """A service this command needs has no URL (a one-line error, never a traceback)."""


NO_BROKER = N_("no MQTT broker configured (set FIRESAFE_MQTT_URL or --mqtt-url)")
NO_DATABASE = N_("no database configured (set FIRESAFE_DATABASE_URL or --database-url)")

MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883, "tcp": 1883}
# An admin token is a password to everything: at least this long (openssl rand -hex 32).
MIN_ADMIN_TOKEN_CHARS = 32
# The placeholders of .env.example: a deployment must replace every one.
PLACEHOLDER_MARK = "change-me"


class _MqttClient(Protocol):
    """What `MqttEndpoint.sign_in` needs of a paho client."""

    def username_pw_set(self, username: str | None, password: str | None = None) -> None: ...

    def tls_set(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """A broker address split out of `mqtt://user:pass@host:port`."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in MQTT_SCHEMES:
            raise ValueError(
                f"MQTT URL {url!r} must start with mqtt:// or mqtts:// (got {parts.scheme!r})"
            )
        if not parts.hostname:
            raise ValueError(f"MQTT URL {url!r} has no host")
        try:
            port = parts.port or MQTT_SCHEMES[parts.scheme]
        except ValueError as exc:
            raise ValueError(f"MQTT URL {url!r} has a bad port") from exc
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "mqtts",
        )

    def sign_in(self, client: _MqttClient) -> None:
        """Put the endpoint's credentials and TLS on a paho client (every client
        of the platform, its simulator, benchmarks and tests signs in this way)."""
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set()

    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        auth = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:9026`) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {value!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


SMTP_SCHEMES = {"smtp": 25, "smtps": 465}


@dataclass(frozen=True, slots=True)
class SmtpEndpoint:
    """An SMTP server split out of `smtp://user:pass@host:port`."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    implicit_tls: bool = False

    @classmethod
    def parse(cls, url: str) -> SmtpEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in SMTP_SCHEMES:
            raise ValueError("FIRESAFE_SMTP_URL must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("FIRESAFE_SMTP_URL has no host")
        try:
            port = parts.port or SMTP_SCHEMES[parts.scheme]
        except ValueError as exc:
            raise ValueError("FIRESAFE_SMTP_URL has a bad port") from exc
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=parts.scheme == "smtps",
        )


class Settings(BaseSettings):
    """Configuration of every firesafe process (contract section 5)."""

    model_config = SettingsConfigDict(env_prefix="FIRESAFE_", extra="ignore")

    mqtt_url: str | None = Field(
        default=None, description="Broker URL; unset: `up` starts an embedded broker"
    )
    database_url: str | None = Field(
        default=None, description="PostgreSQL/TimescaleDB DSN; unset: `up` embeds PostgreSQL"
    )
    data_dir: Path = Field(default=Path(".firesafe"), description="Embedded database files")
    api_host: str = Field(default="127.0.0.1", description="Interface the API binds to")
    api_port: int = Field(default=8000, ge=0, le=65535, description="HTTP port of the API")
    admin_token: SecretStr | None = Field(default=None, description="First admin bearer token")
    api_url: str = Field(default="http://127.0.0.1:8000", description="Where clients reach the API")
    mqtt_client_id: str = Field(
        default="firesafe-ingest",
        min_length=1,
        max_length=64,
        description="Stable MQTT client id of ingest: the broker keeps its session across restarts",
    )
    gb26875_listen: str | None = Field(
        default=None,
        description="HOST:PORT the GB/T 26875.3 gateway listens on; unset: 0.0.0.0:9026 "
        "(`up`: 127.0.0.1:9026, or a free port when 9026 is taken)",
    )
    gb26875_idle_s: float = Field(
        default=180.0,
        gt=0,
        description="A transmission device silent this long (no frame, no heartbeat) is offline",
    )
    gateway_token: SecretStr | None = Field(
        default=None,
        description="API token (admin) a gateway uses to read and extend the registry",
    )
    retention_days: int = Field(default=365, ge=1, description="Raw telemetry kept this long")
    smtp_url: SecretStr | None = Field(
        default=None,
        description="SMTP server of e-mail notifications, smtp://user:pass@host:port "
        "(STARTTLS when offered) or smtps:// (TLS from the start)",
    )
    smtp_from: str = Field(default="firesafe@localhost", description="From: of notification mail")
    shards: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Site shards of the estate (default 64); fixed when the database is "
        "first migrated, and refused if it differs later",
    )
    api_workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="API worker processes (default: the number of cores); each is stateless",
    )
    ingest_mode: Literal["sharded", "single"] = Field(
        default="sharded",
        description="sharded: share the site shards with every other ingest process; "
        "single: one process, one MQTT session for everything (what `up` runs)",
    )
    reject_retention_days: int = Field(default=30, ge=1, description="Rejects kept this long")
    rejects_per_site: int = Field(
        default=100_000,
        ge=100,
        description="At most this many rejects kept per registered site, "
        "and for all others together (newest)",
    )
    api_public_docs: bool = Field(
        default=False, description="Serve /docs and /openapi.json without a token"
    )
    log_level: str = Field(default="INFO")

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str | None) -> str | None:
        if value:
            MqttEndpoint.parse(value)
            return value
        return None

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not (value.startswith(("postgresql://", "postgres://")) or "=" in value):
            raise ValueError(
                "FIRESAFE_DATABASE_URL must be a PostgreSQL URL (postgresql://...) "
                "or a key=value DSN"
            )
        return value

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("FIRESAFE_API_URL must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("gb26875_listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value:
            parse_listen(value)
            return value
        return None

    @field_validator("admin_token", "gateway_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        if PLACEHOLDER_MARK in token.lower():
            raise ValueError(
                f"FIRESAFE_ADMIN_TOKEN is a {PLACEHOLDER_MARK!r} placeholder: "
                "generate one with `openssl rand -hex 32`"
            )
        if len(token) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"FIRESAFE_ADMIN_TOKEN is too short ({len(token)} characters, at least "
                f"{MIN_ADMIN_TOKEN_CHARS}): generate one with `openssl rand -hex 32`"
            )
        return value

    @field_validator("smtp_url", mode="before")
    @classmethod
    def _check_smtp_url(cls, value: object) -> object:
        if value in ("", None):
            return None
        raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        SmtpEndpoint.parse(raw)
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("FIRESAFE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return level

    @property
    def mqtt(self) -> MqttEndpoint:
        if not self.mqtt_url:
            raise NotConfigured(NO_BROKER)
        return MqttEndpoint.parse(self.mqtt_url)

    @property
    def smtp(self) -> SmtpEndpoint | None:
        if self.smtp_url is None:
            return None
        return SmtpEndpoint.parse(self.smtp_url.get_secret_value())

    def require_database_url(self) -> str:
        if not self.database_url:
            raise NotConfigured(NO_DATABASE)
        return self.database_url

    def to_environment(self) -> dict[str, str]:
        """These settings as FIRESAFE_* variables (for child processes)."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            out[f"FIRESAFE_{name.upper()}"] = str(value)
        return out

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with the non-None values set (CLI flags win over the environment)."""
        given = {k: v for k, v in values.items() if v is not None}
        return self.model_validate({**self.model_dump(), **given})
