"""Settings that refuse a config naming what does not exist, and the environment read here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.keys import hash_key
from gateway.settings import Settings
from tests.demo_process import CLI, clean_env

UPSTREAM = (
    '[[upstreams]]\nname = "apiyi"\nbase_url = "https://api.apiyi.com/v1"\n'
    'keys_env = "MY_KEYS"\nmodels = ["flux-2-pro"]\n'
)
TEAM_HASH = hash_key("sk-design")


def team(**fields: object) -> dict[str, object]:
    return {"name": "design", "key_hashes": [TEAM_HASH], **fields}


@pytest.mark.parametrize(
    ("teams", "aliases", "message"),
    [
        ([team(default_model="flux-9")], {}, "teams[design].default_model: unknown model 'flux-9'"),
        (
            [team(models=["flux-2-pro", "flux-9"])],
            {},
            "teams[design].models: unknown model 'flux-9'",
        ),
        (
            [team(models=["flux-2-pro"], default_model="flux-2-max")],
            {},
            "teams[design].default_model: 'flux-2-max' is not in the team's models",
        ),
        ([], {"gpt-image-1": "dall-e-3"}, "aliases['gpt-image-1']: unknown model 'dall-e-3'"),
        (
            [team(models=["gpt-image-1"])],
            {"gpt-image-1": "dall-e-3"},
            "aliases['gpt-image-1']: unknown model 'dall-e-3'",
        ),
        (
            [team(default_model="x"), {"name": "ops", "models": ["y"]}],
            {},
            "teams[design].default_model: unknown model 'x'; teams[ops].models: unknown model 'y'",
        ),
    ],
    ids=["default", "models", "default-not-allowed", "alias", "alias-in-models", "several"],
)
def test_unknown_models_are_a_configuration_error(
    teams: list[dict[str, object]], aliases: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(teams=teams, aliases=aliases)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "fields",
    [
        {"models": ["*"], "default_model": "flux-2-max"},
        {"models": ["flux-2-pro"], "default_model": "flux-2-pro"},
        {"models": ["gpt-image-1"], "default_model": "gpt-image-1"},
        {"models": ["flux-2-pro"], "default_model": "gpt-image-1"},
        {"models": ["flux-kontext-pro"]},
    ],
)
def test_catalog_models_and_aliases_are_accepted(fields: dict[str, object]) -> None:
    settings = Settings(teams=[team(**fields)], aliases={"gpt-image-1": "flux-2-pro"})  # type: ignore[arg-type]
    assert settings.teams[0].models == fields["models"]
    assert settings.teams[0].default_model == fields.get("default_model")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(MY_KEYS="upstream-secret-1")
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_check_config_and_serve_refuse_an_unknown_default_model(
    tmp_path: Path, command: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        UPSTREAM
        + f'[[teams]]\nname = "design"\nkey_hashes = ["{TEAM_HASH}"]\ndefault_model = "flux-9"\n'
    )
    result = _cli(command, "--config", str(path))
    assert result.returncode == 1
    assert result.stderr == "flux-gateway: teams[design].default_model: unknown model 'flux-9'\n"
    assert result.stdout == ""


def test_trusted_proxies_must_be_addresses_or_ranges() -> None:
    settings = Settings(server={"trusted_proxies": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]})  # type: ignore[arg-type]
    assert settings.server.trusted_proxies == ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
    with pytest.raises(ValidationError) as caught:
        Settings(server={"trusted_proxies": ["10.0.0.0/8", "proxy.internal"]})  # type: ignore[arg-type]
    (error,) = caught.value.errors()
    assert error["loc"] == ("server", "trusted_proxies")
    assert error["msg"] == "Value error, 'proxy.internal' is not an IP address or CIDR range"


def test_environment_sets_trust_env_and_the_metrics_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("GATEWAY_SERVER__TRUST_ENV", raising=False)
    defaults = Settings()
    assert (defaults.server.trust_env, defaults.prometheus_multiproc_dir) == (False, None)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_SERVER__TRUST_ENV", "true")
    configured = Settings()
    assert (configured.server.trust_env, configured.prometheus_multiproc_dir) == (True, tmp_path)
