"""The Dreamer-style agent: losses, actor-critic and the agent class."""
