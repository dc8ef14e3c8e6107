"""One entry point for every competing method: defaults, validation, state, dispatch.

Shape legend: R responses = B prompts x G samples (prompt-major), Q training questions,
T completion tokens. `compute` is pure and jittable with `method`, hyper-parameters and G
static; `step` may be a host int or a traced int32 scalar.
"""
import functools
from typing import Any, NamedTuple

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from ceeh_jax.methods import common
from ceeh_jax.methods import egrc as egrc_lib
from ceeh_jax.methods import entra as entra_lib
from ceeh_jax.methods import history as history_lib
from ceeh_jax.methods import length as length_lib

# Paper defaults; docs/methods_table.md gives each source and our reading where it is open.
_DEFAULTS = {
    # Plain GRPO, correctness 1/0 (DeepSeekMath, arXiv 2402.03300).
    'grpo': {},
    # CEEH (arXiv 2602.22642): rewards and state live in difficulty.py, configured in config.ceeh.
    'ceeh_me': {}, 'ceeh_ea': {},
    # Kimi k1.5 (arXiv 2501.12599): weight on the λ term (1 = the formula as written).
    'length_penalty': {'weight': 1.0},
    # EGRC (arXiv 2511.14258): L = 4096 (§4.4); r, β, temperatures, stage length, R_format and
    # R_answer are not in the paper's text: ours.
    'egrc': {'length_clip': 4096, 'ratio_at_clip': 0.5, 'beta': 1.0, 'stage_steps': 200,
             'compression_first': True, 'compress_temperature': 0.6, 'explore_temperature': 1.0,
             'format_reward': 0.1, 'answer_reward': 1.0, 'penalty_per_1k': 0.25,
             'explore_baseline': 'group'},
    # ENTRA (arXiv 2601.07123): γ = 2 (its MATH setting; 1e-4 elsewhere), top 20% excluded.
    'entra': {'gamma': 2.0, 'fraction': 0.8, 'weight': 1.0, 'correct_only': True},
    # HAPO (arXiv 2505.11225): length-reward weight w = 1, clamp −0.7 on correct responses.
    'hapo': {'weight': 1.0, 'clamp': -0.7},
    # ThinkPrune (arXiv 2504.01296): 4k -> 3k -> 2k limits; the step boundaries are ours.
    'thinkprune': {'limits': (4096, 3072, 2048), 'boundaries': (100, 200)},
    # DLER (arXiv 2510.15110): 4k truncation, dynamic sampling (at most 3 draws per batch; the
    # bound is ours). Its clip-higher 0.28 is config.grpo.eps_high (every recipe's default).
    'dler': {'max_len': 4000, 'dynamic_sampling': True, 'max_rounds': 3},
    # LASER (arXiv 2505.15612): step reward α = 0.5 under the target length.
    'laser': {'target': 4096, 'bonus': 0.5},
    # LASER-D (arXiv 2505.15612): 3 accuracy buckets, ECR targets on a 1024 grid from 4096 to
    # the 16384 budget (the authors' 1.5B script); their 20-step monitor set is our EMA rate.
    'laser_d': {'bonus': 0.5, 'budget': 16384.0, 'min_target': 4096.0, 'interval': 1024.0,
                'rate': 0.1},
    # GRPO-λ (arXiv 2505.18086): length term for the top-λ fraction of groups by accuracy.
    'grpo_lambda': {'top_fraction': 0.2, 'weight': 1.0},
    # Arora & Zanette (arXiv 2502.04463): α swept in {0.05, 0.1, 0.2, 0.4}; 0.2 is ours.
    'arora_zanette': {'alpha': 0.2},
}
METHODS = tuple(_DEFAULTS)
CEEH_METHODS = ('ceeh_me', 'ceeh_ea')


class RewardInputs(NamedTuple):
  """What the trainer supplies per response (and per token for ENTRA)."""
  correct: Any                  # bool[R]
  boxed: Any                    # bool[R]   has a final boxed answer
  lengths: Any                  # int32[R]  completion tokens, thinking and EOS included
  truncated: Any                # bool[R]   hit max_new_tokens without EOS
  qids: Any                     # int32[R]  question ids into history states of size Q
  shaping: Any = None           # f32[R]    added to the rewards before any advantage or
                                #           informative-group test (DAPO overlong penalty)
  tokens: Any = None            # int32[R, T]  ENTRA only
  token_logp: Any = None        # f32[R, T]    log p(x_i | x_<i) at the sampling temperature
  attn_received: Any = None     # f32[R, T]    μ_i, see entra.attention_received
  token_mask: Any = None        # bool[R, T]   completion tokens incl. EOS


@struct.dataclass
class MethodOutput:
  """rewards f32[R]; advantages f32[R] or None (None -> the trainer's GRPO group advantages);
  positive_only: static — when True, `loss_mask` bool[R] says which rows enter the objective
  (policy, KL and entropy terms and their denominators); temperature: the stage's sampling
  temperature or None (use the config's); new_state: the method's history; metrics: scalars."""
  rewards: Any
  advantages: Any
  positive_only: bool = struct.field(pytree_node=False)
  temperature: Any
  new_state: dict
  metrics: dict
  loss_mask: Any = None


class MethodFlags(NamedTuple):
  """Static facts the trainer needs about a method before the step runs."""
  needs_token_inputs: bool      # ENTRA: token ids, logp, attention received (a forward pass)
  positive_only: bool           # EGRC: may return a loss_mask (compression stage)
  stateful: bool                # HAPO, LASER-D: history carried in the checkpointed state
  dynamic_sampling: bool        # DLER: regenerate until groups are informative
  max_rounds: int               # bound on the rollout draws per batch (1 = no regeneration)


def default_hparams(method: str) -> dict:
  """The paper defaults of `method` (sources in the comments above and docs/methods_table.md)."""
  if method not in _DEFAULTS:
    raise ValueError(f'unknown method {method!r}; choose from {METHODS}')
  return dict(_DEFAULTS[method])


def resolve_hparams(method: str, cfg=None) -> dict:
  """Defaults overridden by `cfg` (a mapping or ConfigDict); unknown keys and bad values raise."""
  hp = default_hparams(method)
  given = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg or {})
  unknown = sorted(set(given) - set(hp))
  if unknown:
    raise ValueError(f'{method}: unknown hyper-parameters {unknown}; known: {sorted(hp)}')
  hp.update(given)
  _validate(method, hp)
  return hp


def _require(ok: bool, method: str, message: str):
  if not ok:
    raise ValueError(f'{method}: {message}')


def _validate(method: str, hp: dict):
  if method == 'egrc':
    _require(0 < hp['ratio_at_clip'] < 1, method,
             f"ratio_at_clip must be in (0, 1), got {hp['ratio_at_clip']}")
    _require(hp['length_clip'] > 0, method, f"length_clip must be > 0, got {hp['length_clip']}")
    _require(hp['beta'] > 0, method, f"beta must be > 0, got {hp['beta']}")
    _require(hp['stage_steps'] >= 0, method, f"stage_steps must be >= 0, got {hp['stage_steps']}")
    _require(hp['explore_baseline'] in ('group', 'batch'), method,
             f"explore_baseline must be 'group' or 'batch', got {hp['explore_baseline']!r}")
  elif method == 'entra':
    _require(0 < hp['fraction'] <= 1, method, f"fraction must be in (0, 1], got {hp['fraction']}")
    _require(hp['gamma'] >= 0, method, f"gamma must be >= 0, got {hp['gamma']}")
  elif method == 'hapo':
    _require(hp['clamp'] <= 0, method, f"clamp must be <= 0, got {hp['clamp']}")
  elif method == 'thinkprune':
    lim, bnd = tuple(hp['limits']), tuple(hp['boundaries'])
    _require(len(lim) == len(bnd) + 1 and all(x > 0 for x in lim), method,
             f'need one positive limit per stage (len(boundaries) + 1), got {lim}, {bnd}')
    _require(all(a < b for a, b in zip(bnd, bnd[1:])), method,
             f'boundaries must increase strictly, got {bnd}')
  elif method == 'dler':
    _require(hp['max_len'] > 0, method, f"max_len must be > 0, got {hp['max_len']}")
    _require(hp['max_rounds'] >= 1, method, f"max_rounds must be >= 1, got {hp['max_rounds']}")
  elif method == 'laser_d':
    _require(0 < hp['rate'] <= 1, method, f"rate must be in (0, 1], got {hp['rate']}")
    _require(0 < hp['min_target'] <= hp['budget'] and hp['interval'] > 0, method,
             'need 0 < min_target <= budget and interval > 0')
  elif method == 'grpo_lambda':
    _require(0 < hp['top_fraction'] <= 1, method,
             f"top_fraction must be in (0, 1], got {hp['top_fraction']}")


def init_state(method: str, num_questions: int, cfg=None) -> dict:
  """The history `method` carries across batches ({} for stateless methods)."""
  hp = resolve_hparams(method, cfg)
  if method == 'hapo':
    if num_questions < 1:
      raise ValueError(f'hapo: num_questions must be >= 1, got {num_questions}')
    return history_lib.init_hapo_state(num_questions)
  if method == 'laser_d':
    return history_lib.init_laser_d_state(hp['budget'])
  return {}


def trainer_flags(method: str, cfg=None) -> MethodFlags:
  hp = resolve_hparams(method, cfg)
  return MethodFlags(
      needs_token_inputs=method == 'entra', positive_only=method == 'egrc',
      stateful=method in ('hapo', 'laser_d'),
      dynamic_sampling=method == 'dler' and bool(hp['dynamic_sampling']),
      max_rounds=int(hp.get('max_rounds', 1)))


def informative(method: str, cfg, inputs: RewardInputs, state: dict, step: int, *,
                group_size: int) -> np.ndarray:
  """Host: bool[B], the groups whose rewards under `method` are not all equal (dynamic
  sampling keeps these: an all-equal group has zero advantage and teaches nothing)."""
  rewards = compute(method, cfg, inputs, state, step, group_size=group_size).rewards
  return np.asarray(jax.device_get(length_lib.informative_groups(rewards, group_size)))


def select_groups(informative_flags, batch_groups: int) -> np.ndarray:
  """Host: int[batch_groups] indices of the groups to train on, from a pool of drawn groups.

  Informative groups first, then (only if the bounded draws found too few) uninformative ones,
  each in draw order; the result is sorted, so the batch keeps the order it was drawn in.
  """
  flags = np.asarray(informative_flags, bool)
  if flags.size < batch_groups:
    raise ValueError(f'a pool of {flags.size} groups cannot fill a batch of {batch_groups}')
  order = np.concatenate([np.flatnonzero(flags), np.flatnonzero(~flags)])
  return np.sort(order[:batch_groups])


def sampling_temperature(method: str, cfg, step: int, default: float) -> float:
  """Host: the rollout temperature at `step` (EGRC's stages set their own)."""
  if method != 'egrc':
    return default
  hp = resolve_hparams(method, cfg)
  explore = egrc_lib.egrc_stage(int(step), hp) == egrc_lib.EXPLORE
  return float(hp['explore_temperature'] if explore else hp['compress_temperature'])


def generation_limit(method: str, cfg, step: int, default: int) -> int:
  """Host: max_new_tokens at `step`. Clipping methods stop sampling at their limit (over it the
  reward is 0 anyway): EGRC's compression stage, ThinkPrune's current stage, DLER."""
  hp = resolve_hparams(method, cfg)
  if method == 'egrc' and egrc_lib.egrc_stage(int(step), hp) == egrc_lib.COMPRESS:
    return min(default, int(hp['length_clip']))
  if method == 'thinkprune':
    return min(default, length_lib.thinkprune_limit(int(step), hp['limits'], hp['boundaries']))
  if method == 'dler':
    return min(default, int(hp['max_len']))
  return default


def _normalize(method: str, inp: RewardInputs, state, group_size: int) -> RewardInputs:
  """Checks shapes (every per-response array [R], R = B·G) and state; casts dtypes."""
  cast = {'correct': bool, 'boxed': bool, 'truncated': bool, 'lengths': jnp.int32,
          'qids': jnp.int32}
  r = None if inp.correct is None else jnp.shape(inp.correct)[0]
  fixed = {}
  for name, dtype in cast.items():
    x = getattr(inp, name)
    if x is None or r is None or jnp.shape(x) != (r,):
      raise ValueError(f'RewardInputs.{name} must have shape [R] (R = {r}), got '
                       f'{None if x is None else jnp.shape(x)}')
    fixed[name] = jnp.asarray(x).astype(dtype)
  common.groups(fixed['correct'], group_size)   # raises unless R = B·G
  if inp.shaping is not None:
    if method == 'egrc':
      raise ValueError('egrc: reward shaping (overlong) has no defined meaning with its stages '
                       '(compression clips at length_clip, exploration has its own R_length)')
    if jnp.shape(inp.shaping) != (r,):
      raise ValueError(f'RewardInputs.shaping must have shape [R] (R = {r}), got '
                       f'{jnp.shape(inp.shaping)}')
    fixed['shaping'] = jnp.asarray(inp.shaping).astype(jnp.float32)
  if method == 'entra':
    entra_lib.entra_check(inp.tokens, inp.token_logp, inp.attn_received, inp.token_mask)
    if jnp.shape(inp.tokens)[0] != r:
      raise ValueError(f'entra per-token inputs have {jnp.shape(inp.tokens)[0]} rows, not {r}')
  key = {'hapo': 'min_len', 'laser_d': 'targets'}.get(method)
  if key and (not isinstance(state, dict) or key not in state):
    raise ValueError(f'{method} needs its history state {{{key!r}: ...}}; build it with '
                     f'methods.init_state({method!r}, num_questions)')
  return inp._replace(**fixed)


def compute(method: str, cfg, inputs: RewardInputs, state: dict, step, *,
            group_size: int) -> MethodOutput:
  """Rewards (and, for EGRC and DLER, advantages) of one rollout batch under `method`.

  Works eagerly and inside the trainer's jit. With a host `step`, EGRC's `positive_only` and
  `temperature` are the active stage's static values; with a traced step the stage is unknown
  at trace time, so EGRC returns positive_only=True with a loss_mask that is all True while
  exploring, and a traced temperature.
  """
  if method in CEEH_METHODS:
    raise ValueError(f'{method}: CEEH rewards come from difficulty.ceeh_step, not methods')
  hp = resolve_hparams(method, cfg)
  inp = _normalize(method, inputs, state, group_size)
  frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in hp.items()))
  out = _compute(method, frozen, group_size, inp, state, jnp.asarray(step, jnp.int32))
  if method != 'egrc' or common.is_traced(step):
    return out
  compress = egrc_lib.egrc_stage(int(step), hp) == egrc_lib.COMPRESS
  temperature = hp['compress_temperature'] if compress else hp['explore_temperature']
  return out.replace(positive_only=compress, temperature=float(temperature),
                     loss_mask=out.loss_mask if compress else None)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _compute(method: str, frozen: tuple, g: int, inp: RewardInputs, state, step):
  """The jitted body (one compile per method, hyper-parameters, G and shapes).

  Order: the method's rewards, plus `inp.shaping` (overlong), then the advantages of methods
  that own them (DLER), so every advantage and every dynamic-sampling test sees the shaping.
  """
  hp = dict(frozen)
  if method == 'egrc':
    stage = egrc_lib.egrc_stage(step, hp)
    rewards, advantages, mask = egrc_lib.egrc(inp.correct, inp.boxed, inp.lengths,
                                              inp.truncated, g, stage, hp)
    temperature = jnp.where(stage == egrc_lib.COMPRESS, hp['compress_temperature'],
                            hp['explore_temperature'])
    metrics = {'stage': jnp.asarray(stage, jnp.float32),
               'over_clip': (inp.lengths > hp['length_clip']).mean()}
    return MethodOutput(rewards, advantages, True, temperature, state, metrics, mask)
  rewards, new_state, metrics = _rewards(method, hp, g, inp, state, step)
  if inp.shaping is not None:
    rewards = rewards + inp.shaping
  advantages = None
  if method == 'dler':
    metrics['informative_groups'] = length_lib.informative_groups(rewards, g).mean()
    advantages = length_lib.dler_advantages(rewards, g)
  return MethodOutput(rewards=rewards.astype(jnp.float32), advantages=advantages,
                      positive_only=False, temperature=None, new_state=new_state,
                      metrics=metrics)


def _rewards(method: str, hp: dict, g: int, inp: RewardInputs, state, step):
  """(rewards f32[R], new state, metrics) of every method but EGRC, before any shaping."""
  c, length = inp.correct, inp.lengths
  cf = c.astype(jnp.float32)
  if method == 'grpo':
    return cf, state, {}
  if method == 'length_penalty':
    r = length_lib.length_penalty_rewards(c, length, g, hp['weight'])
    return r, state, {'length_term': (r - cf).mean()}
  if method == 'grpo_lambda':
    r, chosen = length_lib.grpo_lambda_rewards(c, length, g, hp['top_fraction'], hp['weight'])
    return r, state, {'shaped_groups': chosen.mean(), 'length_term': (r - cf).mean()}
  if method == 'arora_zanette':
    r = length_lib.arora_zanette_rewards(c, length, g, hp['alpha'])
    return r, state, {'length_term': (r - cf).mean()}
  if method == 'laser':
    r = length_lib.laser_rewards(c, length, hp['target'], hp['bonus'])
    return r, state, {'bonus_fraction': (r > 1).mean()}
  if method == 'thinkprune':
    limit = length_lib.thinkprune_limit(step, hp['limits'], hp['boundaries'])
    r = length_lib.clipped_correct(c, length, inp.truncated, limit)
    return r, state, {'limit': jnp.asarray(limit, jnp.float32), 'clipped': (cf - r).mean()}
  if method == 'dler':
    r = length_lib.clipped_correct(c, length, inp.truncated, hp['max_len'])
    return r, state, {'clipped': (cf - r).mean()}
  if method == 'hapo':
    r, new = history_lib.hapo_rewards(c, length, inp.qids, state, hp['weight'], hp['clamp'])
    seen = history_lib.hapo_is_set(state['min_len'][inp.qids])
    return r, new, {'history_set': seen.mean(), 'length_term': (r - cf).mean()}
  if method == 'laser_d':
    r, new, bucket = history_lib.laser_d_rewards(
        c, length, g, state, bonus=hp['bonus'], budget=hp['budget'],
        min_target=hp['min_target'], interval=hp['interval'], rate=hp['rate'])
    metrics = {f'target_{name}': new['targets'][i]
               for i, name in enumerate(('easy', 'medium', 'hard'))}
    metrics['easy_groups'] = (bucket == history_lib.EASY).mean()
    return r, new, metrics
  if method == 'entra':
    importance = entra_lib.entra_importance(inp.token_logp, inp.attn_received, inp.token_mask,
                                            hp['gamma'])
    score, _ = entra_lib.entra_redundancy(inp.tokens, importance, inp.token_mask, hp['fraction'])
    r = entra_lib.entra_rewards(c, score, hp['weight'], hp['correct_only'])
    return r, state, {'redundancy_score': score.mean()}
  raise ValueError(f'unknown method {method!r}; choose from {METHODS}')


def loss_mask(out: MethodOutput):
  """bool[R] of the rows that enter the objective, or None for all of them."""
  return out.loss_mask if out.positive_only else None
