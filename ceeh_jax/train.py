"""`train_and_evaluate(config, workdir)`: the RL loop, top to bottom like the algorithm.

mesh -> data -> model & optimizer (eval_shape, sharded init) -> checkpoint restore ->
loop { rollout (jitted sampler) -> grade (host, bounded) -> rollout_update (jit) ->
       train_step per minibatch (jit, donated) -> metrics -> eval -> checkpoint }.

Multi-host: every process runs this same loop on the same host data (see distributed.py);
host values of sharded arrays come back through `sharding_lib.to_host`, process 0's grades
are used everywhere, only process 0 writes logs, metrics and reports, and all save checkpoints.
"""
import functools
import json
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ceeh_jax import checkpointing as ckpt_lib
from ceeh_jax import config_check
from ceeh_jax import data as data_lib
from ceeh_jax import distributed as dist_lib
from ceeh_jax import errors
from ceeh_jax import grading as grading_lib
from ceeh_jax import methods as methods_lib
from ceeh_jax import metric_writers
from ceeh_jax import metrics as metrics_lib
from ceeh_jax import policy as policy_lib
from ceeh_jax import preflight
from ceeh_jax import progress
from ceeh_jax import rollouts as rollouts_lib
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import steps as steps_lib
from ceeh_jax.synthetic import paths as synthetic
from ceeh_jax import tokenizer as tokenizer_lib


class Draw(NamedTuple):
  """One rollout batch of B prompts x G samples, graded; rows prompt-major."""
  idx: np.ndarray                  # int[B] training-example indices
  rollout: sampler_lib.Rollout     # device arrays [R, M]
  lengths: np.ndarray              # int32[R]
  truncated: np.ndarray            # bool[R]
  grades: list                     # R grading_lib results
  correct: np.ndarray              # bool[R]
  boxed: np.ndarray                # bool[R]


def merge_draws(draws: list[Draw]) -> Draw:
  """Concatenates draws of the same M along the batch (rows stay prompt-major)."""
  if len(draws) == 1:
    return draws[0]
  cat = lambda *xs: np.concatenate(xs)
  return Draw(idx=cat(*[d.idx for d in draws]),
              rollout=jax.tree.map(lambda *xs: jnp.concatenate(xs), *[d.rollout for d in draws]),
              lengths=cat(*[d.lengths for d in draws]),
              truncated=cat(*[d.truncated for d in draws]),
              grades=[gr for d in draws for gr in d.grades],
              correct=cat(*[d.correct for d in draws]), boxed=cat(*[d.boxed for d in draws]))


def take_groups(d: Draw, groups: np.ndarray, group_size: int) -> Draw:
  """The draw restricted to `groups` (indices into its B prompts), each with its G rows."""
  rows = (np.asarray(groups)[:, None] * group_size + np.arange(group_size)).reshape(-1)
  return Draw(idx=d.idx[groups], rollout=jax.tree.map(lambda x: x[rows], d.rollout),
              lengths=d.lengths[rows], truncated=d.truncated[rows],
              grades=[d.grades[i] for i in rows], correct=d.correct[rows], boxed=d.boxed[rows])


class TooManySkippedUpdates(errors.RunError, RuntimeError):
  """Persistent NaN/Inf updates: the run stops instead of silently training on garbage."""


class BrokenFinalState(errors.RunError):
  """The run ended with non-finite params or an eval accuracy collapsed to 0: not a success."""


def load_data(config, tokenizer, workdir):
  """Training and eval examples with their encoded prompts (budget checked at load)."""
  d = config.data
  load = functools.partial(data_lib.load_examples, field_map=dict(d.field_map),
                           on_error=d.on_error, tfds_data_dir=d.tfds_data_dir or None)
  train, stats = load(synthetic.resolve_data(d.train, workdir, config.seed))
  if stats.skipped:
    print(f'data: skipped {stats.skipped} malformed rows of {d.train}: {stats.reasons}')
  # Row by row where a row fails: an unencodable row is named (or skipped, on_error='skip').
  encode = functools.partial(rollouts_lib.encode_examples, tokenizer,
                             instruction=d.instruction, think_prefix=d.think_prefix,
                             max_tokens=d.max_prompt_tokens, overflow=d.prompt_overflow,
                             on_error=d.on_error)
  train, train_prompts, n_trunc, _ = encode(train, source=d.train)
  evals, eval_prompts = [], []
  if d.eval and d.eval_size:
    evals, _ = load(synthetic.resolve_data(d.eval, workdir, config.seed))
    evals, eval_prompts, _, _ = encode(evals[:d.eval_size], source=d.eval)
  return train, train_prompts, evals, eval_prompts, n_trunc


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after: int | None = None) -> dict:
  """Runs (or resumes) RL training in `workdir`; returns the final metrics record.

  `stop_after` ends this process after that many steps (as a preemption would), leaving the
  schedule of the full run untouched; tests use it to check resume == uninterrupted.
  """
  # Every input checked before anything is written: a bad one leaves no workdir behind.
  config_check.validate(config)
  preflight.check_train(config, workdir)
  tokenizer = preflight.load_tokenizer(config)
  main = dist_lib.is_main()  # the one process that writes logs, metrics and reports
  g = config.sampling.num_samples

  # --- Mesh --------------------------------------------------------------------------------
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  mesh = sharding_lib.make_mesh(config.mesh.shape)

  # --- Data --------------------------------------------------------------------------------
  train, train_prompts, evals, eval_prompts, n_trunc = load_data(config, tokenizer, workdir)
  os.makedirs(workdir, exist_ok=True)  # data read: the inputs are good
  fingerprint = data_lib.dataset_fingerprint(train)
  iterator = data_lib.EpochIterator(len(train), config.batch_size, config.seed)
  stop_ids = tuple(tokenizer_lib.stop_ids(tokenizer))
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]

  # --- Model & optimizer: abstract first (jax.eval_shape), nothing allocated yet -----------
  model_cfg = policy_lib.model_config(config)
  lora = model_cfg.lora_rank > 0
  optimizer = steps_lib.make_optimizer(config)
  hparams = methods_lib.default_hparams(config.method)
  hparams.update(dict(config.method_hparams))
  init_args = (len(train), config.seed, lora, config.method, hparams)
  abstract, state_shardings = policy_lib.abstract_state(model_cfg, optimizer, mesh, rules,
                                                        *init_args)
  base_record = policy_lib.base_record(config)

  # --- Checkpoint restore: the trainable part only, straight into its abstract targets -----
  ckpt = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  writer = metric_writers.MetricWriter(workdir, tensorboard=config.tensorboard, enabled=main)

  def check_meta(meta):
    ckpt_lib.check_data_fingerprint(meta, fingerprint, config.data.train)
    policy_lib.check_base(meta, base_record, ckpt.directory, lora)

  restored = ckpt.restore(policy_lib.trainable_state(abstract, lora), check_meta=check_meta)

  # --- Params: the base streamed from HF (or the preset's seed), then adapters/optimizer -----
  # LoRA: the frozen base with the adapters off is also the KL reference (no copy). Full
  # fine-tune: the reference is the base, a copy at the start, loaded again on resume.
  use_kl = config.grpo.kl_coef > 0
  ref_params = None
  if restored is not None:
    start, state, meta = restored
    if lora or use_kl:
      base = policy_lib.load_base(config, model_cfg, mesh, rules)
      if lora:
        state = state.replace(params=policy_lib.with_base(state.params, base))
      else:
        ref_params = base
      del base
    iterator.set_state(meta['iterator'])
    dropped = writer.truncate_after(start)
    if main:
      print(f'resumed from step {start} ({dropped} later log lines dropped)')
  else:
    start = 0
    params = policy_lib.load_base(config, model_cfg, mesh, rules)
    if lora:
      params = policy_lib.with_base(policy_lib.init_adapters(
          model_cfg, jax.random.key(config.seed + 1), mesh, rules), params)
    elif use_kl:
      ref_params = jax.tree.map(jnp.copy, params)  # the params train in place (donated)
    state = policy_lib.fresh_state(params, optimizer, state_shardings, *init_args)
    del params
    writer.truncate_after(0)

  # --- Jitted step functions ---------------------------------------------------------------
  under = functools.partial(sharding_lib.traced_under, mesh, rules)
  # The params stay stacked; scan_layers=False only unrolls the loss's forward over them.
  fwd_cfg = model_cfg.replace(scan_layers=config.model.get('scan_layers', True))
  rollout_update = jax.jit(
      under(functools.partial(steps_lib.rollout_update, config=config, group_size=g)),
      out_shardings=(state_shardings, None, None, None, None, None), donate_argnums=(0,))
  train_step = jax.jit(
      under(functools.partial(steps_lib.train_step, config=config, model_cfg=fwd_cfg,
                              optimizer=optimizer)),
      out_shardings=(state_shardings, None), donate_argnums=(0,),
      compiler_options=steps_lib.TRAIN_STEP_COMPILER_OPTIONS)
  score = jax.jit(under(functools.partial(steps_lib.score, model_cfg=fwd_cfg,
                                          micro_batch=config.micro_batch_size,
                                          chunk_size=config.logp_chunk)))
  sample_cfg = model_cfg.replace(dtype=config.model.sample_dtype)
  # The prompt ends inside <think>: a completion that never closes it has no answer.
  grader = grading_lib.Grader(num_workers=config.grading.num_workers,
                              timeout_s=config.grading.timeout_s,
                              require_think_close=config.data.think_prefix)

  unroll = sampler_lib.resolve_unroll(config.sampling.get('unroll_layers', 'auto'))

  def rollout(params, prompts, rng, temperature, n, max_new, top_p):
    cfg = sampler_lib.SampleConfig(max_new_tokens=max_new, temperature=temperature,
                                   top_p=top_p, top_k=config.sampling.top_k, num_samples=n,
                                   eos_ids=stop_ids, pad_id=pad_id, unroll_layers=unroll)
    view = sampler_lib.sampling_params(params, jnp.dtype(config.model.sample_dtype), unroll)
    one = lambda p, key, bucket: sampler_lib.generate(view, p, key, model_cfg=sample_cfg, cfg=cfg,
                                                      mesh=mesh, rules=rules, bucket=bucket)
    chunk = config.sampling.get('rows_per_chunk', 0)  # bounds the KV cache (rollouts.py)
    return rollouts_lib.generate_in_chunks(one, prompts, rng, group_size=n, rows_per_chunk=chunk)

  flags = methods_lib.trainer_flags(config.method, hparams)

  def draw(params, idx, key, temperature, max_new, timing) -> Draw:
    """Rollout of prompts `idx` (G each), then grading on the host (bounded per response)."""
    t0 = time.perf_counter()
    ro = rollout(params, [train_prompts[i] for i in idx], key, temperature, g, max_new,
                 config.sampling.top_p)
    tokens_np, lengths_np, truncated = sharding_lib.to_host((ro.tokens, ro.lengths,
                                                             ro.truncated))
    t1 = time.perf_counter()
    texts = tokenizer_lib.decode_completions(tokenizer, tokens_np, lengths_np)
    grades = grader.grade_batch(texts, [train[i].answer for i in idx for _ in range(g)])
    # A grading timeout can differ between hosts; all must train on the same rewards.
    correct, boxed = dist_lib.agree((np.array([gr.correct for gr in grades]),
                                     np.array([gr.boxed for gr in grades])))
    timing['rollout'] += t1 - t0
    timing['grade'] += time.perf_counter() - t1
    return Draw(idx=np.asarray(idx), rollout=ro, lengths=np.asarray(lengths_np, np.int32),
                truncated=np.asarray(truncated), grades=grades, correct=correct, boxed=boxed)

  def fresh_key(state):
    """Splits a sampling key off the state's rng (checkpointed: a resumed run draws the same)."""
    rng, key = jax.random.split(jax.random.wrap_key_data(state.rng))
    return state.replace(rng=jax.random.key_data(rng)), key

  def informative(d: Draw, state, step) -> np.ndarray:
    inputs = methods_lib.RewardInputs(correct=d.correct, boxed=d.boxed, lengths=d.lengths,
                                      truncated=d.truncated, qids=np.repeat(d.idx, g),
                                      shaping=steps_lib.overlong_shaping(config, d.lengths))
    return methods_lib.informative(config.method, hparams, inputs, state.difficulty['method'],
                                   step, group_size=g)

  # --- Base-policy eval (once per workdir, kept for the closing table) ---------------------
  bar = progress.StepBar(config.total_steps, start, config.method,
                         enabled=bool(config.progress and main))
  eval_rng = jax.random.key(config.seed + 17)  # the same eval draws for base and final
  base_path = os.path.join(workdir, 'base_eval.json')
  # Decided once for all processes (the eval is collective; only process 0 writes the file).
  if evals and dist_lib.agree(np.bool_(not os.path.exists(base_path))):
    bar.status(f'evaluating the base policy ({len(evals)} questions)...')  # compiles the sampler
    base = evaluate_slice(state.params, evals, eval_prompts, config, rollout, tokenizer, grader,
                          eval_rng)
    if main:
      ckpt_lib.dump_json(base_path, base)

  # --- Loop --------------------------------------------------------------------------------
  record = {}
  end = config.total_steps if stop_after is None else min(config.total_steps, start + stop_after)
  if start < end:
    bar.status(f'step {start + 1}: compiling the rollout and the update...')
  for step in range(start, end):
    t0 = time.perf_counter()
    temperature = methods_lib.sampling_temperature(config.method, hparams, step,
                                                   config.sampling.temperature)
    max_new = methods_lib.generation_limit(config.method, hparams, step,
                                           config.sampling.max_new_tokens)
    # Rollout and grading; with dynamic sampling (DLER) more batches of prompts are drawn, at
    # most max_rounds in all, until enough groups have rewards that differ.
    draws, timing, pool_info = [], {'rollout': 0.0, 'grade': 0.0}, np.zeros(0, bool)
    while not draws or (flags.dynamic_sampling and len(draws) < flags.max_rounds
                        and pool_info.sum() < config.batch_size):
      state, sample_key = fresh_key(state)
      draws.append(draw(state.params, iterator.next(), sample_key, temperature, max_new, timing))
      if flags.dynamic_sampling:
        pool_info = np.concatenate([pool_info, informative(draws[-1], state, step)])
    d = merge_draws(draws)
    if flags.dynamic_sampling:
      keep_groups = methods_lib.select_groups(pool_info, config.batch_size)
      d = take_groups(d, keep_groups, g)
      draw_metrics = {'dynamic/draws': len(draws),
                      'dynamic/informative_groups': float(pool_info[keep_groups].mean())}
    idx, ro, lengths_np, truncated, grades, correct, boxed = d
    t1 = t0 + timing['rollout']
    t2 = time.perf_counter()

    # Scores, rewards, advantages.
    batch = rollouts_lib.make_batch([train_prompts[i] for i in idx], ro, g, pad_id,
                                     lengths=lengths_np)
    if config.old_logp == 'recompute' and not steps_lib.on_policy(config):
      batch = batch.replace(old_logp=score(state.params, batch, jnp.float32(temperature)))
    extra = rollouts_lib.method_extras(config, model_cfg, state.params, batch, temperature)
    qids = np.repeat(np.asarray(idx, np.int32), g)
    state, rewards, adv, hard, keep, r_metrics = rollout_update(
        state, qids, correct, boxed, np.asarray(lengths_np, np.int32),
        truncated, extra=extra)
    batch = batch.replace(advantages=adv, hard=hard, mask=batch.mask & keep[:, None])
    t3 = time.perf_counter()

    # Minibatch updates.
    t_metrics = []
    for mb in rollouts_lib.minibatches(batch, config.minibatch_size):
      # The KL reference's log-probs come from inside the step (steps.minibatch_loss).
      state, m = train_step(state, mb, jnp.float32(temperature), ref_params)
      t_metrics.append(m)
    t_metrics = sharding_lib.to_host(t_metrics)
    t4 = time.perf_counter()

    skipped = int(state.skipped)
    if skipped > config.max_skipped_updates:
      raise TooManySkippedUpdates(
          f'{skipped} updates had a non-finite loss, gradient or result (limit '
          f'max_skipped_updates={config.max_skipped_updates}); stopping at step {step + 1}. '
          'Lower the learning rate or check the data; checkpoints are written only while '
          'the state is finite, so the latest one holds the last good state.')

    # Metrics.
    n_tokens = int(sum(dr.lengths.sum() for dr in draws))  # every token sampled this step
    record = {k: float(v) for k, v in sharding_lib.to_host(r_metrics).items()}
    record.update({k: float(np.mean([m[k] for m in t_metrics])) for k in t_metrics[0]})
    if 'kl' in t_metrics[0]:  # at the params that sampled the batch (later minibatches follow
      record['kl_first_minibatch'] = float(t_metrics[0]['kl'])  # updates): exactly 0 at step 1
    if flags.dynamic_sampling:
      record.update(draw_metrics)
    # The rollouts split by the examples' own difficulty (synthetic task: easy/hard by
    # construction), for curves of length and entropy per split over training.
    logps_np, mask_np = sharding_lib.to_host((ro.logps, ro.mask))
    record.update(split_metrics('train', [train[i] for i in idx], g, correct.astype(np.float32),
                                lengths_np, logps_np, mask_np))
    record.update({'grade/timeouts': sum(gr.status == 'timeout' for gr in grades),
                   'grade/errors': sum(gr.status == 'error' for gr in grades),
                   'time/rollout': t1 - t0, 'time/grade': t2 - t1, 'time/update': t3 - t2,
                   'time/train': t4 - t3, 'tokens_per_s': n_tokens / max(t1 - t0, 1e-9),
                   'prompts_truncated': n_trunc, 'updates_skipped_total': skipped,
                   'temperature': temperature})
    # The last step's eval is the final one (the base eval's draws, for the closing table).
    if evals and step + 1 == config.total_steps:
      bar.status(f'evaluating the final policy ({len(evals)} questions)...')
      final = evaluate_slice(state.params, evals, eval_prompts, config, rollout, tokenizer,
                             grader, eval_rng)
      record.update(final)
    elif evals and config.eval_every and (step + 1) % config.eval_every == 0:
      bar.status(f'evaluating ({len(evals)} questions)...')
      record.update(evaluate_slice(state.params, evals, eval_prompts, config, rollout, tokenizer,
                                   grader, jax.random.fold_in(sample_key, 1)))
    record = writer.write(step + 1, record)
    bar.step(time.perf_counter() - t0, record)

    # Checkpoint (never a non-finite state: e.g. NaN optimizer moments from a bad restore make
    # every update skip; saving them would carry the damage into the next run).
    if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
      if state_finite(state):
        # Trainable params, optimizer and difficulty state; the base is named in `base`.
        ckpt.save(step + 1, policy_lib.trainable_state(state, lora),
                  {'iterator': iterator.get_state(), 'data_fingerprint': fingerprint,
                   'base': base_record, 'config': config.to_json_best_effort()})
      elif main:
        print(f'WARNING: not saving the checkpoint of step {step + 1}: the params or optimizer '
              'state hold NaN/Inf', flush=True)
  final_path = os.path.join(workdir, 'final_eval.json')
  if evals and end == config.total_steps:
    # Re-running a finished run shows its table again; the eval of the same state is not redone.
    if start == end and dist_lib.agree(np.bool_(os.path.exists(final_path))):
      with open(final_path) as f:
        final = json.load(f)
    elif start == end:  # finished before final_eval.json existed: evaluate the state once
      bar.status(f'evaluating the final policy ({len(evals)} questions)...')
      final = evaluate_slice(state.params, evals, eval_prompts, config, rollout, tokenizer,
                             grader, eval_rng)
    bar.close()
    if main:
      ckpt_lib.dump_json(final_path, final)
      with open(base_path) as f:
        table = report_table(json.load(f), final)
      with open(os.path.join(workdir, 'report.md'), 'w') as f:
        f.write(table + '\n')
      print(f'\n{config.method}: base policy vs after {config.total_steps} steps '
            f'({len(evals)} held-out questions)\n{table}')
    record.update(final)
  bar.close()
  ckpt.close()
  grader.close()
  writer.close()
  check_final_state(state, record, base_path if evals and end == config.total_steps else None,
                    workdir)
  return record


@jax.jit
def _state_finite(params, opt_state):
  return steps_lib.all_finite(params) & steps_lib.all_finite(opt_state)


def state_finite(state) -> bool:
  """Whether the params and optimizer state are free of NaN/Inf (a collective, multi-host)."""
  return bool(sharding_lib.to_host(_state_finite(state.params, state.opt_state)))


def check_final_state(state, record: dict, base_path: str | None, workdir: str) -> None:
  """Raises BrokenFinalState when the run ends with non-finite params, or (after the final
  eval; `base_path` holds the base policy's) with accuracy 0 from a non-zero base."""
  if not bool(sharding_lib.to_host(jax.jit(steps_lib.all_finite)(state.params))):
    raise BrokenFinalState(
        f'the final params in {workdir} hold NaN or Inf, so the trained policy is unusable; '
        'check loss and grad_norm in the metrics and restart from an earlier checkpoint')
  if base_path is None or 'eval/acc' not in record or not os.path.exists(base_path):
    return
  with open(base_path) as f:
    base_acc = json.load(f).get('eval/acc', 0.0)
  if record['eval/acc'] == 0 and base_acc > 0:
    raise BrokenFinalState(
        f'the final eval accuracy collapsed to 0 from {base_acc:.3f} (base policy) in {workdir} '
        '(report.md); training broke the policy: check loss, grad_norm and the eval curves in '
        'the metrics, lower the learning rate, or restart from an earlier checkpoint')


def evaluate_slice(params, evals, eval_prompts, config, rollout, tokenizer, grader, rng):
  """ACC / LEN / entropy on the held-out slice, split easy/hard when rows say (meta.hard).

  Entropy here is the Monte-Carlo estimate −mean log p of the sampled tokens (nats/token at
  the eval temperature).
  """
  s = config.sampling
  g = s.eval_num_samples
  ro = rollout(params, eval_prompts, rng, s.eval_temperature, g, s.max_new_tokens, s.eval_top_p)
  tokens, lengths, logps, mask = sharding_lib.to_host((ro.tokens, ro.lengths, ro.logps, ro.mask))
  texts = tokenizer_lib.decode_completions(tokenizer, tokens, lengths)
  grades = grader.grade_batch(texts, [e.answer for e in evals for _ in range(g)])
  correct = np.array([gr.correct for gr in grades], np.float32)
  return split_metrics('eval', evals, g, correct, lengths, logps, mask)


def split_metrics(prefix, examples, g, correct, lengths, logps, mask) -> dict:
  """ACC / LEN / Monte-Carlo entropy (and pass@G when G > 1) overall and per easy/hard split.

  Rows are prompt-major, G per example; the split is the examples' `meta.hard` (the synthetic
  task's by-construction difficulty), skipped when no example says.
  """
  ent = -(logps * mask).sum(1) / np.maximum(mask.sum(1), 1)
  hard = np.array([bool(e.meta.get('hard', False)) for e in examples for _ in range(g)])
  has_split = any('hard' in e.meta for e in examples)
  out = {}
  for name, sel in (('', np.ones_like(hard)), ('/easy', ~hard), ('/hard', hard)):
    if sel.any() and (name == '' or has_split):
      per_q = correct[sel].reshape(-1, g).mean(1)  # a question's G samples are not independent
      out.update({f'{prefix}{name}/acc': float(correct[sel].mean()),
                  f'{prefix}{name}/acc_se': float(per_q.std(ddof=1) / np.sqrt(per_q.size))
                                            if per_q.size > 1 else float('nan'),
                  f'{prefix}{name}/length': float(lengths[sel].mean()),
                  f'{prefix}{name}/entropy': float(ent[sel].mean())})
      if g > 1:  # unbiased pass@G over each question's G samples
        per_q = correct[sel].reshape(-1, g).astype(bool)
        out[f'{prefix}{name}/pass@k'] = float(metrics_lib.mean_pass_at_k(per_q, g))
  return out


def report_table(base: dict, final: dict) -> str:
  """Base policy vs trained policy, per split: the default job's closing table.

  ACC ± its standard error over questions (the noise to read a change against).
  """
  rows = ['| split | ACC base | ACC final | LEN base | LEN final | entropy base | entropy final |',
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
  nan = float('nan')

  def acc(rec, k):
    se = rec.get(f'{k}/acc_se', nan)
    return f"{rec.get(f'{k}/acc', nan):.3f}" + (f' ± {se:.3f}' if np.isfinite(se) else '')

  for split in ('', '/easy', '/hard'):
    k = f'eval{split}'
    if f'{k}/acc' not in final:
      continue
    rows.append(f"| {split.strip('/') or 'all'} | {acc(base, k)} | {acc(final, k)} | "
                f"{base.get(f'{k}/length', nan):.1f} | {final[f'{k}/length']:.1f} | "
                f"{base.get(f'{k}/entropy', nan):.3f} | {final[f'{k}/entropy']:.3f} |")
  return '\n'.join(rows)
