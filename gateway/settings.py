"""The one typed settings object: a TOML file, overridden by `GATEWAY_…` environment variables.

The environment is read here and nowhere else; upstream keys come from the variables that
`keys_env` names, so a config file never has to hold a secret.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.catalog import MODELS, Kind
from gateway.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MegapixelPrice(_Section):
    """FLUX.2's pricing: the first output megapixel, each further one, each reference one (USD)."""

    first_mp: float = Field(ge=0)
    extra_mp: float = Field(ge=0)
    input_mp: float = Field(ge=0)


Price = float | MegapixelPrice
"""A plain number is per output image, whatever its size (Kontext, or an old config)."""

DEFAULT_PRICES: dict[str, Price] = {
    "flux-2-klein-4b": MegapixelPrice(first_mp=0.014, extra_mp=0.001, input_mp=0.001),
    "flux-2-klein-9b": MegapixelPrice(first_mp=0.015, extra_mp=0.002, input_mp=0.002),
    "flux-2-pro": MegapixelPrice(first_mp=0.03, extra_mp=0.015, input_mp=0.015),
    "flux-2-max": MegapixelPrice(first_mp=0.07, extra_mp=0.03, input_mp=0.03),
    "flux-2-flex": MegapixelPrice(first_mp=0.05, extra_mp=0.05, input_mp=0.05),
    "flux-kontext-pro": 0.04,
    "flux-kontext-max": 0.08,
}


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    public_base_url: str = ""
    max_body_mb: float = 100
    body_timeout_s: float = Field(60, gt=0)
    trusted_proxies: list[str] = []
    """Addresses or CIDR ranges whose `X-Forwarded-For` names the client address in logs."""
    trust_env: bool = False
    """Whether upstream calls and result downloads both take proxy variables and `.netrc`."""
    drain_s: float = 60
    drain_grace_s: float = Field(5, ge=0)
    metrics_token: str | None = None
    max_inflight_body_mb: float = Field(512, gt=0)
    """Request bodies all requests in flight may hold together; past it: 503 `server_busy`."""
    max_header_kb: float = Field(64, gt=0)
    """Request line and headers of one request together; larger: 431."""
    max_header_fields: int = Field(100, ge=1)
    """Header fields of one request; more: 431."""
    header_timeout_s: float = Field(10, gt=0)
    """A connection's request head must be complete this long after it opened or was answered."""

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_shape(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None
        return entries

    @property
    def base_url(self) -> str:
        """The base of durable links: the configured one, or the listening address."""
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")


class StateSettings(_Section):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    on_redis_error: Literal["fail-closed", "fail-open"] = "fail-closed"
    key_prefix: str = "fg:"
    lease_s: float = Field(30.0, gt=1)
    timeout_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _known_topology(self) -> StateSettings:
        """A malformed Sentinel or Cluster URL fails at start-up (`state/topology.py`)."""
        # Imported here: the state package imports these settings.
        from gateway.state.topology import checked_topology

        if self.backend == "redis":
            checked_topology(self.redis_url, self.key_prefix)
        return self


class CacheSettings(_Section):
    backend: Literal["filesystem", "s3"] = "filesystem"
    dir: Path = Path("./data/images")
    retention_days: float = 30
    max_result_mb: float = 50
    allowed_result_hosts: list[str] = [
        "*.bfl.ai",
        "bfldeliveryprod.blob.core.windows.net",
        "*.apiyi.com",
    ]
    allow_http_results: bool = False
    inline_own_urls: bool = True
    keep_prompts: bool = True
    fsync: bool = True
    min_free_mb: float = Field(512, ge=0)
    hot_mb: float = Field(32, ge=0)
    download_timeout_s: float = 60
    download_attempts: int = Field(6, ge=1)
    download_concurrency: int = Field(16, ge=1)
    download_backoff_s: float = Field(0.25, gt=0)
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    redirect: bool = False
    presign_ttl_s: float = Field(300, gt=0)
    sweep_interval_s: float = Field(300, gt=0)
    sweep_batch: int = Field(1000, gt=0)

    def s3_credentials(self) -> tuple[str, str] | None:
        """The key pair from the variables the config names; None lets the store's own chain
        (instance roles, web identity, AWS_* variables) find them."""
        names = (self.access_key_env, self.secret_key_env)
        if names == (None, None):
            return None
        if None in names:
            raise ConfigError("cache.access_key_env and cache.secret_key_env go together")
        values = tuple(os.environ.get(name or "", "") for name in names)
        missing = [name for name, value in zip(names, values, strict=True) if not value]
        if missing:
            raise ConfigError(f"cache credentials: the environment variable {missing[0]} is empty")
        return values[0], values[1]


class UpstreamSettings(_Section):
    name: str
    kind: Kind = "openai-images"
    base_url: str = ""
    keys_env: str | None = None
    keys: list[str] = []
    models: list[str] = []
    priority: int = 1
    max_concurrency_per_key: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    poll_hosts: list[str] = ["*.bfl.ai"]
    prices: dict[str, Price] = {}
    timeout_s: float = 300
    connect_timeout_s: float = 10
    recheck_s: float = Field(default=60, gt=0)

    @model_validator(mode="after")
    def _default_base_url(self) -> UpstreamSettings:
        if not self.base_url:
            if self.kind != "bfl":
                raise ValueError(f"upstream {self.name!r}: base_url is required")
            self.base_url = "https://api.bfl.ai"
        self.base_url = self.base_url.rstrip("/")
        return self

    def resolved_keys(self) -> list[str]:
        """The upstream keys: those listed, then those in the `keys_env` variable."""
        keys = list(self.keys)
        if self.keys_env:
            keys += [k.strip() for k in os.environ.get(self.keys_env, "").split(",") if k.strip()]
        return keys


class TeamSettings(_Section):
    name: str
    key_hashes: list[str] = []
    keys: list[str] = []
    rpm: int | None = None
    max_concurrency: int | None = None
    images_per_day: int | None = None
    monthly_budget_usd: float | None = None
    models: list[str] = ["*"]
    default_model: str | None = None
    default_response_format: Literal["url", "b64_json"] = "url"
    webhook_secret_env: str | None = None
    """The variable holding the secret that signs this team's webhooks; none: no webhooks."""
    webhook_hosts: list[str] = []
    """The only hosts a `webhook_url` of this team may name (names or literal addresses)."""

    @field_validator("webhook_hosts")
    @classmethod
    def _host_shape(cls, hosts: list[str]) -> list[str]:
        """Bare hosts, compared case-insensitively: a scheme, port or path would never match."""
        for host in hosts:
            if not host or (any(c in host for c in "/:@ ") and not _is_ipv6(host)):
                raise ValueError(f"webhook_hosts: {host!r} is not a bare host name or address")
        return [host.lower().strip("[]") for host in hosts]

    def webhook_secret(self) -> bytes | None:
        """The signing key from `webhook_secret_env`: `whsec_<base64>` is used decoded, as the
        Standard Webhooks specification says; any other text as its UTF-8 bytes."""
        text = os.environ.get(self.webhook_secret_env or "", "").strip()
        if not self.webhook_secret_env or not text:
            return None
        if not text.startswith("whsec_"):
            return text.encode()
        encoded = text.removeprefix("whsec_")
        try:  # padding may be left out, as the reference libraries accept
            secret = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ConfigError(
                f"teams[{self.name}]: {self.webhook_secret_env} holds a whsec_ secret that is "
                "not base64"
            ) from None
        return secret or None

    @field_validator("key_hashes")
    @classmethod
    def _hash_shape(cls, hashes: list[str]) -> list[str]:
        for h in hashes:
            hexpart = h.removeprefix("sha256:")
            if not h.startswith("sha256:") or len(hexpart) != 64:
                raise ValueError("key_hashes entries look like 'sha256:<64 hex digits>'")
            int(hexpart, 16)
        return [h.lower() for h in hashes]


class JobsSettings(_Section):
    """Async jobs and their webhooks (SPEC 4.6)."""

    retention_h: float = Field(24, gt=0)
    """How long a finished job can be read back."""
    webhook_attempts: int = Field(8, ge=1)
    """Delivery attempts of one webhook, the first included."""
    allow_http_webhooks: bool = False
    """Plain-http `webhook_url`s (local tests only)."""
    webhook_backoff_s: float = Field(5, gt=0)
    """The wait before the second attempt; each later wait doubles."""
    webhook_timeout_s: float = Field(10, gt=0)
    """An attempt with no complete answer by then is retried."""


class AdminSettings(_Section):
    key_hashes: list[str] = []


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerSettings = ServerSettings()
    state: StateSettings = StateSettings()
    cache: CacheSettings = CacheSettings()
    upstreams: list[UpstreamSettings] = []
    teams: list[TeamSettings] = []
    admin: AdminSettings = AdminSettings()
    jobs: JobsSettings = JobsSettings()
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    aliases: dict[str, str] = {}
    log: LogSettings = LogSettings()
    prometheus_multiproc_dir: Path | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    """prometheus-client's own variable: the folder where every worker writes its metrics."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment wins over the file, which arrives as init arguments."""
        return env_settings, init_settings

    @field_validator("prices")
    @classmethod
    def _merge_prices(cls, prices: dict[str, Price]) -> dict[str, Price]:
        return {**DEFAULT_PRICES, **prices}

    @model_validator(mode="after")
    def _known_models(self) -> Settings:
        """Aliases and team models naming no catalog model fail at start-up, not per request.

        A ConfigError, not a ValueError: pydantic would echo the whole input, keys included.
        """
        problems = [
            f"aliases[{alias!r}]: unknown model {model!r}"
            for alias, model in self.aliases.items()
            if model not in MODELS
        ]
        for team in self.teams:
            problems += _team_model_problems(team, self.aliases)
            team.webhook_secret()  # a malformed whsec_ secret fails at start-up, not per job
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    @classmethod
    def load(cls, path: str | Path | None = None) -> Settings:
        """Settings from `path`, else from $GATEWAY_CONFIG, else from the environment alone."""
        path = path or os.environ.get("GATEWAY_CONFIG") or None
        data: dict[str, object] = {}
        if path is not None:
            try:
                data = tomllib.loads(Path(path).read_text())
            except OSError as exc:
                raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        return cls(**data)  # type: ignore[arg-type]  # the TOML tables, validated here


def _team_model_problems(team: TeamSettings, aliases: dict[str, str]) -> list[str]:
    """`models` entries are `*`, catalog models or aliases; `default_model` one the team may use."""
    where = f"teams[{team.name}]"
    known = MODELS.keys() | aliases.keys()
    problems = [
        f"{where}.models: unknown model {model!r}"
        for model in team.models
        if model != "*" and model not in known
    ]
    default = team.default_model
    if default is None:
        return problems
    if default not in known:
        problems.append(f"{where}.default_model: unknown model {default!r}")
    elif not {"*", default, aliases.get(default, default)} & set(team.models):
        problems.append(f"{where}.default_model: {default!r} is not in the team's models")
    return problems


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        return False
