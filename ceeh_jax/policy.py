"""The policy's params and TrainState, built and restored lean.

Under LoRA the params are a frozen base plus trainable adapters:
  * the base streams from HF safetensors tensor by tensor into its sharded device arrays
    (`hf_io.load_hf`), stored in the compute dtype `model.dtype`: every forward casts the
    frozen weights to it first, so this loses nothing and halves a bf16 run's base;
  * the adapters' tree comes from `jax.eval_shape`; only the adapters are initialised
    (A ~ N(0, 1/in), B = 0), created in their shardings: no random base is ever made;
  * checkpoints hold the trainable params, optimizer and difficulty state only
    (`trainable_state`: 37 MB of adapters at 1.5B r32, not the 3.5 GB base); the base is
    named in the checkpoint's metadata by `base_record` (its `hf_dir` and a fingerprint of its
    weights) and a resume against other base weights is refused with `BaseMismatchError`;
  * a resume restores into abstract targets before anything else exists (one state at a time).
A full fine-tune trains and checkpoints every param; its KL reference is the base, copied at
the start and loaded again (not restored) on resume.
"""
import os

import flax.linen as nn
import flax.traverse_util as tu
import jax
import jax.numpy as jnp

from ceeh_jax import errors
from ceeh_jax import hf_io
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import steps as steps_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig
from ceeh_jax.synthetic import paths as synthetic

ADAPTERS = ('lora_a', 'lora_b')


class BaseMismatchError(errors.UserError, RuntimeError):
  """The checkpoint's adapters were trained on other base weights than the configured ones."""


def model_config(config) -> QwenConfig:
  """The architecture of `config.model` (HF config.json or a preset) with its overrides; no
  weights are read."""
  m = config.model
  over = dict(dtype=m.dtype, param_dtype=m.param_dtype, remat_policy=m.remat_policy,
              decode_chunk=m.decode_chunk, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
              lora_targets=tuple(m.lora_targets), attention=m.get('attention', 'auto'))
  if m.hf_dir:
    return QwenConfig.from_hf(synthetic.resolve_model_dir(m.hf_dir)).replace(**over)
  return QwenConfig.preset(m.preset, **over)


def base_dtype(model_cfg: QwenConfig) -> str:
  """The frozen base's storage dtype: the compute dtype under LoRA, else the param dtype."""
  return model_cfg.dtype if model_cfg.lora_rank else model_cfg.param_dtype


# ---------------------------------------------------------------------------------------------
# The base: which weights, loading them, and refusing a checkpoint of other ones.
# ---------------------------------------------------------------------------------------------

def base_record(config) -> dict:
  """What the base is, for the checkpoint metadata: the HF directory and a fingerprint of its
  weights (`hf_io.weights_fingerprint`), or the random preset and its seed."""
  m = config.model
  if m.hf_dir:
    path = os.path.abspath(synthetic.resolve_model_dir(m.hf_dir))
    return {'hf_dir': path, 'weights': hf_io.weights_fingerprint(path)}
  return {'preset': m.preset, 'seed': int(config.seed)}


def check_base(meta: dict, record: dict, where: str, lora: bool) -> None:
  """Raises BaseMismatchError when a checkpoint was trained on other base weights.

  A moved directory with the same weights is accepted (the fingerprint decides).
  """
  saved = meta.get('base')
  if saved is None:
    if lora:
      raise BaseMismatchError(
          f'the checkpoint in {where} was written before checkpoints held the adapters only '
          'and names no base weights; resume it with the version that wrote it, or start a '
          'new workdir')
    return
  if 'weights' in saved and saved.get('weights') == record.get('weights'):
    return
  if 'weights' not in saved and saved == record:
    return
  describe = lambda r: (f"{r['hf_dir']} (weights {r['weights'][:12]})" if 'hf_dir' in r else
                        f"random preset {r.get('preset')!r}, seed {r.get('seed')}")
  raise BaseMismatchError(
      f'the checkpoint in {where} was trained on base {describe(saved)}, but the config names '
      f'{describe(record)}; set config.model.hf_dir (or preset/seed) to the original base, or '
      'start a new workdir')


def read_meta(workdir: str, step: int) -> dict:
  """The JSON metadata saved with checkpoint `step` of `workdir`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                                  item_names=('state', 'meta'),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'])


def load_base(config, model_cfg: QwenConfig, mesh, rules, *, bits: bool | None = None):
  """The base params (no adapters) in `base_dtype`, created in their shardings.

  From HF: streamed tensor by tensor (`hf_io.load_hf`); its architecture must be the one
  `model_config` read. From a preset: the seed's random init. `bits` (default: under LoRA)
  stores the frozen bf16 layer weights and embedding as their bit patterns (`qwen2.to_bits`:
  sliced and gathered without an fp32 copy on XLA:CPU), converted one leaf at a time.
  """
  base_cfg = model_cfg.replace(lora_rank=0, param_dtype=base_dtype(model_cfg))
  m = config.model
  if m.hf_dir:
    loaded_cfg, params = hf_io.load_hf(synthetic.resolve_model_dir(m.hf_dir), mesh=mesh,
                                       rules=rules, dtype=base_cfg.param_dtype)
    assert loaded_cfg.num_params == base_cfg.num_params, (loaded_cfg, base_cfg)
  else:
    params = sharding_lib.init_params(base_cfg, jax.random.key(config.seed), mesh, rules)
  if model_cfg.lora_rank > 0 if bits is None else bits:
    flat = tu.flatten_dict(params)
    del params
    for path in list(flat):  # one leaf at a time: the bf16 leaf is dropped as its bits appear
      if path[0] in qwen2_lib.BITS_KEYS:
        flat[path] = _to_bits(flat[path])
    params = tu.unflatten_dict(flat)
  return params


_to_bits = jax.jit(qwen2_lib.to_bits)


# ---------------------------------------------------------------------------------------------
# Adapters and the trainable part.
# ---------------------------------------------------------------------------------------------

def is_adapter(path) -> bool:
  return path[-1] in ADAPTERS


def init_adapters(model_cfg: QwenConfig, rng, mesh, rules=sharding_lib.DEFAULT_RULES):
  """Fresh LoRA adapters only ({... 'lora_a': A, 'lora_b': B} nested like the params), in
  their shardings: A ~ N(0, 1/in) (as `qwen2.Proj` initialises it), B = 0.

  The tree and shardings come from `jax.eval_shape` of the model's init; nothing of the base
  is created.
  """
  boxed = tu.flatten_dict(sharding_lib.abstract_params(model_cfg, boxed=True))
  boxed = {p: v for p, v in boxed.items() if is_adapter(p)}
  shapes = {p: nn.meta.unbox(v) for p, v in boxed.items()}
  shardings = {p: s for p, s in tu.flatten_dict(
      sharding_lib.tree_shardings(tu.unflatten_dict(boxed), mesh, rules)).items()}

  def init(key):
    out = {}
    for i, (path, sds) in enumerate(sorted(shapes.items())):
      if path[-1] == 'lora_b':
        out[path] = jnp.zeros(sds.shape, sds.dtype)
      else:  # [(L,) in, R]: std 1/sqrt(in)
        std = sds.shape[-2] ** -0.5
        out[path] = (std * jax.random.normal(jax.random.fold_in(key, i), sds.shape)
                     ).astype(sds.dtype)
    return out

  flat = jax.jit(init, out_shardings={p: shardings[p] for p in shapes})(rng)
  return tu.unflatten_dict(flat)


def trainable_params(params, lora: bool):
  """The params a checkpoint holds: the adapters under LoRA, else all of them."""
  if not lora:
    return params
  return tu.unflatten_dict({p: v for p, v in tu.flatten_dict(params).items() if is_adapter(p)})


def trainable_state(state, lora: bool):
  """The TrainState as checkpointed: params cut to `trainable_params` (works on abstract
  states too, for the restore target)."""
  return state.replace(params=trainable_params(state.params, lora))


def with_base(trainable, base):
  """Base params + the trainable ones (adapters, or every param of a full fine-tune)."""
  flat = tu.flatten_dict(base)
  flat.update(tu.flatten_dict(trainable))
  return tu.unflatten_dict(flat)


# ---------------------------------------------------------------------------------------------
# The TrainState: abstract first, then made (fresh) or completed (restored).
# ---------------------------------------------------------------------------------------------

def abstract_state(model_cfg: QwenConfig, optimizer, mesh, rules, num_questions: int,
                   seed: int, lora: bool, method: str, hparams):
  """(abstract TrainState with shardings, its shardings); nothing is allocated."""
  params = sharding_lib.abstract_params(model_cfg)
  if lora:  # the frozen base as `load_base` stores it: base_dtype, bf16 layers as bits
    frozen = jnp.dtype(base_dtype(model_cfg))
    stored = lambda p: (jnp.uint16 if p[0] in qwen2_lib.BITS_KEYS and frozen == jnp.bfloat16
                        else frozen)
    params = tu.unflatten_dict({
        p: v if is_adapter(p) or not jnp.issubdtype(v.dtype, jnp.floating) else
        jax.ShapeDtypeStruct(v.shape, stored(p)) for p, v in tu.flatten_dict(params).items()})
  abstract = jax.eval_shape(lambda p: steps_lib.init_train_state(
      p, optimizer, num_questions, seed, lora, method, hparams), params)
  shardings = steps_lib.state_shardings(
      abstract, sharding_lib.param_shardings(model_cfg, mesh, rules), mesh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings


def fresh_state(params, optimizer, shardings, num_questions: int, seed: int, lora: bool,
                method: str, hparams):
  """A new TrainState around `params` (kept as they are, no copy): the optimizer and
  difficulty state are created directly in their shardings."""
  make = lambda p: steps_lib.init_train_state(p, optimizer, num_questions, seed, lora, method,
                                              hparams).replace(params=None)
  trainable = trainable_params(params, lora)
  rest = jax.jit(make, out_shardings=shardings.replace(params=None))(trainable)
  return rest.replace(params=params)
