"""`flux-gateway demo` as a real process, read the way a newcomer reads its banner."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port

CLI = [sys.executable, "-m", "gateway.cli"]
LAST_BANNER_LINE = "(--new-key makes new ones). Press Ctrl+C to stop."


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without GATEWAY_ and OPENAI_ settings, plus `extra`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    return {**kept, **extra}


@dataclass
class Demo:
    process: subprocess.Popen[str]
    port: int
    banner: str

    def value(self, pattern: str) -> str:
        """The first group of `pattern` matched against a whole banner line."""
        match = re.search(pattern, self.banner, re.MULTILINE)
        assert match is not None, f"{pattern!r} not in the banner:\n{self.banner}"
        return match.group(1)

    @property
    def base_url(self) -> str:
        return self.value(r"^export OPENAI_BASE_URL=(\S+)$")

    @property
    def client_key(self) -> str:
        return self.value(r"^export OPENAI_API_KEY=(\S+)$")

    @property
    def admin_key(self) -> str:
        return self.value(r"^Admin key: (\S+)$")

    def sdk_env(self) -> dict[str, str]:
        """What a shell has after pasting the two export lines."""
        return clean_env(OPENAI_BASE_URL=self.base_url, OPENAI_API_KEY=self.client_key)


@contextmanager
def running_demo(data_dir: Path, *options: str, cwd: Path | None = None) -> Iterator[Demo]:
    """A demo on a free port, once its banner is printed (it prints it when both listen)."""
    port = free_port()
    with subprocess.Popen(  # leaving the block closes the output pipe
        [*CLI, "demo", "--port", str(port), "--data-dir", str(data_dir), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
        cwd=cwd,
    ) as process:
        try:
            assert process.stdout is not None
            lines: list[str] = []
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if line.strip() == LAST_BANNER_LINE:
                    break
            assert lines and lines[-1] == LAST_BANNER_LINE, "\n".join(lines)
            yield Demo(process, port, "\n".join(lines))
        finally:
            process.terminate()
            process.wait(timeout=20)
