"""Upstream kinds behind one interface; the kind named in the config picks the class."""

from __future__ import annotations

import httpx

from gateway.catalog import Kind
from gateway.errors import ConfigError
from gateway.settings import UpstreamSettings
from gateway.upstreams.base import Upstream, UpstreamResult
from gateway.upstreams.bfl import BflUpstream
from gateway.upstreams.openai_images import OpenAIImagesUpstream
from gateway.upstreams.transport import AiohttpTransport

__all__ = ["Upstream", "UpstreamResult", "build_upstream"]

KINDS: dict[Kind, type[Upstream]] = {
    "openai-images": OpenAIImagesUpstream,
    "bfl": BflUpstream,
}


def build_upstream(settings: UpstreamSettings, *, trust_env: bool = False) -> Upstream:
    try:
        cls = KINDS[settings.kind]
    except KeyError:
        raise ConfigError(f"upstream {settings.name!r}: unknown kind {settings.kind!r}") from None
    timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
    client = httpx.AsyncClient(
        timeout=timeout,
        transport=AiohttpTransport(trust_env=trust_env),
        follow_redirects=False,
        trust_env=False,  # the transport decides (`server.trust_env`); httpx would mount its own
    )
    return cls(settings, client)
