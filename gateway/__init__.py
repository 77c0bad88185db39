"""flux-gateway: an OpenAI-compatible gateway for FLUX image generation and editing."""

__version__ = "0.1.0"
