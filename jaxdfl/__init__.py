"""jaxdfl: wireless federated and decentralized LoRA fine-tuning, simulated as pure, vmapped JAX programs.

    import jaxdfl
    summary, state = jaxdfl.run("quickstart", overrides=["rounds=10"], out="runs/nb")
"""

from jaxdfl.adapters import full, lora, make_method
from jaxdfl.config import Config, list_bundled, load_config
from jaxdfl.core import AdapterState, ExpertMixture, Message, Method, Mixed, RoundControl
from jaxdfl.errors import ConfigError, UserError
from jaxdfl.sim.build import Simulation, build_simulation
from jaxdfl.sim.evaluate import make_evaluate
from jaxdfl.sim.round import make_round_step, run_rounds
from jaxdfl.sim.run import run
from jaxdfl import diff  # noqa: E402  (after the engine it differentiates)
from jaxdfl.sim.state import RoundInputs, SimState
from jaxdfl.topology import Topology, build_topology, mix

__version__ = "0.1.0"

__all__ = [
    "AdapterState", "Config", "ConfigError", "ExpertMixture", "Message", "Method", "Mixed", "RoundControl", "diff",
    "RoundInputs", "SimState", "Simulation", "Topology", "UserError", "build_simulation", "build_topology", "full",
    "list_bundled", "load_config", "lora", "make_evaluate", "make_method", "make_round_step", "mix", "run",
    "run_rounds",
]
