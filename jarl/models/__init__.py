"""Decoder LMs as pure functions over a params pytree."""

from jarl.models import lora
from jarl.models.config import PRESETS, ModelConfig, preset
from jarl.models.gguf import load_gguf, packaged
from jarl.models.hf import config_from_hf, config_to_hf, from_pretrained, save_pretrained
from jarl.models.lm import LM, abstract, cache_shardings, create, from_params, reward_from_lm, with_value_head
from jarl.models.lora import LoRAConfig
from jarl.models.transformer import KVCache
