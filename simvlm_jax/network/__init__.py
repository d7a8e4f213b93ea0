"""The SimVLM network (Flax modules); the training interface lives elsewhere.

Public API: `SimVLMConfig`, `get_config`, `tiny_config`, `SimVLMNetwork`.
"""

from simvlm_jax.network.configs import SimVLMConfig, get_config, tiny_config
from simvlm_jax.network.simvlm import SimVLMNetwork

__all__ = ["SimVLMConfig", "SimVLMNetwork", "get_config", "tiny_config"]
