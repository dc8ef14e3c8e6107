"""The command line before absl parses it: config names, override keys, one-line errors.

ml_collections parses `--config.x.y=v` overrides while the flag is defined (or parsed), and a
misspelled key surfaces as a chain of three exceptions. `prepare_argv` resolves the
`--config` value (a path or a packaged name, see `shipped`) and checks every override key
against the loaded config first, so a typo is one `ConfigError` with a suggestion.
"""
import difflib
import re

import ml_collections

from ceeh_jax import errors
from ceeh_jax import shipped

_CONFIG_ARG = re.compile(r'^--?config(=|$)')
_OVERRIDE = re.compile(r'^--?(?:no)?config\.([^=]+)')


class ConfigKeyError(errors.UserError, KeyError):
  """An override names a key the config does not have."""

  def __str__(self):  # KeyError would quote the message
    return str(self.args[0])


def config_arg(argv: list[str]) -> tuple[int, str | None]:
  """(index in argv of the value, the `--config` value) of the last `--config`, or (-1, None)."""
  found = (-1, None)
  for i, arg in enumerate(argv):
    m = _CONFIG_ARG.match(arg)
    if m and m.group(1) == '=':
      found = (i, arg.split('=', 1)[1])
    elif m and i + 1 < len(argv):
      found = (i + 1, argv[i + 1])
  return found


def flat_keys(config, prefix: str = '') -> list[str]:
  """Every key path of a ConfigDict, sections included: ['batch_size', 'sampling', ...]."""
  out = []
  for key, value in config.items():
    out.append(prefix + key)
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out += flat_keys(value, f'{prefix}{key}.')
  return out


def check_override_key(config, key: str) -> None:
  """Raises ConfigKeyError unless `key` ('sampling.num_samples') names a field of `config`."""
  node = config
  for part in re.sub(r'\[[^\]]*\]', '', key).split('.'):  # `a.b[0]` indexes into field a.b
    if not (isinstance(node, (ml_collections.ConfigDict, dict)) and part in node):
      close = difflib.get_close_matches(key, flat_keys(config), n=1, cutoff=0.6)
      hint = f'; did you mean {close[0]}?' if close else ' (see the config file for its keys)'
      raise ConfigKeyError(f'unknown config key {key}{hint}')
    node = node[part]


def prepare_argv(argv: list[str], default_config: str) -> list[str]:
  """argv with the `--config` value resolved to a file and every override key checked.

  Raises errors.UserError (missing config, unknown key) before anything is parsed or built.
  """
  argv = list(argv)
  index, spec = config_arg(argv)
  if index >= 0:
    resolved = shipped.config_file(spec)
    argv[index] = argv[index][:len(argv[index]) - len(spec)] + resolved
    spec = resolved
  overrides = [m.group(1) for arg in argv if (m := _OVERRIDE.match(arg))]
  if overrides:
    config = shipped.load_config(spec or default_config)
    for key in overrides:
      check_override_key(config, key)
  return argv


def wants_traceback(argv: list[str], env: dict) -> bool:
  """`--verbosity=1` (or more, also `-v 1`) or CEEH_DEBUG=1: keep tracebacks for debugging."""
  if env.get('CEEH_DEBUG', '') not in ('', '0'):
    return True
  for i, arg in enumerate(argv):
    m = re.match(r'^--?(?:verbosity|v)(?:=(.*))?$', arg)
    if m:
      value = m.group(1) if m.group(1) is not None else (argv[i + 1] if i + 1 < len(argv) else '')
      try:
        return int(value) >= 1
      except ValueError:
        return False
  return False
