"""Shared test setup: 8 fake CPU devices for every test process, repo paths."""
import os
import pathlib
import sys

# Must be set before jax initialises its backends; sharding tests need 8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
