"""Bandit series: several multi-armed bandits in one context, with new arms every round.

In-context strategy adaptation: each round the agent has to explore the arms, find the best
one and exploit it, and when the round ends (the obs announces it) forget what it learned and
start again. Each round one random arm pays with a probability drawn from `high` (default
0.7-0.9) and the others with probabilities from `low` (default 0.1-0.4): a clear gap, so a few
pulls tell the arms apart.

    obs      "round 1/3: new arms 1-3"                                   (first turn)
             "arm 2: 1" | "arm 2: 0; round 2/3: new arms 1-3" | "arm 3: 1; done" | "invalid"
    action   "2"   (an arm number from 1 to n_arms; "arm 2" works too)

Reward: the pull's Bernoulli reward, 0 or 1 (0 for an invalid action, which still uses up the
turn). The episode is rounds * pulls_per_round turns long and then terminates: that is the
task's natural end, so it is never truncated.
success (on the last turn): in every round, each of the last `judged_pulls` pulls took the
best arm; exploring early in a round is free, ending on the best arm is what counts. A
uniformly random policy succeeds with probability (1/n_arms) ** (rounds * judged_pulls),
about 0.14% with the defaults.
info: valid_action, success, best_arm (this pull took the best arm), regret (best arm's
probability minus the pulled arm's; the best one's for an invalid action).

Experts (`expert`): "explore_commit" (default) plays only on what the agent has seen: each
round it pulls every arm once, in order, then the arm with the best observed win rate so far
(ties: the lower arm), so a policy can learn it from the context. "oracle" pulls the best arm
every time and always succeeds, but reads the hidden payout probabilities: imitating it
teaches nothing a policy can infer.

`blind=True` is the control without the capability: observations say "arm 2: ?" instead of
the pull's 0 or 1 (same lengths, same rewards), so nothing in the context tells the arms apart.

Sizes (kwargs): n_arms=3, pulls_per_round=5, rounds=3, judged_pulls=2 (max_turns 15);
obs_len 33 (the longest obs), action_len 7.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs import parse
from jarl.envs.base import TextEnv, register
from jarl.envs.codec import Codec, Tokens

show_if = Codec.show_if

Array = jax.Array


@flax.struct.dataclass
class BanditState:
  probs_RxK: Array  # f32 [rounds, n_arms], each round's payout probabilities
  turn: Array  # int32, pulls so far
  judged_ok: Array  # bool, every judged pull so far took the best arm
  pulls_K: Array  # int32 [n_arms], this round's pulls of each arm (what the agent has seen)
  wins_K: Array  # int32 [n_arms], and their wins


@register("bandit_series")
class BanditSeries(TextEnv):
  instructions = ("Each turn pull one arm by answering its number, e.g. 2, to win as many 1s as you can; "
                  "the arms change every round.")

  def __init__(self, codec: Codec, n_arms: int = 3, pulls_per_round: int = 5, rounds: int = 3,
               judged_pulls: int = 2, high: tuple[float, float] = (0.7, 0.9), low: tuple[float, float] = (0.1, 0.4),
               expert: str = "explore_commit", blind: bool = False):
    if n_arms < 2 or not 1 <= judged_pulls <= pulls_per_round or rounds < 1 or max(low) >= min(high):
      raise ValueError("need n_arms >= 2, 1 <= judged_pulls <= pulls_per_round, rounds >= 1, low below high")
    if expert not in EXPERTS:
      raise ValueError(f"unknown bandit_series expert {expert!r}; available: {sorted(EXPERTS)}")
    self.n_arms, self.pulls, self.rounds, self.judged = n_arms, pulls_per_round, rounds, judged_pulls
    self.expert, self.blind = expert, blind
    self.high, self.low = high, low
    tail = f"/{rounds}: new arms 1-{n_arms}"
    longest = f"arm {n_arms}: 1; round {rounds}{tail}"
    super().__init__(codec, obs_len=len(longest), action_len=len(str(n_arms)) + 6, max_turns=rounds * pulls_per_round)
    words = dict(arm="arm ", colon=": ", invalid="invalid", round="round ", new_round="; round ", tail=tail,
                 done="; done")
    self._words = {k: codec.tokens(v, len(v)) for k, v in words.items()}
    self._rewards = codec.piece_table(["?", "?"] if blind else ["0", "1"])

  def reset(self, key: Array) -> tuple[BanditState, Tokens]:
    R, K = self.rounds, self.n_arms
    u_RxK1 = jax.random.uniform(key, (R, K + 1))  # one draw: each round's probabilities and best arm
    best_R = jnp.minimum((u_RxK1[:, K] * K).astype(jnp.int32), K - 1)
    is_best_RxK = jnp.arange(K)[None, :] == best_R[:, None]
    (lo0, lo1), (hi0, hi1) = self.low, self.high
    probs_RxK = jnp.where(is_best_RxK, hi0 + (hi1 - hi0) * u_RxK1[:, :K], lo0 + (lo1 - lo0) * u_RxK1[:, :K])
    W = self._words
    obs = self.codec.concat([W["round"], self._number(1), W["tail"]], self.obs_len)
    zeros_K = jnp.zeros((K,), jnp.int32)
    return BanditState(probs_RxK.astype(jnp.float32), jnp.int32(0), jnp.bool_(True), zeros_K, zeros_K), obs

  def step(self, state: BanditState, action: Tokens, key: Array):
    M, T = self.pulls, self.rounds * self.pulls
    probs_K = state.probs_RxK[jnp.minimum(state.turn // M, self.rounds - 1)]
    bytes_N, n = self.codec.to_bytes(action, 2 * self.action_len)
    arm_1, count, ok = parse.parse_ints(bytes_N, n, 1)
    arm = arm_1[0] - 1
    valid = ok & (count == 1) & (arm >= 0) & (arm < self.n_arms)
    p = jnp.where(valid, probs_K[jnp.clip(arm, 0, self.n_arms - 1)], 0.0)
    win = valid & (jax.random.uniform(key) < p)
    best = valid & (arm == jnp.argmax(probs_K))
    judged = state.turn % M >= M - self.judged
    judged_ok = state.judged_ok & (best | ~judged)
    turn = state.turn + 1
    done = turn >= T
    new_round = (turn % M == 0) & ~done
    pulled_K = valid & (jnp.arange(self.n_arms) == arm)
    pulls_K = jnp.where(new_round, 0, state.pulls_K + pulled_K)
    wins_K = jnp.where(new_round, 0, state.wins_K + (pulled_K & win))
    W = self._words
    obs = self.codec.concat([
        show_if(W["arm"], valid), show_if(self._number(arm + 1), valid), show_if(W["colon"], valid),
        show_if(self.codec.select(self._rewards, win.astype(jnp.int32)), valid), show_if(W["invalid"], ~valid),
        show_if(W["new_round"], new_round), show_if(self._number(turn // M + 1), new_round), show_if(W["tail"], new_round),
        show_if(W["done"], done)], self.obs_len)
    info = dict(valid_action=valid, success=done & judged_ok, best_arm=best, regret=(probs_K.max() - p))
    return (state.replace(turn=turn, judged_ok=judged_ok, pulls_K=pulls_K, wins_K=wins_K), obs, win.astype(jnp.float32), done, jnp.bool_(False),
            info)

  def _number(self, n: Array) -> Tokens:
    return self.codec.number(n, max(len(str(self.n_arms)), len(str(self.rounds))))

  def expert_action(self, state: BanditState) -> str:
    return str(EXPERTS[self.expert](self, state) + 1)

  def _oracle(self, state: BanditState) -> int:
    return int(np.argmax(np.asarray(state.probs_RxK)[min(int(state.turn) // self.pulls, self.rounds - 1)]))

  def _explore_commit(self, state: BanditState) -> int:
    pulls_K, wins_K = np.asarray(state.pulls_K), np.asarray(state.wins_K)
    if (pulls_K == 0).any():
      return int(np.argmin(pulls_K > 0))  # the first arm not yet pulled this round
    return int(np.argmax(wins_K / pulls_K))  # the best observed win rate (first on ties)

  def render(self, state: BanditState) -> str:
    turn = int(state.turn)
    r = min(turn // self.pulls, self.rounds - 1)
    probs = " ".join(f"{p:.2f}" for p in np.asarray(state.probs_RxK)[r])
    return f"round {r + 1}/{self.rounds}, pull {turn - r * self.pulls}/{self.pulls}: arm probabilities {probs}"


EXPERTS = {"explore_commit": BanditSeries._explore_commit, "oracle": BanditSeries._oracle}
