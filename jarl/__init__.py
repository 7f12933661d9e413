"""jarl: JAX-native, high-throughput learner for agentic RL of language models."""

from jarl import models, sharding
from jarl.models import LM, ModelConfig, create, preset

__version__ = "0.1.0"
