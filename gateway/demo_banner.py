"""What `flux-gateway demo` prints once it listens: lines to paste, keys, where to look."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from gateway.demo_keys import DemoKeys


def python_command() -> str:
    """The interpreter running the demo (the one with the OpenAI SDK), as short as it can be."""
    relative = os.path.relpath(sys.executable)
    return relative if not relative.startswith("..") else sys.executable


def banner(base_url: str, keys: DemoKeys, key_file: Path, sim_url: str) -> str:
    python = python_command()
    sdk_hint = (
        ""
        if importlib.util.find_spec("openai")
        else f"(the OpenAI SDK is not installed here: {python} -m pip install openai)\n"
    )
    return f"""flux-gateway demo: the gateway on {base_url}, wired to the built-in FLUX simulator
(no upstream account and no cost: the simulator draws the images).

Paste these two lines into your shell; any unchanged OpenAI SDK app then uses the demo:

export OPENAI_BASE_URL={base_url}/v1
export OPENAI_API_KEY={keys.client}

A sample request, from that shell:

{sdk_hint}{python} - <<'PY'
from openai import OpenAI
image = OpenAI().images.generate(model="flux-2-pro", prompt="a lighthouse", size="1536x1024")
print(image.data[0].url)
PY

or with curl:

curl -s "$OPENAI_BASE_URL/images/generations" -H "Authorization: Bearer $OPENAI_API_KEY" \\
     -H "Content-Type: application/json" -d '{{"model": "flux-2-pro", "prompt": "a lighthouse"}}'

Web console: {base_url}/console
  sign in with the OPENAI_API_KEY above: your team's gallery, playground and usage;
  sign in with the admin key below: the operator view (every team, the key pool, errors).
Admin key: {keys.admin}
What the gateway sent upstream: {sim_url}/_sim/requests

Both keys are kept in {key_file} and stay the same when the demo restarts
(--new-key makes new ones). Press Ctrl+C to stop."""
