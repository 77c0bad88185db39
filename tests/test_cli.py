"""The `flux-gateway` command as a newcomer and an operator meet it."""

from __future__ import annotations

import json
import re
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.keys import hash_key
from gateway.settings import Settings
from tests.demo_process import CLI, clean_env, running_demo
from tests.helpers import free_port

UPSTREAM = (
    '[[upstreams]]\nname = "apiyi"\nbase_url = "https://api.apiyi.com/v1"\n'
    'keys_env = "MY_KEYS"\nmodels = ["flux-2-pro"]\n'
)
TEAM = f'[[teams]]\nname = "design"\nkey_hashes = ["{hash_key("sk-design")}"]\n'
S3_CACHE = (
    '[cache]\nbackend = "s3"\nbucket = "images"\n'
    'access_key_env = "MY_S3_ACCESS"\nsecret_key_env = "MY_S3_SECRET"\n'
)
KEYS_SET = {"MY_KEYS": "upstream-secret-1"}
S3_SET = {"MY_S3_ACCESS": "access-id", "MY_S3_SECRET": "s3-secret-value"}


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(**(env or {})),
        cwd=cwd,
    )


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


def test_serve_without_config_says_what_is_missing() -> None:
    result = run("serve")
    assert result.returncode == 2
    assert result.stderr.splitlines()[:3] == [
        "flux-gateway serve: cannot start:",
        "  - no [[upstreams]] are configured",
        "  - no [[teams]] with key_hashes are configured "
        "(make one: flux-gateway keys new --team NAME)",
    ]
    assert "flux-gateway demo" in result.stderr


def test_serve_with_upstream_but_no_keys(tmp_path: Path) -> None:
    result = run("serve", "--config", config(tmp_path, UPSTREAM + TEAM))
    assert result.returncode == 2
    assert "  - upstream 'apiyi' has no keys (set the environment variable MY_KEYS)" in (
        result.stderr.splitlines()
    )


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    result = run("check-config", "--config", config(tmp_path, "[server]\nprot = 9000\n"))
    assert result.returncode != 0
    assert "prot" in result.stderr


def test_keys_new_prints_key_and_hash_line() -> None:
    result = run("keys", "new", "--team", "design")
    assert result.returncode == 0
    key = next(line for line in result.stdout.splitlines() if line.startswith("sk-fg-"))
    assert f'key_hashes = ["{hash_key(key)}"]' in result.stdout


def test_keys_new_admin_prints_the_admin_line_that_opens_the_admin_api(tmp_path: Path) -> None:
    result = run("keys", "new", "--admin")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    key = next(line for line in lines if line.startswith("sk-fg-"))
    assert (
        lines[-2] == "# put this line in the [admin] section (add to the list for several admins):"
    )
    assert lines[-1] == f'key_hashes = ["{hash_key(key)}"]'
    settings = Settings.load(config(tmp_path, "[admin]\n" + lines[-1] + "\n"))
    assert settings.admin.key_hashes == [hash_key(key)]


def test_check_config_masks_secrets_and_reads_env(tmp_path: Path) -> None:
    path = config(tmp_path, UPSTREAM + '[[teams]]\nname = "dev"\nkeys = ["sk-plain-secret-1"]\n')
    result = run(
        "check-config",
        env={
            "GATEWAY_CONFIG": path,
            "MY_KEYS": "upstream-secret-1,upstream-secret-2",
            "GATEWAY_SERVER__PORT": "9123",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "upstream-secret" not in result.stdout + result.stderr
    assert "sk-plain-secret-1" not in result.stdout + result.stderr
    assert result.stdout.count("fp:") == 3
    assert '"port": 9123' in result.stdout
    assert result.stderr.splitlines() == [
        "warning: team 'dev' lists plaintext keys: use key_hashes in production"
    ]


def test_check_config_masks_the_redis_password_and_tokens(tmp_path: Path) -> None:
    text = (
        '[server]\nmetrics_token = "scrape-token-value"\n'
        '[state]\nbackend = "redis"\nredis_url = "redis://app:hunter2-pw@127.0.0.1:6379/0"\n'
        + UPSTREAM
        + TEAM
    )
    result = run("check-config", "--config", config(tmp_path, text), env=KEYS_SET)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["state"]["redis_url"] == "redis://app:***@127.0.0.1:6379/0"
    assert resolved["server"]["metrics_token"] == "***"
    assert "hunter2-pw" not in result.stdout + result.stderr
    assert "scrape-token-value" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "env", "reason"),
    [
        ("", {}, "no [[upstreams]] are configured"),
        (
            UPSTREAM + TEAM,
            {},
            "upstream 'apiyi' has no keys (set the environment variable MY_KEYS)",
        ),
        (
            S3_CACHE + UPSTREAM + TEAM,
            {**KEYS_SET, "MY_S3_ACCESS": "access-id"},
            "cache credentials: the environment variable MY_S3_SECRET is empty",
        ),
        (UPSTREAM, KEYS_SET, "no [[teams]] with key_hashes are configured"),
        (
            UPSTREAM.replace('["flux-2-pro"]', '["flux-9"]') + TEAM,
            KEYS_SET,
            "upstream 'apiyi': unknown models flux-9",
        ),
    ],
    ids=["no-config", "unset-keys-env", "unset-s3-credentials", "no-teams", "unknown-model"],
)
def test_check_config_fails_with_the_reason_serve_refuses(
    tmp_path: Path, text: str, env: dict[str, str], reason: str
) -> None:
    args = ("--config", config(tmp_path, text)) if text else ()
    checked = run("check-config", *args, env=env)
    served = run("serve", *args, env=env)
    assert served.returncode == 2
    assert any(line.startswith(f"  - {reason}") for line in served.stderr.splitlines())
    assert checked.returncode == 2
    assert any(line.startswith(f"error: {reason}") for line in checked.stderr.splitlines())
    assert checked.stderr.splitlines()[-1] == (
        "flux-gateway serve would refuse to start on this config."
    )


def test_check_config_passes_where_serve_starts(tmp_path: Path) -> None:
    result = run(
        "check-config",
        "--config",
        config(tmp_path, S3_CACHE + UPSTREAM + TEAM),
        env={**KEYS_SET, **S3_SET},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "s3-secret-value" not in result.stdout


def test_check_config_prints_errors_before_warnings(tmp_path: Path) -> None:
    text = UPSTREAM + '[[teams]]\nname = "dev"\nkeys = ["sk-plain-secret-1"]\n'
    result = run("check-config", "--config", config(tmp_path, text))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: upstream 'apiyi' has no keys (set the environment variable MY_KEYS)",
        "warning: team 'dev' lists plaintext keys: use key_hashes in production",
        "flux-gateway serve would refuse to start on this config.",
    ]


def test_demo_banner_lines_paste_into_a_shell(tmp_path: Path) -> None:
    """The export lines, the sample request and the curl line run as printed, in bash."""
    with running_demo(tmp_path / "data") as demo:
        assert demo.base_url == f"http://127.0.0.1:{demo.port}/v1"
        lines = demo.banner.splitlines()
        exports = [line for line in lines if line.startswith("export ")]
        start = next(i for i, line in enumerate(lines) if line.endswith("<<'PY'"))
        sample = lines[start : lines.index("PY", start) + 1]
        curl_at = next(i for i, line in enumerate(lines) if line.startswith("curl "))
        curl = lines[curl_at : curl_at + 2]
        script = "\n".join(["set -e", *exports, *sample, *curl, ""])
        result = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=60, env=clean_env()
        )
        assert result.returncode == 0, result.stderr
        sdk_link, curl_answer = result.stdout.splitlines()
        assert sdk_link.startswith(f"http://127.0.0.1:{demo.port}/images/")
        assert httpx.get(sdk_link).content[:3] == b"\xff\xd8\xff"
        assert json.loads(curl_answer)["data"][0]["url"].startswith(
            f"http://127.0.0.1:{demo.port}/images/"
        )


def test_demo_admin_key_opens_the_operator_api_and_the_client_key_does_not(
    tmp_path: Path,
) -> None:
    with running_demo(tmp_path / "data") as demo:
        usage = f"http://127.0.0.1:{demo.port}/admin/usage"
        admin = httpx.get(usage, headers={"authorization": f"Bearer {demo.admin_key}"})
        client = httpx.get(usage, headers={"authorization": f"Bearer {demo.client_key}"})
        assert admin.status_code == 200
        assert client.status_code == 401
        assert demo.value(r"^Web console: (\S+)$") == f"http://127.0.0.1:{demo.port}/console"


def test_demo_prints_where_the_upstream_requests_are_recorded(tmp_path: Path) -> None:
    with running_demo(tmp_path / "data") as demo:
        sdk = openai.OpenAI(base_url=demo.base_url, api_key=demo.client_key, max_retries=0)
        sdk.images.generate(model="flux-2-pro", prompt="a lighthouse", size="1536x1024")
        record = httpx.get(demo.value(r"^What the gateway sent upstream: (\S+)$")).json()
        posts = [r for r in record["requests"] if r["method"] == "POST"]
        assert [(p["json"]["prompt"], p["json"]["aspect_ratio"]) for p in posts] == [
            ("a lighthouse", "3:2")
        ]


def test_demo_keeps_its_keys_across_restarts_unless_asked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_demo(data) as first:
        keys = (first.client_key, first.admin_key)
    key_file = data / "demo-keys.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert json.loads(key_file.read_text()) == {"client_key": keys[0], "admin_key": keys[1]}
    with running_demo(data) as again:
        assert (again.client_key, again.admin_key) == keys
        assert f"Both keys are kept in {key_file} " in again.banner
    with running_demo(data, "--new-key") as renewed:
        assert renewed.client_key not in keys
        assert renewed.admin_key not in keys
        models = f"http://127.0.0.1:{renewed.port}/v1/models"
        old = httpx.get(models, headers={"authorization": f"Bearer {keys[0]}"})
        new = httpx.get(models, headers={"authorization": f"Bearer {renewed.client_key}"})
        assert (old.status_code, new.status_code) == (401, 200)


def test_demo_log_level_info_shows_a_json_line_per_request(tmp_path: Path) -> None:
    with running_demo(tmp_path / "data", "--log-level", "info") as demo:
        sdk = openai.OpenAI(base_url=demo.base_url, api_key=demo.client_key, max_retries=0)
        sdk.images.generate(model="flux-2-pro", prompt="a lighthouse")
        assert demo.process.stdout is not None
        for line in demo.process.stdout:
            entry = json.loads(line)
            if entry.get("route") == "/v1/images/generations":
                break
        assert (entry["team"], entry["model"], entry["status"]) == ("demo", "flux-2-pro", 200)


def test_demo_on_a_busy_port_is_one_line(tmp_path: Path, busy_port: int) -> None:
    result = run("demo", "--port", str(busy_port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"flux-gateway demo: cannot listen on 127.0.0.1:{busy_port}: "
        "Address already in use (pass another --port)\n"
    )


def test_sim_on_a_busy_port_is_one_line(busy_port: int) -> None:
    result = run("sim", "--port", str(busy_port))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"flux-gateway sim: cannot listen on 127.0.0.1:{busy_port}: "
        "Address already in use (pass another --port)\n"
    )


def test_serve_on_a_busy_port_names_the_cause(tmp_path: Path, busy_port: int) -> None:
    path = config(tmp_path, UPSTREAM + TEAM)
    result = run("serve", "--config", path, "--port", str(busy_port), env=KEYS_SET)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "address already in use" in line] == [
        f"[Errno 98] error while attempting to bind on address ('127.0.0.1', {busy_port}): "
        "address already in use"
    ]


def test_demo_with_an_unusable_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    data = tmp_path / "a-file" / "demo"
    result = run("demo", "--port", str(free_port()), "--data-dir", str(data))
    assert result.returncode == 1
    assert result.stderr == (
        f"flux-gateway demo: cannot write {data}/demo-keys.json: Not a directory "
        "(pass another --data-dir)\n"
    )


def test_demo_with_a_damaged_key_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "demo-keys.json").write_text("{not json")
    result = run("demo", "--port", str(free_port()), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == (
        f"flux-gateway demo: {tmp_path}/demo-keys.json is not a demo key file "
        "(remove it or pass --new-key)\n"
    )


@pytest.mark.parametrize("command", ["serve", "demo", "sim"])
def test_a_port_out_of_range_is_refused_before_start(command: str) -> None:
    result = run(command, "--port", "70000")
    assert result.returncode == 2
    assert re.search(r"argument --port: 70000 is not a TCP port \(1-65535\)$", result.stderr)
