"""Shared test setup: 8 fake CPU devices for every test process, repo paths."""
import os
import pathlib
import sys
import tempfile

# Must be set before jax initialises its backends; sharding tests need 8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
from ceeh_jax import tokenizer as _tokenizer_lib  # noqa: E402  (after the path)
# The real R1-Distill tokenizer, vendored in the package: no test reads outside the repository.
R1_TOKENIZER = pathlib.Path(_tokenizer_lib.R1_TOKENIZER_DIR)

# Trainer tests rebuild the same jitted programs many times: a persistent compilation cache
# turns the repeats into disk hits.
import jax  # noqa: E402  (after XLA_FLAGS)
XLA_CACHE = os.environ.get('CEEH_JAX_TEST_CACHE',
                           os.path.join(tempfile.gettempdir(), 'ceeh_jax_test_xla_cache'))
jax.config.update('jax_compilation_cache_dir', XLA_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
