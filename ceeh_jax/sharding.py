"""Mesh construction and logical-axis -> mesh-axis mapping.

The model names axes logically ('embed', 'q_heads', 'act_batch', ...); the physical mesh
('data', 'fsdp', 'tensor') and the rules that map one to the other come from the config.
Any dimension a mesh axis does not divide is replicated instead of mis-split (Qwen2.5 <= 3B
has 2 KV heads, so `tensor` = 4 replicates the kv projections and the KV cache).
"""
from collections.abc import Sequence
import contextlib
import math

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')

# Logical name -> mesh axis (or axes). Params: 'embed' is FSDP-sharded, heads/mlp/vocab are
# tensor-parallel. Activations: batch over data x fsdp, heads/mlp over tensor.
DEFAULT_RULES = (
    ('layers', None),
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('q_heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('head_dim', None),
    ('mlp', 'tensor'),
    ('norm', None),
    ('act_batch', ('data', 'fsdp')),
    # Used only when the rows do not divide the batch axes (a micro-batch of 1-4 rows on 8
    # devices): the sequence is split instead of every device padding to and computing all
    # the rows (see `constrain`).
    ('act_length', ('data', 'fsdp')),
    ('act_embed', None),
    ('act_heads', 'tensor'),
    ('act_mlp', 'tensor'),
    ('cache_batch', ('data', 'fsdp')),
    ('cache_length', None),
    ('cache_kv_heads', 'tensor'),
)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> list[int]:
  """Checks a ('data', 'fsdp', 'tensor') shape against the device count; fills one -1."""
  shape = list(shape)
  if len(shape) != 3:
    raise ValueError(f'mesh shape needs 3 entries for {MESH_AXES}, got {shape}')
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f'mesh shape {shape}: sizes must be positive, at most one -1')
  known = math.prod(s for s in shape if s != -1)
  if num_devices % known:
    raise ValueError(f'mesh shape {shape} does not divide the {num_devices} devices')
  # A fully specified mesh may use a divisor of the devices (the first ones), e.g. (1, 1, 1)
  # on an 8-device host for a single-device run.
  return [num_devices // known if s == -1 else s for s in shape]


def make_mesh(shape: Sequence[int], devices=None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh; one entry may be -1 (= the remaining devices)."""
  devices = jax.devices() if devices is None else list(devices)
  shape = resolve_mesh_shape(shape, len(devices))
  return Mesh(np.asarray(devices[:math.prod(shape)]).reshape(shape), MESH_AXES)


def traced_under(mesh: Mesh | None, rules, fn):
  """Wraps `fn` so that it is traced under the mesh and logical rules (wrap before jax.jit)."""
  def wrapped(*args, **kwargs):
    with use(mesh, rules):
      return fn(*args, **kwargs)
  return wrapped


def _resolve(name, rules):
  for logical, physical in rules:
    if logical == name:
      return physical
  return None


def spec_for(logical_axes, shape, mesh: Mesh, rules=DEFAULT_RULES) -> P:
  """PartitionSpec for an array with logical axes, replicating dims a mesh axis can't divide."""
  out, used = [], set()
  for name, dim in zip(logical_axes, shape):
    phys = _resolve(name, rules) if name is not None else None
    axes = (phys,) if isinstance(phys, str) else tuple(phys or ())
    axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
    size = math.prod(mesh.shape[a] for a in axes)
    if not axes or dim % size:
      out.append(None)
      continue
    used.update(axes)
    out.append(axes[0] if len(axes) == 1 else axes)
  return P(*out)


def constrain(x, logical_axes):
  """`with_sharding_constraint` by logical axis names, with `spec_for`'s fallback.

  Unlike `nn.with_logical_constraint`, a dimension a mesh axis does not divide is left to the
  next logical axis that can use it instead of being padded: 4 rows on 8 devices are not
  padded to 8 identical rows; with ('act_batch', 'act_length') the sequence is split. A no-op
  outside `use` (no mesh or no rules).
  """
  spec = current_spec(logical_axes, x.shape)
  return x if spec is None else jax.lax.with_sharding_constraint(x, spec)


def current_spec(logical_axes, shape) -> P | None:
  """`spec_for` under the mesh and rules being traced (`use`); None outside them."""
  mesh = jax.sharding.get_abstract_mesh()
  rules = nn.get_logical_axis_rules()
  if mesh.empty or not rules:
    return None
  return spec_for(logical_axes, shape, mesh, rules)


def tree_shardings(boxed_tree, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedShardings for a tree of `nn.LogicallyPartitioned` (abstract or real) leaves."""
  def one(x):
    if isinstance(x, nn.LogicallyPartitioned):
      return NamedSharding(mesh, spec_for(x.names, x.value.shape, mesh, rules))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, boxed_tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def param_shardings(config, mesh: Mesh, rules=DEFAULT_RULES):
  """Shardings of the model params, from `jax.eval_shape` of init (nothing allocated)."""
  boxed = abstract_params(config, boxed=True)
  return tree_shardings(boxed, mesh, rules)


def abstract_params(config, boxed: bool = False):
  """ShapeDtypeStructs of the model params (LogicallyPartitioned boxes when boxed)."""
  from ceeh_jax.models import qwen2 as qwen2_lib  # local: sharding is imported by the model's users
  model = qwen2_lib.Qwen2(config)
  tokens = jax.ShapeDtypeStruct((1, 1), np.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), tokens, tokens)
  params = variables['params']
  return params if boxed else nn.meta.unbox(params)


def init_params(config, rng, mesh: Mesh, rules=DEFAULT_RULES):
  """Random params created directly in their shardings (never whole on one device)."""
  from ceeh_jax.models import qwen2 as qwen2_lib
  shardings = param_shardings(config, mesh, rules)
  return jax.jit(lambda r: qwen2_lib.init_params(config, r), out_shardings=shardings)(rng)


def cache_sharding(mesh: Mesh, config, batch: int, rules=DEFAULT_RULES) -> NamedSharding:
  """Sharding of a KV cache [L, B, K, S, H]: batch over data axes, kv heads over tensor if K divides."""
  shape = (config.num_layers, batch, config.num_kv_heads, 1, config.head_dim)
  names = (None, 'cache_batch', 'cache_kv_heads', 'cache_length', None)
  return NamedSharding(mesh, spec_for(names, shape, mesh, rules))


def batch_sharding(mesh: Mesh, batch: int, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
  """Rows over the data axes (replicated if the batch does not divide), other dims replicated."""
  names = ('act_batch',) + (None,) * (ndim - 1)
  return NamedSharding(mesh, spec_for(names, (batch,) + (1,) * (ndim - 1), mesh, rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_global(x, sharding) -> jax.Array:
  """Host data -> a jax.Array on `sharding`, this process transferring only its own shards.

  Every process passes the same global `x` (they all build the same batch). Unlike
  `jax.device_put`, which on a multi-process sharding first checks across processes that the
  whole array is equal (an all-gather of it), nothing crosses hosts here.
  """
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(tree):
  """Device arrays -> numpy, all-gathering those sharded across processes.

  A collective when an array spans processes: every process must call it, in the same order.
  """
  def one(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))
  return jax.tree.map(one, tree)


def rules_from_config(rules) -> tuple:
  """Normalise config rules (lists from ml_collections) into a tuple of (name, axes) pairs."""
  out = []
  for name, phys in rules:
    if isinstance(phys, list):
      phys = tuple(phys)
    out.append((name, phys))
  return tuple(out)


@contextlib.contextmanager
def use(mesh: Mesh | None, rules=DEFAULT_RULES):
  """Trace under `mesh` and the logical rules, so the model's sharding constraints apply."""
  if mesh is None:
    yield
    return
  # Inside jit only the abstract mesh may be set; it is all a sharding constraint needs.
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
    yield
