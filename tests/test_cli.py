"""The `flux-gateway` command as a newcomer and an operator meet it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from gateway.keys import hash_key
from tests.helpers import free_port, wait_http

CLI = [sys.executable, "-m", "gateway.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=cwd,
    )


def test_serve_without_config_says_what_is_missing() -> None:
    result = run("serve")
    assert result.returncode == 2
    assert "no [[upstreams]] are configured" in result.stderr
    assert "no [[teams]]" in result.stderr
    assert "flux-gateway demo" in result.stderr


def test_serve_with_upstream_but_no_keys(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[upstreams]]\nname = "apiyi"\nbase_url = "https://api.apiyi.com/v1"\n'
        'keys_env = "NO_SUCH_KEYS"\n'
        'models = ["flux-2-pro"]\n'
    )
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert (
        "upstream 'apiyi' has no keys (set the environment variable NO_SUCH_KEYS)" in result.stderr
    )


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[server]\nprot = 9000\n")
    result = run("check-config", "--config", str(config))
    assert result.returncode != 0
    assert "prot" in result.stderr


def test_keys_new_prints_key_and_hash_line() -> None:
    result = run("keys", "new", "--team", "design")
    assert result.returncode == 0
    key = next(line for line in result.stdout.splitlines() if line.startswith("sk-fg-"))
    assert f'key_hashes = ["{hash_key(key)}"]' in result.stdout


def test_check_config_masks_secrets_and_reads_env(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[upstreams]]\nname = "apiyi"\nbase_url = "https://api.apiyi.com/v1"\n'
        'keys_env = "MY_KEYS"\n'
        'models = ["flux-2-pro"]\n[[teams]]\nname = "dev"\nkeys = ["sk-plain-secret-1"]\n'
    )
    result = run(
        "check-config",
        env={
            "GATEWAY_CONFIG": str(config),
            "MY_KEYS": "upstream-secret-1,upstream-secret-2",
            "GATEWAY_SERVER__PORT": "9123",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "upstream-secret" not in result.stdout + result.stderr
    assert "sk-plain-secret-1" not in result.stdout + result.stderr
    assert result.stdout.count("fp:") == 3
    assert '"port": 9123' in result.stdout
    assert "plaintext keys" in result.stderr


def test_demo_prints_ready_lines_and_serves_the_sdk(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "demo", "--port", str(port), "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: dict[str, str] = {}
        for line in process.stdout:
            if match := re.match(r"^(OPENAI_BASE_URL|OPENAI_API_KEY)=(\S+)$", line.strip()):
                lines[match.group(1)] = match.group(2)
            if len(lines) == 2:
                break
        assert lines["OPENAI_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        client = openai.OpenAI(
            base_url=lines["OPENAI_BASE_URL"], api_key=lines["OPENAI_API_KEY"], max_retries=0
        )
        result = client.images.generate(model="flux-2-pro", prompt="a lighthouse", size="1536x1024")
        served = httpx.get(result.data[0].url)
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/jpeg"
        assert served.content[:3] == b"\xff\xd8\xff"
    finally:
        process.terminate()
        process.wait(timeout=20)
