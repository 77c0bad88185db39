"""Debian packages some tests need: a failure under CI (which installs them), else a skip that
names the exact install line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PACKAGES = "prometheus chromium firefox-esr nodejs npm"
INSTALL = f"sudo apt-get install -y {PACKAGES}"
"""The one line, also in the README beside the test command and run by `.ci/run`."""


def require(name: str) -> str:
    """The path of a program (a name on PATH or an absolute path), or fail/skip saying how."""
    found = name if Path(name).is_absolute() and Path(name).exists() else shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is missing: {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
