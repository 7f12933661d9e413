"""RL algorithms as pure, shape-asserted functions, registered by name (see registry.py)."""

from jarl.algos import registry
from jarl.algos import advantages, credit, losses
from jarl.algos.advantages import Estimate, group_stats, turn_state_keys
from jarl.algos.losses import (bradley_terry, dpo, kl_loss, kl_penalty_rewards, masked_mean, token_logprob_entropy,
                               value_loss)
from jarl.algos.registry import (get_advantage, get_aggregation, get_credit, get_kl, get_policy_loss,
                                 register_advantage, register_aggregation, register_credit, register_kl,
                                 register_policy_loss, registered)
