"""The tiny trainer config; kept as a name for tests written before test_util.py held it."""
from test_util import small_config  # noqa: F401  pylint: disable=unused-import
