"""`create_sim_app`: the one place the simulator's routes and state are put together."""

from __future__ import annotations

from starlette.applications import Starlette

from gateway.sim import bfl, control, openai_images, results
from gateway.sim.config import SimConfig
from gateway.sim.state import SimState


def create_sim_app(config: SimConfig | None = None) -> Starlette:
    """A Starlette app serving both upstream protocols, result links and `/_sim` control."""
    app = Starlette(routes=[*control.routes, *results.routes, *openai_images.routes, *bfl.routes])
    app.state.sim = SimState(config or SimConfig())
    return app
