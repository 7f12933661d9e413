"""The TextEnv contract checks, re-exported for jarl's env tests (they live in `jarl.envs.checks`)."""

from jarl.envs.checks import (FUZZ_ALPHABET, ContractError, check, check_contract, check_expert_solves,  # noqa: F401
                              check_jit_matches_eager, check_sizes, check_vmap_matches_single)
