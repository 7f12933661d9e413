"""Sample completions of a prompt and print them with the decoding speed.

    jarl generate --config configs/generate.py --config.prompt="Once upon a time"

Expect, with the defaults (a randomly initialised `tiny` model and the byte tokenizer):
four completions of random bytes (up to 64 tokens each; a row ends early if it samples
<eos>), then a line with the tokens/s and the compile time (a few seconds on a CPU).
For real text load a HF checkpoint, a local directory or a hub id, whose tokenizer is
then used:

    jarl generate --config.hf_path=Qwen/Qwen3-0.6B --config.prompt="The capital of France is"
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = "tiny"  # preset name, used when hf_path is empty
  c.hf_path = ""  # HF checkpoint directory or hub id (llama / qwen2 / qwen3)
  c.dtype = ""  # with hf_path: "float32" or "bfloat16" ("" = float32)
  c.tokenizer = ""  # "byte", or a HF tokenizer directory / hub id; "" = hf_path's, else "byte"
  c.prompt = "Once upon a time"
  c.num_samples = 4  # completions of the prompt, sampled as one batch
  c.max_new_tokens = 64
  c.temperature = 0.8  # 0 = greedy
  c.top_k = 0  # 0 = off
  c.top_p = 0.95  # 1 = off
  c.seed = 0  # model init (presets) and sampling key
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1 = the remaining devices
  return c
