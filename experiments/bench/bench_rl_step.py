r"""End-to-end RL step: our jitted pieces vs TRL's GRPOTrainer, and the tiny step's breakdown.

  python experiments/bench/bench_rl_step.py                     # both parts (TRL from .venv-trl)
  python experiments/bench/bench_rl_step.py --trl_python=''     # skip TRL (reuses its last JSON)

Part 1, vs TRL (same shipped base policy `ceeh_jax/synthetic/base_policy`, same 8 prompts):
8 prompts x 8 completions x exactly 128 new tokens (EOS off on both sides), beta = 0, one
optimizer update over the 64 completions. Reward: trivial and shared, 1 if the completion's
token count is even (so grading costs nothing on either side). Ours runs what the trainer runs:
sampler (prefill + while_loop decode, fp32), `rollout_update`, `train_step` (CEEH-ME, donated
state); one update per batch, so the old log-probs are the training forward's own
(`steps.on_policy`: no scoring pass, as TRL with num_iterations=1). TRL runs in
its own venv (`trl_worker.py`; torch CPU, 2 threads). The sides alternate for `--rounds`
rounds of `--steps` steps (the shared machine's speed drifts over minutes), best step each.
FLOP-bound limit = (train 6·N·tokens + attention, + decode 2·N·tokens + attention over the
cache) / the fp32 matmul peak measured in this run.

Part 2, the default tiny config's RL step (configs/tiny.py: 16 prompts x 8 samples, up to 160
new tokens with EOS, math-verify grading, 2 minibatches of 64), every phase blocked on its
result (the trainer's own time/* metrics do not block, so async dispatch moves time between
them): rollout / grade / score (old log-probs) / rollout_update / train.

Writes experiments/bench/results/rl_step.json.
"""
import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ceeh_jax import grading as grading_lib  # noqa: E402
from ceeh_jax import hf_io  # noqa: E402
from ceeh_jax import methods as methods_lib  # noqa: E402
from ceeh_jax import rollouts as rollouts_lib  # noqa: E402
from ceeh_jax import sampler as sampler_lib  # noqa: E402
from ceeh_jax import sharding as sharding_lib  # noqa: E402
from ceeh_jax import steps as steps_lib  # noqa: E402
from ceeh_jax import tokenizer as tokenizer_lib  # noqa: E402
from ceeh_jax.synthetic import paths as synthetic  # noqa: E402
from ceeh_jax.synthetic import task as task_lib  # noqa: E402
from configs import tiny  # noqa: E402
from experiments.bench import roofline  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
PHASES = ('rollout', 'grade', 'score', 'rollout_update', 'train')


class Step:
  """The trainer's jitted pieces on one CPU device, built as `train.py` builds them."""

  def __init__(self, config, num_questions):
    self.config = config
    base_cfg, params = hf_io.load_hf(synthetic.BASE_POLICY)
    m = config.model
    self.model_cfg = base_cfg.replace(dtype=m.dtype, param_dtype=m.param_dtype,
                                      remat_policy=m.remat_policy, decode_chunk=m.decode_chunk)
    self.tokenizer = tokenizer_lib.load_tokenizer(synthetic.BASE_POLICY)
    self.stop_ids = tuple(tokenizer_lib.stop_ids(self.tokenizer))
    self.pad_id = self.tokenizer.pad_token_id
    mesh = sharding_lib.make_mesh((1, 1, 1))
    rules = sharding_lib.rules_from_config(config.mesh.rules)
    self.mesh, self.rules = mesh, rules
    opt = steps_lib.make_optimizer(config)
    hp = methods_lib.default_hparams(config.method)
    state = steps_lib.init_train_state(params, opt, num_questions, config.seed, False,
                                       config.method, hp)
    shardings = steps_lib.state_shardings(
        state, sharding_lib.param_shardings(self.model_cfg, mesh, rules), mesh)
    self.state = jax.device_put(state, shardings)
    under = functools.partial(sharding_lib.traced_under, mesh, rules)
    g = config.sampling.num_samples
    self.rollout_update = jax.jit(
        under(functools.partial(steps_lib.rollout_update, config=config, group_size=g)),
        out_shardings=(shardings, None, None, None, None, None), donate_argnums=(0,))
    fwd_cfg = self.model_cfg.replace(scan_layers=m.get('scan_layers', True))  # as train.py
    self.train_step = jax.jit(
        under(functools.partial(steps_lib.train_step, config=config, model_cfg=fwd_cfg,
                                optimizer=opt)), out_shardings=(shardings, None),
        donate_argnums=(0,))
    self.score = jax.jit(under(functools.partial(
        steps_lib.score, model_cfg=fwd_cfg, micro_batch=config.micro_batch_size,
        chunk_size=config.logp_chunk)), static_argnames=('lora_on',))

  def encode(self, problems):
    texts = [tokenizer_lib.build_prompt(self.tokenizer, p, instruction='', think_prefix=True)
             for p in problems]
    return texts, tokenizer_lib.encode_prompts(self.tokenizer, texts)

  def run(self, prompts, qids, grade, rng, *, eos: bool) -> dict:
    """One RL step, each phase blocked on its outputs -> seconds per phase."""
    c, s = self.config, self.config.sampling
    g = s.num_samples
    t = {}
    t0 = time.perf_counter()
    cfg = sampler_lib.SampleConfig(max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                   top_p=s.top_p, top_k=s.top_k, num_samples=g,
                                   eos_ids=self.stop_ids if eos else (), pad_id=self.pad_id)
    view = sampler_lib.sampling_params(self.state.params, jnp.dtype(c.model.sample_dtype))
    ro = sampler_lib.generate(view, prompts, rng, model_cfg=self.model_cfg.replace(
        dtype=c.model.sample_dtype), cfg=cfg, mesh=self.mesh, rules=self.rules)
    tokens, lengths, truncated = jax.device_get((ro.tokens, ro.lengths, ro.truncated))
    t['rollout'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    correct, boxed = grade(tokens, lengths)
    t['grade'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = rollouts_lib.make_batch(prompts, ro, g, self.pad_id, lengths=lengths)
    if c.old_logp == 'recompute' and not steps_lib.on_policy(c):
      batch = batch.replace(old_logp=self.score(self.state.params, batch,
                                                jnp.float32(s.temperature)))
    jax.block_until_ready(batch)
    t['score'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    self.state, _, adv, hard, keep, _ = self.rollout_update(
        self.state, np.repeat(np.asarray(qids, np.int32), g), correct, boxed,
        np.asarray(lengths, np.int32), np.asarray(truncated))
    batch = batch.replace(advantages=adv, hard=hard, mask=batch.mask & keep[:, None])
    jax.block_until_ready((self.state, batch))
    t['rollout_update'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = []
    for mb in rollouts_lib.minibatches(batch, c.minibatch_size):
      self.state, m = self.train_step(self.state, mb, jnp.float32(s.temperature))
      metrics.append(m)
    jax.device_get(metrics)
    t['train'] = time.perf_counter() - t0
    t['total'] = sum(t.values())
    t['tokens'] = int(lengths.sum())
    t['seq_len'] = int(batch.prompt.shape[1] + batch.completion.shape[1])
    t['prompt_len'] = int(batch.prompt.shape[1])
    return t


def flops_per_step(cfg, r, p, m, minibatches=1, recompute=True) -> dict:
  """Model FLOPs of one RL step on r responses of prompt p + completion m (all tokens)."""
  t = p + m
  n = cfg.num_params - cfg.vocab_size * cfg.embed_dim * (1 if cfg.tie_embeddings else 2)
  head = cfg.embed_dim * cfg.vocab_size
  attn_fwd = 4 * cfg.num_heads * cfg.head_dim * t * t / 2 * cfg.num_layers  # per row, causal
  fwd = 2 * n * r * t + 2 * head * r * m + attn_fwd * r
  decode = 2 * n * r * t + 2 * head * r * m + attn_fwd * r  # prefill + decode, same work
  return {'train': 3 * fwd, 'score': fwd if recompute else 0.0, 'decode': decode,
          'total': 3 * fwd + (fwd if recompute else 0.0) + decode}


def trivial_grade(tokens, lengths):
  ok = np.asarray(lengths) % 2 == 0
  return ok, ok


def part_trl(args, peak):
  config = tiny.get_config()
  config.batch_size, config.sampling.max_new_tokens = 8, 128
  config.minibatch_size = 64  # one update per batch; micro-batches as configs/tiny.py
  config.grpo.kl_coef = 0.0
  rows = task_lib.make_dataset(8, seed=0)
  step = Step(config, num_questions=8)
  texts, prompts = step.encode([r['problem'] for r in rows])
  trl_json = os.path.join(RESULTS, 'trl_step.json')

  def run_trl():
    with tempfile.TemporaryDirectory() as tmp:
      prompts_path = os.path.join(tmp, 'prompts.json')
      with open(prompts_path, 'w') as f:
        json.dump(texts, f)
      subprocess.run([args.trl_python, os.path.join(os.path.dirname(__file__), 'trl_worker.py'),
                      f'--model_dir={synthetic.BASE_POLICY}', f'--prompts={prompts_path}',
                      f'--out={trl_json}', f'--steps={args.steps}',
                      f'--temperature={config.sampling.temperature}'], check=True,
                     # PASSIVE: torch's spinning OpenMP threads ran ~10x slower on shared cores.
                     env={**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'OMP_WAIT_POLICY': 'PASSIVE'})
    with open(trl_json) as f:
      return json.load(f)

  # Rounds alternate ours and TRL, so a slow minute on the shared machine hits both sides;
  # each side's best step over all rounds is kept.
  times, trl_rounds = [], []
  step.run(prompts, np.arange(8), trivial_grade, jax.random.key(0), eos=False)  # compiles
  for r in range(args.rounds):
    for i in range(args.steps):
      times.append(step.run(prompts, np.arange(8), trivial_grade,
                            jax.random.key(1 + r * args.steps + i), eos=False))
    if args.trl_python:
      trl_rounds.append(run_trl())
  ours = min(times, key=lambda t: t['total'])
  cfg = step.model_cfg
  flops = flops_per_step(cfg, 64, ours['prompt_len'], 128,
                         recompute=not steps_lib.on_policy(config))
  bound = flops['total'] / peak.matmul_flops['float32']
  if not trl_rounds and os.path.exists(trl_json):  # --trl_python='': the last TRL run
    with open(trl_json) as f:
      trl_rounds = [json.load(f)]
  trl_step = min(min(t['measured_step_s']) for t in trl_rounds) if trl_rounds else float('nan')
  trl_gen = min(min(t['measured_generate_s']) for t in trl_rounds) if trl_rounds else float('nan')
  return {'ours': ours, 'ours_all': times, 'flops': flops, 'flop_bound_s': bound,
          'trl': trl_rounds, 'trl_step_s': trl_step, 'trl_generate_s': trl_gen,
          'rounds': args.rounds}


def part_tiny(args):
  config = tiny.get_config()
  workdir = tempfile.mkdtemp()
  train, _ = __import__('ceeh_jax.data', fromlist=['x']).load_examples(
      synthetic.resolve_data(config.data.train, workdir, config.seed))
  step = Step(config, num_questions=len(train))
  grader = grading_lib.Grader(num_workers=config.grading.num_workers,
                              timeout_s=config.grading.timeout_s, require_think_close=True)
  b = config.batch_size
  g = config.sampling.num_samples
  times = []
  try:
    for i in range(args.steps + 1):
      idx = np.arange(i * b, (i + 1) * b) % len(train)
      _, prompts = step.encode([train[j].problem for j in idx])
      answers = [train[j].answer for j in idx for _ in range(g)]

      def grade(tokens, lengths):
        texts = tokenizer_lib.decode_completions(step.tokenizer, tokens, lengths)
        grades = grader.grade_batch(texts, answers)
        return (np.array([x.correct for x in grades]), np.array([x.boxed for x in grades]))

      times.append(step.run(prompts, idx, grade, jax.random.key(100 + i), eos=True))
  finally:
    grader.close()
  return {'steps': times}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--steps', type=int, default=3, help='measured steps per side and round')
  ap.add_argument('--rounds', type=int, default=2, help='ours / TRL alternations (vs TRL part)')
  ap.add_argument('--trl_python', default=os.path.join(REPO, '.venv-trl', 'bin', 'python'))
  ap.add_argument('--parts', default='trl,tiny')
  ap.add_argument('--out', default=os.path.join(RESULTS, 'rl_step.json'))
  args = ap.parse_args()
  os.makedirs(RESULTS, exist_ok=True)
  peak = roofline.measure(dtypes=('float32',))
  print('roofline:', peak.describe())
  out = {'roofline': {'matmul_flops': peak.matmul_flops, 'bandwidth': peak.bandwidth}}
  if 'trl' in args.parts:
    r = part_trl(args, peak)
    out['vs_trl'] = r
    o = r['ours']
    print('\nRL step, 8 prompts x 8 completions x 128 tokens, beta 0 (trivial shared reward)')
    print('| what | ours (s) | TRL GRPOTrainer (s) | TRL / ours | FLOP-bound (s) | roofline fraction |')
    print('| --- | ---: | ---: | ---: | ---: | ---: |')
    print(f"| whole step | {o['total']:.3f} | {r['trl_step_s']:.3f} | "
          f"{r['trl_step_s'] / o['total']:.1f}x | {r['flop_bound_s']:.3f} | "
          f"{r['flop_bound_s'] / o['total']:.1%} |")
    print(f"| generation | {o['rollout']:.3f} | {r['trl_generate_s']:.3f} | "
          f"{r['trl_generate_s'] / o['rollout']:.1f}x | "
          f"{r['flops']['decode'] / peak.matmul_flops['float32']:.3f} | |")
    rest = o['total'] - o['rollout']
    print(f"| rest (score + update + train) | {rest:.3f} | "
          f"{r['trl_step_s'] - r['trl_generate_s']:.3f} | "
          f"{(r['trl_step_s'] - r['trl_generate_s']) / rest:.1f}x | "
          f"{(r['flops']['train'] + r['flops']['score']) / peak.matmul_flops['float32']:.3f} | |")
    print(f"ours per phase: " + ', '.join(f'{k} {o[k]:.3f}' for k in PHASES))
  if 'tiny' in args.parts:
    r = part_tiny(args)
    out['tiny'] = r
    best = {k: min(t[k] for t in r['steps'][1:]) for k in PHASES + ('total',)}
    med = {k: float(np.median([t[k] for t in r['steps'][1:]])) for k in PHASES + ('total',)}
    out['tiny_best'], out['tiny_median'] = best, med
    print('\nTiny RL step (configs/tiny.py), each phase blocked; median / best of '
          f"{len(r['steps']) - 1} steps after a warm-up")
    print('| phase | median (s) | best (s) |')
    print('| --- | ---: | ---: |')
    for k in PHASES + ('total',):
      print(f'| {k} | {med[k]:.3f} | {best[k]:.3f} |')
  out['load_avg'] = os.getloadavg()
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1, default=float)


if __name__ == '__main__':
  main()
