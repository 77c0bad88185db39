"""The README as a newcomer follows it: its commands and every Python example, as written."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.demo_process import Demo, running_demo
from tests.system_tools import INSTALL

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
FIRST_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -e ".[client]" && .venv/bin/flux-gateway demo'
)


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


PYTHON_BLOCKS = blocks("python")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("readme-demo")) as running:
        yield running


def test_readme_opens_with_the_demo_command_in_a_virtual_environment() -> None:
    first, second = blocks("bash")[:2]
    assert first == FIRST_COMMAND + "\n"
    extra = re.search(r'install -e "\.\[(\w+)\]"', first)
    assert extra is not None
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = pyproject["project"]["optional-dependencies"][extra.group(1)]
    assert [r for r in requirements if r.startswith("openai")] == ["openai>=1.40"]
    assert second.startswith("python3 -m venv .venv && ")


def test_readme_test_command_is_what_ci_runs() -> None:
    test_command = blocks("bash")[1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_names_the_system_packages_the_skips_and_ci_name() -> None:
    """The browser, Prometheus and Node tests skip on a laptop with this line, and CI installs
    the same packages: one list in three places, kept equal here."""
    assert blocks("bash")[2].strip() == INSTALL
    ci = (ROOT / ".ci" / "run").read_text()
    for package in INSTALL.split("install -y ")[1].split():
        assert package in ci, package


def test_every_pip_install_in_the_docs_is_inside_the_virtual_environment() -> None:
    """Debian's own pip refuses a bare `pip install` (PEP 668): each command makes the venv."""
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    commands = [
        (document.name, line)
        for document in documents
        for code in blocks(r"\w*", document.read_text())
        for line in code.splitlines()
        if "pip install" in line
    ]
    assert len(commands) >= 3
    for where, line in commands:
        assert line.startswith("python3 -m venv .venv && .venv/bin/pip install"), (where, line)


def test_python_examples_take_the_address_and_key_from_the_environment() -> None:
    assert len(PYTHON_BLOCKS) >= 4
    for code in PYTHON_BLOCKS:
        assert "base_url=" not in code
        assert "api_key=" not in code
        assert "…" not in code
        assert "example.com" not in code


@pytest.mark.parametrize(
    "code", PYTHON_BLOCKS, ids=[f"block-{i}" for i, _ in enumerate(PYTHON_BLOCKS)]
)
def test_python_example_runs_as_written_against_the_demo(
    code: str, demo: Demo, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-"],
        input=code,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=demo.sdk_env(),
    )
    assert result.returncode == 0, result.stderr
    own = f"http://127.0.0.1:{demo.port}/images/"
    for link in result.stdout.split():
        assert link.startswith(own)
        served = httpx.get(link)
        assert served.status_code == 200
        assert served.headers["content-type"] in {"image/jpeg", "image/png"}
