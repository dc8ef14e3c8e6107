"""The pure RL step: TrainState, scoring, `rollout_update` and `train_step`.

Shape legend: R responses (B prompts x G samples, prompt-major), P prompt bucket,
M completion length, Q training questions, n micro-batches.

Everything that decides an update is a pure function of (TrainState, batch) under `jax.jit`:
  rollout_update — once per rollout batch: difficulty state, rewards, advantages (and step+1);
  train_step     — once per minibatch: PPO-clip loss − entropy bonus + KL, optax update.
The trainer (`train.py`) builds the jitted versions with explicit shardings and donation.
"""
from typing import Any

import flax
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ceeh_jax import difficulty as difficulty_lib
from ceeh_jax import losses as losses_lib
from ceeh_jax import methods as methods_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

CEEH_METHODS = ('ceeh_me', 'ceeh_ea')

# XLA options for jitting `train_step` (jax.jit(..., compiler_options=TRAIN_STEP_COMPILER_OPTIONS)).
# XLA may skip a bf16 rounding when it fuses the ops around it (`xla_allow_excess_precision`,
# on by default): where it does depends on the fusion, so the policy pass (LoRA delta added,
# under the gradient) and the reference pass (adapters off) rounded differently and KL at
# step 1, policy == reference, was 1e-4 to 1e-3 instead of 0 (1.5B shape, bf16, XLA:CPU).
# Rounding every bf16 result makes the two passes agree bit for bit (test_kl_reference.py).
TRAIN_STEP_COMPILER_OPTIONS = {'xla_allow_excess_precision': False}


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs, as one pytree that crosses jit and orbax."""
  step: jax.Array        # int32[]: rollout batches consumed
  params: Any            # full params (base + LoRA adapters when enabled)
  opt_state: Any         # optimizer state of the trainable subset
  difficulty: dict       # {'acc_h': f32[Q], 'len_x': f32[Q], 'method': {...history}}
  rng: jax.Array         # uint32[2] raw PRNG key data (portable through checkpoints)
  skipped: jax.Array     # int32[]: updates skipped (non-finite loss, grads or result) so far


@flax.struct.dataclass
class Batch:
  """One minibatch of responses with everything the loss needs."""
  prompt: jax.Array        # int32[R, P] left-padded prompt tokens
  prompt_mask: jax.Array   # bool[R, P]
  completion: jax.Array    # int32[R, M]
  mask: jax.Array          # bool[R, M] completion mask (EOS included)
  old_logp: jax.Array      # f32[R, M] behaviour log-probs (temperature-scaled)
  advantages: jax.Array    # f32[R]
  hard: jax.Array          # f32[R] 1 on currently-hard questions


# ---------------------------------------------------------------------------------------------
# Trainable subset and optimizer.
# ---------------------------------------------------------------------------------------------

def is_trainable(path: tuple[str, ...], lora: bool) -> bool:
  """With LoRA only adapters train; otherwise everything does."""
  return (not lora) or path[-1] in ('lora_a', 'lora_b')


def split_params(params, lora: bool):
  """params -> (trainable, frozen) flat dicts keyed by path tuples."""
  flat = flax.traverse_util.flatten_dict(params)
  train = {k: v for k, v in flat.items() if is_trainable(k, lora)}
  frozen = {k: v for k, v in flat.items() if not is_trainable(k, lora)}
  return train, frozen


def merge_params(train, frozen):
  return flax.traverse_util.unflatten_dict({**frozen, **train})


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW with warmup + constant/cosine schedule and global-norm clipping."""
  o = config.optim
  updates = config.batch_size * config.sampling.num_samples // config.minibatch_size
  total = max(1, config.total_steps * updates)
  warmup = min(o.warmup_steps, total)
  if o.schedule == 'constant':
    sched = optax.join_schedules([optax.linear_schedule(0.0, o.lr, max(warmup, 1)),
                                  optax.constant_schedule(o.lr)], [warmup])
  elif o.schedule == 'cosine':
    sched = optax.warmup_cosine_decay_schedule(0.0, o.lr, max(warmup, 1), total, o.lr * o.min_lr_ratio)
  else:
    raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got {o.schedule!r}")
  return optax.chain(optax.clip_by_global_norm(o.grad_clip),
                     optax.adamw(sched, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay))


def init_train_state(params, optimizer, num_questions: int, seed: int, lora: bool,
                     method: str, method_hparams) -> TrainState:
  train, _ = split_params(params, lora)
  difficulty = difficulty_lib.init_state(num_questions)
  difficulty['method'] = methods_lib.init_state(method, num_questions, method_hparams)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(train),
                    difficulty=difficulty, rng=jax.random.key_data(jax.random.key(seed)),
                    skipped=jnp.zeros((), jnp.int32))


def state_shardings(abstract_state: TrainState, param_shardings, mesh):
  """Shardings of a whole TrainState: params as given, each optimizer moment like the param it
  tracks (matched by its flat path key), everything else replicated."""
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  repl = NamedSharding(mesh, PartitionSpec())
  flat = flax.traverse_util.flatten_dict(param_shardings)

  def opt_leaf(path, leaf):
    for entry in reversed(path):
      key = getattr(entry, 'key', None)
      if isinstance(key, tuple) and key in flat and flat[key] is not None:
        return flat[key]
    return repl

  opt = jax.tree_util.tree_map_with_path(opt_leaf, abstract_state.opt_state)
  return TrainState(step=repl, params=param_shardings, opt_state=opt,
                    difficulty=jax.tree.map(lambda _: repl, abstract_state.difficulty),
                    rng=repl, skipped=repl)


# ---------------------------------------------------------------------------------------------
# Scoring: log-probs and entropy of completions under a policy.
# ---------------------------------------------------------------------------------------------

def completion_logps(params, model_cfg: QwenConfig, batch: Batch, temperature, *,
                     lora_on: bool = True, chunk_size: int = 128):
  """(logp, entropy) f32[R, M] of the completion tokens under the temperature-scaled policy.

  With `model_cfg.scan_layers=False` and stacked params, the layers run unrolled over slices
  of the stack (the same values; the gradients land in the stacked leaves).
  """
  p = batch.prompt.shape[1]
  tokens = jnp.concatenate([batch.prompt, batch.completion], axis=1)
  key_mask = jnp.concatenate([batch.prompt_mask, batch.mask], axis=1)
  positions = qwen2_lib.positions_from_mask(
      jnp.concatenate([batch.prompt_mask, jnp.ones_like(batch.mask)], axis=1))
  if not model_cfg.scan_layers and qwen2_lib.is_scanned(params):
    params = qwen2_lib.unstack_layers(params)  # grads flow back into the stacked leaves
  hidden, _ = qwen2_lib.Qwen2(model_cfg).apply({'params': params}, tokens, positions, key_mask,
                                               return_hidden=True, lora_on=lora_on)
  # Position t predicts token t+1: completion token j is predicted at P-1+j.
  hidden = hidden[:, p - 1:-1]
  return losses_lib.token_logprobs_and_entropy(
      hidden, qwen2_lib.unembedding(params, model_cfg), batch.completion,
      temperature=temperature, chunk_size=chunk_size)


def on_policy(config: ml_collections.ConfigDict) -> bool:
  """True when each rollout batch gets exactly one update at the params that sampled it.

  Then (old_logp = 'recompute') the behaviour log-probs equal the training forward's own:
  the loss uses stop_gradient(logp) (ratio exactly 1, the same value and gradient) and the
  separate scoring pass is skipped, as TRL and verl do with one iteration per batch.
  """
  rows = config.batch_size * config.sampling.num_samples
  return config.old_logp == 'recompute' and config.minibatch_size >= rows


def score(params, batch: Batch, temperature, *, model_cfg: QwenConfig, micro_batch: int,
          lora_on: bool = True, chunk_size: int = 128):
  """Forward-only log-probs f32[R, M], micro-batched (old policy / reference policy)."""
  mbs = _micro(batch, micro_batch)
  fn = lambda mb: completion_logps(params, model_cfg, mb, temperature, lora_on=lora_on,
                                   chunk_size=chunk_size)[0]
  logp = jax.lax.map(fn, mbs)
  return logp.reshape(batch.completion.shape)


def _micro(tree, micro_batch: int):
  """Reshapes every leaf [R, ...] -> [R // micro_batch, micro_batch, ...]."""
  def one(x):
    if x.shape[0] % micro_batch:
      raise ValueError(f'minibatch of {x.shape[0]} rows does not split into micro-batches '
                       f'of {micro_batch}')
    return x.reshape((x.shape[0] // micro_batch, micro_batch) + x.shape[1:])
  return jax.tree.map(one, tree)


# ---------------------------------------------------------------------------------------------
# rollout_update: difficulty state, rewards, advantages (once per rollout batch).
# ---------------------------------------------------------------------------------------------

def overlong_shaping(config: ml_collections.ConfigDict, lengths):
  """f32[R] DAPO overlong penalty of `lengths` when config.overlong is on, else None."""
  o = config.overlong
  if not o.enabled:
    return None
  return methods_lib.dapo_overlong_penalty(jnp.asarray(lengths), o.max_len, o.cache_len)


def rollout_update(state: TrainState, qids, correct, boxed, lengths, truncated, *,
                   config: ml_collections.ConfigDict, group_size: int, extra=None):
  """Updates the difficulty state -> (state, rewards, advantages, hard, keep, metrics).

  `keep` bool[R] marks the rows that enter the objective (all but EGRC's non-positive samples
  in its compression stage, which leave the loss and its denominators entirely).

  qids int32[R]; correct, boxed, truncated bool[R]; lengths int32[R]. `extra` carries
  per-token inputs of methods that need them (ENTRA: logp and attention received).
  Rewards use the difficulty state before this batch (DESIGN.md CEEH step 3).
  """
  c = config.ceeh
  diff = state.difficulty
  new_ceeh, ceeh_rewards, hard, metrics = difficulty_lib.ceeh_step(
      {'acc_h': diff['acc_h'], 'len_x': diff['len_x']}, qids, correct, boxed, lengths,
      group_size=group_size, lam=c.length_lambda, min_len_reward=c.length_clamp,
      acc_up=c.acc_rate_up, acc_down=c.acc_rate_down, len_shorter=c.len_rate_shorter,
      len_longer=c.len_rate_longer, reward_correct=c.reward_correct, reward_boxed=c.reward_boxed,
      reward_none=c.reward_none, compat=c.compat)
  method = config.method
  step = state.step
  keep = jnp.ones(correct.shape, bool)  # rows that enter the objective
  shaping = overlong_shaping(config, lengths)  # enters the rewards before any advantage
  if shaping is not None:
    metrics['reward/overlong'] = shaping.mean()
  if method in CEEH_METHODS:
    rewards, advantages, method_state = ceeh_rewards, None, diff['method']
    if shaping is not None:
      rewards = rewards + shaping
  else:
    inputs = methods_lib.RewardInputs(correct=correct, boxed=boxed, lengths=lengths,
                                      truncated=truncated, qids=qids, shaping=shaping,
                                      **(extra or {}))
    out = methods_lib.compute(method, config.method_hparams, inputs, diff['method'], step,
                              group_size=group_size)
    rewards, advantages, method_state = out.rewards, out.advantages, out.new_state
    metrics.update({f'method/{k}': v for k, v in out.metrics.items()})
    if methods_lib.loss_mask(out) is not None:  # EGRC compression: positive samples only
      keep = methods_lib.loss_mask(out)
  if advantages is None:
    advantages = losses_lib.group_advantages(rewards, group_size,
                                             std_normalize=config.grpo.std_normalize)
  metrics.update({'reward/mean': rewards.mean(), 'adv/abs_mean': jnp.abs(advantages).mean(),
                  'acc': correct.mean(), 'boxed': boxed.mean(),
                  'length': lengths.astype(jnp.float32).mean(),
                  'truncated': truncated.mean(), 'hard_fraction': hard.mean()})
  difficulty = {**new_ceeh, 'method': method_state}
  state = state.replace(step=step + 1, difficulty=difficulty)
  return state, rewards, advantages, hard.astype(jnp.float32), keep, metrics


# ---------------------------------------------------------------------------------------------
# train_step: one optimizer update on one minibatch (micro-batched, exact).
# ---------------------------------------------------------------------------------------------

def entropy_schedule(config, step):
  """(entropy coefficient, hard weight) at RL iteration `step` in 1..T (CEEH-ME, DESIGN.md step 5).

  Batch t of T uses progress t/T, as the released actor's `global_steps / T` does.
  """
  c = config.ceeh
  total = config.total_steps
  if c.entropy_schedule == 'cosine':
    return losses_lib.cosine_decay(c.entropy_coef, step, total), jnp.float32(c.hard_weight)
  if c.entropy_schedule == 'anneal_weight':
    return jnp.float32(c.entropy_coef), losses_lib.hard_weight_anneal(step, total,
                                                                      start=c.hard_weight, end=1.0)
  if c.entropy_schedule == 'constant':
    return jnp.float32(c.entropy_coef), jnp.float32(c.hard_weight)
  raise ValueError(f'unknown ceeh.entropy_schedule {c.entropy_schedule!r}')


def minibatch_loss(train_params, frozen, batch: Batch, temperature, it, ref_params=None, *,
                   config: ml_collections.ConfigDict, model_cfg: QwenConfig):
  """(loss, aux, grads) of one minibatch, accumulated exactly over micro-batches.

  Every aggregate is (sum over micro-batches) / (denominator of the whole minibatch), so the
  result equals one pass over the full minibatch for every aggregation mode.

  With the KL term, the reference log-probs are computed here, per micro-batch, by the same
  forward as the policy's (same program, dtype and micro-batch): while the policy equals the
  reference (step 1) the two agree bit for bit and KL is exactly 0. `ref_params`: the frozen
  reference of a full fine-tune; None under LoRA, where the reference is the frozen base with
  the adapters off (no second copy of the base).
  """
  g = config.grpo
  ent_coef, hard_weight = entropy_schedule(config, it)
  use_me = config.method == 'ceeh_me' and config.ceeh.entropy_coef > 0
  use_ea = config.method == 'ceeh_ea'
  use_kl = g.kl_coef > 0
  fresh = on_policy(config)  # behaviour log-probs = this forward's own (no scoring pass)
  t_max = config.sampling.max_new_tokens  # Dr.GRPO: a constant, not the trimmed batch width
  if use_kl and ref_params is None and not model_cfg.lora_rank:
    raise ValueError('a full fine-tune with grpo.kl_coef > 0 needs ref_params (the frozen '
                     'initial params)')

  # Denominators of the whole minibatch first, so micro-batch sums add up exactly.
  _, pg_den = losses_lib.aggregate(jnp.zeros(batch.mask.shape), batch.mask, g.aggregation,
                                   max_len=t_max)
  _, ent_den = losses_lib.ceeh_me_bonus(jnp.zeros(batch.mask.shape), batch.mask, batch.hard,
                                        hard_weight=hard_weight)

  def loss_fn(train_params, mb: Batch):
    params = merge_params(train_params, frozen)
    logp, ent = completion_logps(params, model_cfg, mb, temperature, chunk_size=config.logp_chunk)
    adv = jnp.broadcast_to(mb.advantages[:, None], logp.shape)
    if use_ea:
      adv = losses_lib.ceeh_ea_advantages(adv, ent, mb.hard, alpha=config.ceeh.ea_alpha)
    old_logp = jax.lax.stop_gradient(logp) if fresh else mb.old_logp
    pg_tok, clip = losses_lib.ppo_clip_loss(logp, old_logp, adv, mb.mask, eps_low=g.eps_low,
                                            eps_high=g.eps_high, dual_clip=g.dual_clip)
    pg_sum, _ = losses_lib.aggregate(pg_tok, mb.mask, g.aggregation, max_len=t_max)
    loss = pg_sum / pg_den
    m = mb.mask.astype(jnp.float32)
    aux = {'pg_loss': pg_sum / pg_den, 'entropy_sum': (ent * m).sum(), 'tokens': m.sum()}
    aux.update({f'clip/{k}': (v * m).sum() for k, v in clip.items()})
    if use_kl:
      ref = jax.lax.stop_gradient(params if ref_params is None else ref_params)
      ref_logp, _ = completion_logps(ref, model_cfg, mb, temperature, lora_on=False,
                                     chunk_size=config.logp_chunk)
      kl_tok = losses_lib.kl_penalty(logp, ref_logp, g.kl_kind)
      kl_sum, _ = losses_lib.aggregate(kl_tok, mb.mask, g.aggregation, max_len=t_max)
      loss = loss + g.kl_coef * kl_sum / pg_den
      aux['kl'] = kl_sum / pg_den
    if use_me:
      ent_sum, _ = losses_lib.ceeh_me_bonus(ent, mb.mask, mb.hard, hard_weight=hard_weight)
      loss = loss - ent_coef * ent_sum / jnp.maximum(ent_den, 1e-9)
      aux['entropy_bonus'] = ent_sum / jnp.maximum(ent_den, 1e-9)
    return loss, aux

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  mbs = _micro(batch, config.micro_batch_size)

  def accumulate(carry, mb):
    grads, loss, aux = carry
    (l, a), gr = grad_fn(train_params, mb)
    return (jax.tree.map(jnp.add, grads, gr), loss + l, jax.tree.map(jnp.add, aux, a)), None

  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), train_params)
  _, aux0 = jax.eval_shape(loss_fn, train_params, jax.tree.map(lambda x: x[0], mbs))
  aux0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux0)
  (grads, loss, aux), _ = jax.lax.scan(accumulate, (zeros, jnp.zeros(()), aux0), mbs)
  aux.update(entropy_coef=ent_coef, hard_weight=hard_weight)
  return loss, aux, grads


def all_finite(tree) -> jax.Array:
  """bool[]: every floating-point leaf of `tree` is free of NaN and Inf."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves])) if leaves else jnp.bool_(True)


def train_step(state: TrainState, batch: Batch, temperature, ref_params=None, *,
               config: ml_collections.ConfigDict, model_cfg: QwenConfig,
               optimizer: optax.GradientTransformation):
  """PPO-clip (+ KL, − CEEH-ME entropy bonus) gradient step -> (state, metrics).

  `ref_params`: the KL reference of a full fine-tune (see `minibatch_loss`); None with LoRA.
  """
  lora = model_cfg.lora_rank > 0
  # rollout_update already advanced the step: batch t of T trains at state.step = t (1..T),
  # the released actor's `global_steps / T` (first batch coef 0.001·½(1 + cos(π/T)), last 0).
  it = state.step
  train, frozen = split_params(state.params, lora)
  loss, aux, grads = minibatch_loss(train, frozen, batch, temperature, it, ref_params,
                                    config=config, model_cfg=model_cfg)
  grad_norm = optax.global_norm(grads)
  updates, new_opt = optimizer.update(grads, state.opt_state, train)
  new_train = optax.apply_updates(train, updates)
  # The update is skipped (params and optimizer state stay as they were) when the loss, the
  # gradient, or the update's result is non-finite: a finite gradient through a corrupt
  # optimizer state (NaN moments) would otherwise write NaN into the params.
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(new_train)
            & all_finite(new_opt))
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  state = state.replace(params=merge_params(keep(new_train, train), frozen),
                        opt_state=keep(new_opt, state.opt_state),
                        skipped=state.skipped + (~finite).astype(jnp.int32))
  tokens = jnp.maximum(aux.pop('tokens'), 1.0)
  metrics = {'loss': loss, 'grad_norm': grad_norm, 'update_skipped': (~finite).astype(jnp.float32),
             'entropy': aux.pop('entropy_sum') / tokens}
  metrics.update({k: v / tokens if k.startswith('clip/') else v for k, v in aux.items()})
  return state, metrics
