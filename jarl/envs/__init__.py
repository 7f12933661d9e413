"""Pure-JAX text environments (one file each) and the host-environment bridge."""

from jarl.envs.base import TextEnv, make, register, registered
from jarl.envs.codec import Codec, Tokens
