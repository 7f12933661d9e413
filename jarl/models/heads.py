"""Value head and scalar reward head over the shared decoder backbone.

`PolicyWithValue`: the LM plus a value head on the same final hidden states,
returning (logits_BxTxV, values_BxT, cache). `RewardModel`: a backbone without an
LM head plus a scalar head read at each row's last valid token, returning rewards_B.
Both are used through the same pure `apply(params, ...)` as the plain LM.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jarl.models.config import ModelConfig
from jarl.models.transformer import Transformer


class ScalarHead(nnx.Module):
  """h_BxTxD -> float32 scalars [B, T]."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, stddev: float = 0.0):
    init = nnx.initializers.normal(stddev) if stddev else nnx.initializers.zeros_init()
    self.kernel = nnx.Param(init(rngs.params(), (cfg.d_model,), jnp.float32), axes=("embed",))
    self.bias = nnx.Param(jnp.zeros((), jnp.float32), axes=())

  def __call__(self, h_BxTxD: jax.Array) -> jax.Array:
    return h_BxTxD.astype(jnp.float32) @ self.kernel[...] + self.bias[...]


class PolicyWithValue(nnx.Module):
  """Shared backbone, LM head for the policy and a zero-initialised value head."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.lm = Transformer(cfg, rngs)
    self.value_head = ScalarHead(cfg, rngs)

  def __call__(self, tokens_BxT, positions_BxT=None, cache=None, valid_BxT=None):
    h_BxTxD, cache = self.lm.hidden(tokens_BxT, positions_BxT, cache, valid_BxT)
    return self.lm.logits(h_BxTxD), self.value_head(h_BxTxD), cache

  def hidden(self, tokens_BxT, positions_BxT=None, cache=None, valid_BxT=None, segment_BxT=None):
    """The backbone's `hidden` (the rollout samples a policy_value handle through these two)."""
    return self.lm.hidden(tokens_BxT, positions_BxT, cache, valid_BxT, segment_BxT)

  def logits(self, h_BxTxD):
    return self.lm.logits(h_BxTxD)

  def value(self, h_BxTxD):
    """Values [B, T] from final hidden states (best-of-K scores candidates with it)."""
    return self.value_head(h_BxTxD)


def last_valid_index(valid_BxT: jax.Array) -> jax.Array:
  """Index of each row's last True slot (0 for an all-False row)."""
  T = valid_BxT.shape[1]
  return jnp.max(jnp.where(valid_BxT, jnp.arange(T)[None, :], 0), axis=1)


class RewardModel(nnx.Module):
  """Backbone (no LM head) + scalar head at the last non-pad token: rewards_B."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.backbone = Transformer(cfg, rngs, lm_head=False)
    self.head = ScalarHead(cfg, rngs, stddev=cfg.d_model ** -0.5)

  def __call__(self, tokens_BxT, positions_BxT=None, valid_BxT=None):
    if valid_BxT is None:
      valid_BxT = jnp.ones(tokens_BxT.shape, bool)
    h_BxTxD, _ = self.backbone.hidden(tokens_BxT, positions_BxT, None, valid_BxT)
    scores_BxT = self.head(h_BxTxD)
    return jnp.take_along_axis(scores_BxT, last_valid_index(valid_BxT)[:, None], axis=1)[:, 0]
