"""jarl: JAX-native, high-throughput learner for agentic RL of language models."""

from jarl import host_memory

host_memory.apply_default()  # before JAX starts its threads; see jarl/host_memory.py

from jarl import models, sharding  # noqa: E402
from jarl.models import LM, ModelConfig, create, preset  # noqa: E402

__version__ = "0.1.0"
