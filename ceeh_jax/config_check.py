"""Config validation: every bad value fails here, with its key, before anything compiles."""
import math

import jax

from ceeh_jax import errors
from ceeh_jax import sharding as sharding_lib

GROUP_RELATIVE = ('grpo', 'length_penalty', 'ceeh_me', 'ceeh_ea', 'egrc', 'entra', 'hapo',
                  'thinkprune', 'dler', 'laser', 'laser_d', 'grpo_lambda', 'arora_zanette')


class ConfigError(errors.UserError, ValueError):
  """A config value that cannot work, named by its key."""


def _positive(config, *keys):
  for key in keys:
    value = config
    for part in key.split('.'):
      value = value[part]
    if not isinstance(value, (int, float)) or value <= 0:
      raise ConfigError(f'config.{key} must be a positive number, got {value!r}')


def validate(config, num_devices: int | None = None) -> None:
  """Raises ConfigError naming the key for any value that cannot work."""
  _positive(config, 'batch_size', 'minibatch_size', 'micro_batch_size', 'total_steps',
            'sampling.num_samples', 'sampling.max_new_tokens', 'data.max_prompt_tokens',
            'optim.lr', 'grading.timeout_s', 'checkpoint_every', 'keep_checkpoints',
            'logp_chunk', 'model.decode_chunk')
  if config.method not in GROUP_RELATIVE:
    raise ConfigError(f'config.method must be one of {GROUP_RELATIVE}, got {config.method!r}')
  g = config.sampling.num_samples
  if g < 2:
    raise ConfigError(f'config.sampling.num_samples must be >= 2 for the group-relative method '
                      f'{config.method!r} (the advantage is r - mean over the group), got {g}')
  if config.sampling.get('unroll_layers', 'auto') not in (True, False, 'auto'):
    raise ConfigError("config.sampling.unroll_layers must be True, False or 'auto', got "
                      f'{config.sampling.unroll_layers!r}')
  if not 0.0 < config.sampling.top_p <= 1.0:
    raise ConfigError(f'config.sampling.top_p must be in (0, 1], got {config.sampling.top_p}')
  if config.sampling.temperature < 0:
    raise ConfigError(f'config.sampling.temperature must be >= 0, got {config.sampling.temperature}')
  if config.sampling.top_k < 0:
    raise ConfigError(f'config.sampling.top_k must be >= 0 (0 = off), got {config.sampling.top_k}')
  r = config.batch_size * g
  if r % config.minibatch_size:
    raise ConfigError(f'batch_size * sampling.num_samples = {r} responses must be divisible by '
                      f'config.minibatch_size={config.minibatch_size}')
  if config.minibatch_size % config.micro_batch_size:
    raise ConfigError(f'config.minibatch_size={config.minibatch_size} must be divisible by '
                      f'config.micro_batch_size={config.micro_batch_size}')
  if config.grpo.aggregation not in ('token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum',
                                     'seq-mean-token-sum-norm'):
    raise ConfigError(f'config.grpo.aggregation: unknown mode {config.grpo.aggregation!r}')
  if config.grpo.kl_kind not in ('k1', 'k2', 'k3'):
    raise ConfigError(f"config.grpo.kl_kind must be 'k1', 'k2' or 'k3', got {config.grpo.kl_kind!r}")
  if config.grpo.kl_coef < 0:
    raise ConfigError(f'config.grpo.kl_coef must be >= 0, got {config.grpo.kl_coef}')
  if config.old_logp not in ('recompute', 'sampler'):
    raise ConfigError(f"config.old_logp must be 'recompute' or 'sampler', got {config.old_logp!r}")
  if config.data.on_error not in ('raise', 'skip'):
    raise ConfigError(f"config.data.on_error must be 'raise' or 'skip', got {config.data.on_error!r}")
  if config.overlong.enabled and config.method == 'egrc':
    raise ConfigError('config.overlong.enabled=True has no defined meaning with method egrc: its '
                      'compression stage clips at length_clip and its exploration stage has its '
                      'own length penalty (method_hparams.penalty_per_1k)')
  if config.ceeh.entropy_schedule not in ('cosine', 'anneal_weight', 'constant'):
    raise ConfigError(f'config.ceeh.entropy_schedule: unknown {config.ceeh.entropy_schedule!r}')
  from ceeh_jax.models import config as model_config_lib  # pylint: disable=g-import-not-at-top
  for key, allowed in (('remat_policy', model_config_lib.REMAT_POLICIES),
                       ('attention', model_config_lib.ATTENTION)):
    value = config.model.get(key, allowed[0])
    if value not in allowed:
      raise ConfigError(f'config.model.{key} must be one of {allowed}, got {value!r}')
  if not config.model.hf_dir and not config.model.preset:
    raise ConfigError('set config.model.hf_dir (a HF checkpoint directory) or config.model.preset')
  if not (config.tokenizer_dir or config.model.hf_dir):
    raise ConfigError('set config.tokenizer_dir (or config.model.hf_dir, which holds one)')
  # Mesh vs devices, and the batch vs the data axes.
  n = num_devices or jax.device_count()
  try:
    mesh_shape = sharding_lib.resolve_mesh_shape(config.mesh.shape, n)
  except ValueError as e:
    raise ConfigError(f'config.mesh.shape: {e}') from None
  if jax.process_count() > 1 and math.prod(mesh_shape) != n:  # else some hosts hold nothing
    raise ConfigError(f'config.mesh.shape={list(config.mesh.shape)} covers {math.prod(mesh_shape)} '
                      f'of the {n} devices; a multi-host mesh must span all (e.g. (-1, 1, 1))')
  data_ways = mesh_shape[0] * mesh_shape[1]
  if config.batch_size % data_ways:
    raise ConfigError(f'config.batch_size={config.batch_size} must be divisible by the data axes '
                      f"(data x fsdp = {data_ways}) of config.mesh.shape={list(config.mesh.shape)}")
  chunk = config.sampling.get('rows_per_chunk', 0)
  if chunk:  # each chunk's rows (and KV cache) must split evenly over the data axes
    if chunk < 0 or chunk % g or r % chunk or chunk % data_ways:
      raise ConfigError(
          f'config.sampling.rows_per_chunk={chunk} must be a multiple of '
          f'sampling.num_samples={g} and of the data axes ({data_ways}) that divides the '
          f'{r} rows of a batch (or 0: all rows in one call)')
