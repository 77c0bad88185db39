"""Upstream text made safe to show: every configured key and every key-shaped token removed.

A hostile or careless upstream may echo the key it was sent ("your key sk-… is invalid"), so
no upstream text reaches a client, a log line or `/admin/errors` before it passed through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
MAX_DETAIL = 200
_KEY_SHAPED = re.compile(
    r"""
    (?:bearer\s+)\S+                                  # an echoed Authorization header
    | \b(?:sk|pk|rk|ak|key|token|bfl)[-_][A-Za-z0-9_\-]{6,}
    | \b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b
    | [A-Za-z0-9_\-+/=]{24,}                            # any long opaque token
    """,
    re.IGNORECASE | re.VERBOSE,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Redactor:
    """Knows the keys of one upstream; `clean` returns text with none of them left in it."""

    def __init__(self, keys: Iterable[str]) -> None:
        # Longest first, so a key that contains another is removed whole.
        self.keys = sorted({k for k in keys if k}, key=len, reverse=True)

    def clean(self, text: str) -> str:
        for key in self.keys:
            text = text.replace(key, REDACTED)
        text = _KEY_SHAPED.sub(REDACTED, text)
        text = _CONTROL.sub(" ", text).strip()
        if len(text) > MAX_DETAIL:
            text = text[:MAX_DETAIL].rstrip() + "…"
        return text

    def detail(self, text: object) -> str:
        """An upstream's message as a suffix for the gateway's own: `: <clean text>` or ''."""
        if not isinstance(text, str):
            return ""
        cleaned = self.clean(text)
        return f" (upstream said: {cleaned})" if cleaned else ""
