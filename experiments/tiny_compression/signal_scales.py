r"""How big is each part of the CEEH update at this scale? Advantage magnitudes and gradient shares.

  python experiments/tiny_compression/signal_scales.py            # λ 0.1, 0.3, 1.0; coef 0.001, 0.01

From the shipped base policy, with the experiment's config (`run.experiment_config`): draws
the same 16 training questions twice (8 samples each); the first batch fills the difficulty
state (acc_h, len_x), the second gets CEEH rewards with the length term. Prints, per λ:
  * mean |A| on easy and on hard groups (by the synthetic task's construction): the total, the
    part from correctness alone (λ = 0) and the length part (the difference);
and, per entropy coefficient c, the gradient norms of the policy-gradient term and of the
CEEH-ME bonus c·Σw·H/Σw (hard weight 5) separately, their ratio and cosine. Numbers for the
experiment README; nothing here trains.
"""
import argparse
import functools
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

from ceeh_jax import grading as grading_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from ceeh_jax import hf_io
from ceeh_jax import rollouts as rollouts_lib
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import steps as steps_lib
from ceeh_jax import tokenizer as tokenizer_lib
from ceeh_jax import train as train_lib
from ceeh_jax.synthetic import paths as synthetic
import run as run_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def draw(params, model_cfg, config, tokenizer, grader, examples, prompts, key):
  """One rollout batch of the given prompts (G samples each), graded on the host."""
  s = config.sampling
  stop = tuple(tokenizer_lib.stop_ids(tokenizer))
  cfg = sampler_lib.SampleConfig(max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                 top_p=s.top_p, num_samples=s.num_samples, eos_ids=stop,
                                 pad_id=stop[0])
  ro = sampler_lib.generate(sampler_lib.sampling_params(params, jnp.float32), prompts, key,
                            model_cfg=model_cfg, cfg=cfg)
  tokens, lengths = jax.device_get((ro.tokens, ro.lengths))
  texts = tokenizer_lib.decode_completions(tokenizer, tokens, lengths)
  grades = grader.grade_batch(texts, [e.answer for e in examples for _ in range(s.num_samples)])
  return (ro, np.asarray(lengths, np.int32), np.array([gr.correct for gr in grades]),
          np.array([gr.boxed for gr in grades]), np.asarray(jax.device_get(ro.truncated)))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--lams', default='0.1,0.3,1.0')
  ap.add_argument('--coefs', default='0.001,0.01')
  ap.add_argument('--seed', type=int, default=0)
  args = ap.parse_args()
  config = run_lib.experiment_config('ceeh_me', args.seed, {})
  g = config.sampling.num_samples
  base_dir = synthetic.resolve_model_dir(config.model.hf_dir)
  tokenizer = tokenizer_lib.load_tokenizer(base_dir)
  model_cfg, params = hf_io.load_hf(base_dir)
  with tempfile.TemporaryDirectory() as tmp:
    train, prompts, _, _, _ = train_lib.load_data(config, tokenizer, tmp)
  idx = np.arange(config.batch_size)
  examples, batch_prompts = [train[i] for i in idx], [prompts[i] for i in idx]
  hard_r = np.repeat([bool(e.meta.get('hard')) for e in examples], g)
  qids = jnp.asarray(np.repeat(idx, g), jnp.int32)
  grader = grading_lib.Grader(num_workers=0, timeout_s=5.0, require_think_close=True)
  key = jax.random.key(args.seed)
  first = draw(params, model_cfg, config, tokenizer, grader, examples, batch_prompts,
               jax.random.fold_in(key, 0))
  second = draw(params, model_cfg, config, tokenizer, grader, examples, batch_prompts,
                jax.random.fold_in(key, 1))
  print(f'base policy, {config.batch_size} questions x {g} samples, twice: accuracy easy '
        f'{second[2][~hard_r].mean():.3f} hard {second[2][hard_r].mean():.3f}; length easy '
        f'{second[1][~hard_r].mean():.1f} hard {second[1][hard_r].mean():.1f}')

  def advantages(lam):
    c = config.copy_and_resolve_references()
    c.ceeh.length_lambda = lam
    state = steps_lib.init_train_state(params, optax.identity(), len(train), 0, False,
                                       'ceeh_me', {})
    _, len1, cor1, box1, tr1 = first
    state, *_ = steps_lib.rollout_update(state, qids, cor1, box1, len1, tr1, config=c,
                                         group_size=g)
    _, len2, cor2, box2, tr2 = second
    return steps_lib.rollout_update(state, qids, cor2, box2, len2, tr2, config=c, group_size=g)

  _, _, a0, hard, _, _ = advantages(0.0)
  a0 = np.asarray(a0)
  print('\n| λ | mean abs A easy | from correctness | length part | mean abs A hard | '
        'from correctness | length part | gated rows (correct, len_x set) |')
  print('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for lam in [float(x) for x in args.lams.split(',')]:
    _, _, a, _, _, m = advantages(lam)
    a = np.asarray(a)
    part = lambda x, sel: np.abs(x[sel]).mean()
    print(f'| {lam} | {part(a, ~hard_r):.3f} | {part(a0, ~hard_r):.3f} | '
          f'{part(a - a0, ~hard_r):.3f} | {part(a, hard_r):.3f} | {part(a0, hard_r):.3f} | '
          f'{part(a - a0, hard_r):.3f} | {float(m["ceeh/length_reward_gated"]):.2f} |')

  # Gradients of the two terms of the CEEH-ME loss on the second batch (λ = the experiment's).
  state, _, adv, hard, _, _ = advantages(config.ceeh.length_lambda)
  batch = rollouts_lib.make_batch(batch_prompts, second[0], g, tokenizer_lib.stop_ids(tokenizer)[0])
  batch = batch.replace(advantages=adv, hard=hard)
  train_p, frozen = steps_lib.split_params(params, False)
  fwd_cfg = model_cfg.replace(scan_layers=config.model.get('scan_layers', True))

  @functools.partial(jax.jit, static_argnums=(0,))
  def grads(coef):
    c = config.copy_and_resolve_references()
    c.ceeh.entropy_coef = coef
    c.ceeh.entropy_schedule = 'constant'
    return steps_lib.minibatch_loss(train_p, frozen, batch, jnp.float32(config.sampling.temperature),
                                    jnp.int32(1), config=c, model_cfg=fwd_cfg)[2]

  flat = lambda t: jnp.concatenate([x.ravel() for x in jax.tree.leaves(t)])
  g_pg = flat(grads(0.0))
  print(f'\n|∇ policy-gradient term| = {float(jnp.linalg.norm(g_pg)):.4g} (hard fraction '
        f'{float(hard.mean()):.2f})')
  print('| entropy coef | abs ∇ of c·bonus | ratio to the PG gradient | cosine with PG |')
  print('| ---: | ---: | ---: | ---: |')
  for coef in [float(x) for x in args.coefs.split(',')]:
    g_ent = flat(grads(coef)) - g_pg   # the loss subtracts c·bonus: this is −c·∇bonus
    n_ent = float(jnp.linalg.norm(g_ent))
    cos = float(jnp.dot(g_ent, g_pg) / (n_ent * jnp.linalg.norm(g_pg) + 1e-30))
    print(f'| {coef} | {n_ent:.4g} | {n_ent / float(jnp.linalg.norm(g_pg)):.3f} | {cos:+.3f} |')
  grader.close()


if __name__ == '__main__':
  main()
