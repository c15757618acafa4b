"""jaxdfl: wireless federated and decentralized LoRA fine-tuning, simulated as pure, vmapped JAX programs.

    import jaxdfl
    summary, state = jaxdfl.run("quickstart", overrides=["rounds=10"], out="runs/nb")
"""

from jaxdfl.adapters import AdapterState, Message, Method, Mixed, full, lora, make_method
from jaxdfl.config import Config, list_bundled, load_config
from jaxdfl.errors import ConfigError, UserError
from jaxdfl.sim.engine import Simulation, build_simulation, make_evaluate, make_round_step
from jaxdfl.sim.run import run
from jaxdfl.sim.state import SimState
from jaxdfl.topology import Topology, build_topology, mix

__version__ = "0.1.0"

__all__ = [
    "AdapterState", "Config", "ConfigError", "Message", "Method", "Mixed", "SimState", "Simulation", "Topology",
    "UserError", "build_simulation", "build_topology", "full", "list_bundled", "load_config", "lora",
    "make_evaluate", "make_method", "make_round_step", "mix", "run",
]
