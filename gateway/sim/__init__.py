"""The upstream simulator: both FLUX protocols on one port, for tests, benchmarks and `demo`."""

from gateway.sim.app import create_sim_app
from gateway.sim.config import Faults, SimConfig

__all__ = ["Faults", "SimConfig", "create_sim_app"]
