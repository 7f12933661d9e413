"""Pure-JAX text environments (one file each), the host-environment bridge, `check` (the TextEnv
contracts) and `import_module` (a user's file of envs)."""

from jarl.envs import parse
from jarl.envs.base import TextEnv, make, register, registered
from jarl.envs.checks import ContractError, check
from jarl.envs.codec import Codec, Tokens
from jarl.envs.user_module import import_module
# Importing the built-in envs registers them with `make`.
from jarl.envs import (bandit_series, countdown, frozenlake, mastermind, path_star, sokoban,  # noqa: F401,E402
                       sort_repair, subgoal_maze)
