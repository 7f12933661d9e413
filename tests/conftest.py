"""Test setup: 8 fake CPU devices for sharding tests (must precede the first jax import), and
a persistent compilation cache so identical programs built by different tests compile once."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JARL_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "jarl-test-jax-cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
