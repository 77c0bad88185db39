"""The deployment files speak the settings model: every config key they use exists in it.

TOML files, TOML embedded in ConfigMaps, and `GATEWAY_…` variables in the Dockerfile, the
compose file and the Kubernetes manifests are all checked against `gateway.settings.Settings`,
so a misspelt key fails here rather than at a replica's start-up.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from gateway.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ENV_PREFIX = "GATEWAY_"
PROBE_PATHS = {"/healthz", "/readyz"}


def unknown_env_key(name: str) -> str | None:
    """The first segment of `GATEWAY_A__B` that the settings model does not have, if any."""
    model: type[BaseModel] | None = Settings
    for segment in name.removeprefix(ENV_PREFIX).lower().split("__"):
        if model is None:
            return None
        field = model.model_fields.get(segment)
        if field is None:
            return segment
        model = next(
            (t for t in (field.annotation, *get_args(field.annotation)) if _is_model(t)), None
        )
    return None


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def toml_problems(text: str) -> str | None:
    """The settings model's complaint about a config file (unknown keys are forbidden)."""
    try:
        Settings.model_validate(tomllib.loads(text))
    except ValueError as exc:
        return str(exc)
    return None


def yaml_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


def k8s(kind: str) -> list[dict[str, Any]]:
    return [doc for path, doc in yaml_documents() if "k8s" in path.parts and doc["kind"] == kind]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text()))


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def containers() -> list[dict[str, Any]]:
    return [c for d in k8s("Deployment") for c in d["spec"]["template"]["spec"]["containers"]]


def dockerfile_env() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.startswith("ENV ")]
    return [m for line in lines for m in re.findall(r"\b([A-Z][A-Z0-9_]*)=", line)]


def all_gateway_env() -> list[tuple[str, str]]:
    """Every `GATEWAY_…` variable a deployment file sets, with where it is set."""
    found = [("Dockerfile", name) for name in dockerfile_env()]
    for name, service in compose()["services"].items():
        found += [(f"compose {name}", key) for key in compose_env(service)]
    for container in containers():
        found += [(f"Deployment {container['name']}", e["name"]) for e in container.get("env", [])]
    for secret in k8s("Secret") + k8s("ConfigMap"):
        data = {**secret.get("stringData", {}), **secret.get("data", {})}
        found += [(f"{secret['kind']} {secret['metadata']['name']}", key) for key in data]
    return [(where, name) for where, name in found if name.startswith(ENV_PREFIX)]


def embedded_tomls() -> list[tuple[str, str]]:
    return [
        (f"ConfigMap {cm['metadata']['name']}/{key}", text)
        for cm in k8s("ConfigMap")
        for key, text in cm.get("data", {}).items()
        if key.endswith(".toml")
    ]


def all_tomls() -> list[tuple[str, str]]:
    files = [(str(p.relative_to(DEPLOY)), p.read_text()) for p in sorted(DEPLOY.rglob("*.toml"))]
    return files + embedded_tomls()


def test_the_checkers_catch_misspelt_keys() -> None:
    assert unknown_env_key("GATEWAY_CACHE__BUKKET") == "bukket"
    assert unknown_env_key("GATEWAY_SERVR__PORT") == "servr"
    assert unknown_env_key("GATEWAY_STATE__REDIS_URL") is None
    assert unknown_env_key("GATEWAY_CONFIG") == "config"
    problem = toml_problems('[cache]\nbackend = "s3"\nbukket = "images"\n')
    assert problem is not None and "bukket" in problem
    assert toml_problems("[server]\ndrain_grace_s = 5\n") is None


def test_every_config_file_is_found() -> None:
    names = [name for name, _ in all_tomls()]
    assert "config/gateway.toml" in names
    assert any(name.startswith("ConfigMap ") for name in names)
    assert any(name == "Dockerfile" for name, _ in all_gateway_env())
    assert any(name.startswith("compose ") for name, _ in all_gateway_env())
    assert any(name.startswith("Deployment ") for name, _ in all_gateway_env())


@pytest.mark.parametrize(("name", "text"), all_tomls(), ids=[n for n, _ in all_tomls()])
def test_every_toml_config_fits_the_settings_model(name: str, text: str) -> None:
    assert toml_problems(text) is None


def test_every_gateway_variable_names_a_setting() -> None:
    """`GATEWAY_CONFIG` is the one that is not a setting: it names the file."""
    unknown = [
        (where, name)
        for where, name in all_gateway_env()
        if name != "GATEWAY_CONFIG" and unknown_env_key(name) is not None
    ]
    assert unknown == []


def test_every_yaml_and_json_file_parses() -> None:
    assert len(list(yaml_documents())) >= 10
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())


def test_compose_runs_two_replicas_on_the_shared_config() -> None:
    services = compose()["services"]
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert {"redis", "minio", "prometheus", "grafana"} <= set(services)
    mounts = [m for s in services.values() for m in s.get("volumes", []) if m.startswith("./")]
    for mount in mounts:
        assert (DEPLOY / mount.split(":")[0]).exists(), mount
    config_target = compose_env(gateway)["GATEWAY_CONFIG"]
    assert any(m.split(":")[1] == config_target for m in gateway["volumes"])
    settings = tomllib.loads((DEPLOY / "config/gateway.toml").read_text())
    assert settings["state"]["backend"] == "redis" and settings["cache"]["backend"] == "s3"
    env = compose_env(gateway)
    named = [settings["cache"]["access_key_env"], settings["cache"]["secret_key_env"]]
    named += [u["keys_env"] for u in settings["upstreams"]]
    assert all(name in env for name in named)


def test_kubernetes_config_and_secret_fit_together() -> None:
    (container,) = containers()
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["GATEWAY_CONFIG"] == f"{mounts['config']}/gateway.toml"
    (secret,) = k8s("Secret")
    (name, text), *_ = embedded_tomls()
    settings = tomllib.loads(text)
    named = [settings["cache"]["access_key_env"], settings["cache"]["secret_key_env"]]
    named += [u["keys_env"] for u in settings["upstreams"]]
    assert set(named) <= set(secret["stringData"]), name
    probes = [container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")]
    assert probes == ["/readyz", "/healthz"] and set(probes) <= PROBE_PATHS
    assert "preStop" in container["lifecycle"]
    kinds = {doc["kind"] for path, doc in yaml_documents() if "k8s" in path.parts}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "ServiceMonitor",
    } <= kinds
