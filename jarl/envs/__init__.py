"""Pure-JAX text environments (one file each) and the host-environment bridge."""

from jarl.envs import parse
from jarl.envs.base import TextEnv, make, register, registered
from jarl.envs.codec import Codec, Tokens
# Importing the built-in envs registers them with `make`.
from jarl.envs import (bandit_series, countdown, frozenlake, mastermind, path_star, sokoban,  # noqa: F401,E402
                       sort_repair, subgoal_maze)
