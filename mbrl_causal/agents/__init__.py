"""The Dreamer-style agent: config, replay, adaptation and :class:`CausalDreamer`."""

from mbrl_causal.agents.config import AgentConfig
from mbrl_causal.agents.dreamer.agent import CausalDreamer

__all__ = ["AgentConfig", "CausalDreamer"]
