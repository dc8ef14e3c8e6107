r"""Rollout sampler throughput: ours vs HF `generate` vs Google Tunix, long rollouts, decode cost
vs context, all against the machine's measured roofline.

  python experiments/bench/bench_sampler.py            # everything (~15 min on 2 busy cores)
  python experiments/bench/bench_sampler.py --quick    # tiny model only, short (~2 min)
  python experiments/bench/bench_sampler.py --parts=compare --sizes=tiny --tunix_python=''

Parts (`--parts`, comma-separated):
  compare  (a, b, e) the same weights, B prompts x G samples, prompt P, exactly M new tokens
           (EOS off on every side; 4 x 8 = 32 rows, P = 64, M = 128 tiny / 32 at 0.5B, the
           0.5B call costing ~1 min a side here), greedy and sampled (temperature 0.6, top-p 0.95, no top-k):
           ours (`sampler.generate`, one jitted prefill + while-loop decode) vs HF transformers
           `model.generate` (PyTorch CPU, 2 threads, `hf_generate_worker.py`) vs Tunix's
           `Sampler` (its own venv, `tunix_worker.py`); `--rounds` (default 2) alternations of
           the three sides, the best call per side and case kept (every round's tok/s is in the
           JSON as round_tok_s: the shared machine drifts over minutes). Sizes: `tiny` = the
           shipped base policy (`ceeh_jax/synthetic/base_policy`, 0.16M params), `0p5b` = the
           Qwen2.5-0.5B preset with random weights (`qwen2.init_params`, exported once with
           `hf_io.save_hf` so HF and Tunix load the very same tensors). Every side fp32; ours also in bf16 at 0.5B (the
           trainer samples in bf16 by default; `model.sample_dtype`).
  long     (c) tiny model, ours, 1 prompt x 8 samples, M = 128 / 1024 / 4096 new tokens (EOS
           off): tok/s and its ratio to M = 128. The tiny config says max_position_embeddings = 512; nothing of ours
           checks it (RoPE is computed for any position).
  context  (d) tiny model, per-step decode time with L live cache tokens (a length-L prompt
           prefilled by `sampler.prefill`, then `sampler.decode` of a few tokens, timed alone),
           in the cache the sampler allocates (L + M) and in the same state padded into a
           larger preallocated cache: the cost should follow L, not the allocation.
  select   the token-selection step alone (`sampler.select`) on [R, V] logits at the 0.5B
           vocabulary, flat (random-weight) and peaked logits, next to its pieces.

Roofline (e): per decode step with `live` keys,
  FLOPs = 2·R·(non-embedding params + V·D head) + 4·R·L·N·H·live   (attention QK and PV)
  bytes = params·itemsize + R·L·2·K·H·live·itemsize                 (weights + live KV read once)
  ideal = max(FLOPs / matmul peak, bytes / bandwidth), peak and bandwidth measured in this run
  (`roofline.py`, dtype-matched) before and after the parts, the faster of the two kept (the
  cores are shared with other jobs, and a slow moment must not flatter a fraction). A whole rollout's ideal = prefill (B prompts, head on the
  last position only) + the sum over its M − 1 decode steps; roofline tok/s = R·M / ideal and
  fraction = ideal / our measured time. HF and Tunix share the roofline of the same case.

Prompts are random token ids (never the pad id 0), all exactly P long, identical on every side
(Tunix gets them through a whitespace id tokenizer). Writes experiments/bench/results/sampler.json
(`--quick`: sampler_quick.json).
"""
import argparse
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

from ceeh_jax import hf_io  # noqa: E402
from ceeh_jax import sampler as sampler_lib  # noqa: E402
from ceeh_jax.models import qwen2 as qwen2_lib  # noqa: E402
from ceeh_jax.models.config import QwenConfig  # noqa: E402
from ceeh_jax.synthetic import paths as synthetic  # noqa: E402
from experiments.bench import roofline  # noqa: E402
from experiments.bench import sampler_tables as tables  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results')
PAD = 0
CASES = {'greedy': dict(temperature=0.0, top_p=1.0), 'top_p': dict(temperature=0.6, top_p=0.95)}


# ---------------------------------------------------------------------------------------------
# Roofline.
# ---------------------------------------------------------------------------------------------

def _sizes(cfg: QwenConfig):
  head = cfg.vocab_size * cfg.embed_dim
  body = cfg.num_params - head * (1 if cfg.tie_embeddings else 2)  # non-embedding params
  return body, head


def decode_step_cost(cfg: QwenConfig, rows: int, live: int, itemsize: int):
  """(FLOPs, bytes) of one decode step of `rows` rows attending over `live` keys."""
  body, head = _sizes(cfg)
  kv = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim
  flops = 2 * rows * (body + head) + 4 * rows * cfg.num_layers * cfg.num_heads * cfg.head_dim * live
  return flops, (body + head) * itemsize + rows * kv * live * itemsize


def prefill_cost(cfg: QwenConfig, prompts: int, p_len: int, itemsize: int):
  """(FLOPs, bytes) of encoding `prompts` prompts of p_len tokens (head on the last only)."""
  body, head = _sizes(cfg)
  attn = 2 * cfg.num_layers * cfg.num_heads * cfg.head_dim * p_len * p_len  # causal half
  kv = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim
  flops = prompts * (2 * p_len * body + 2 * head + attn)
  return flops, (body + head) * itemsize + prompts * kv * p_len * itemsize


def decode_ideal(peak, cfg, rows, first_live, steps, dtype):
  """Ideal seconds of `steps` decode steps whose live length starts at first_live."""
  itemsize = jnp.dtype(dtype).itemsize
  return sum(peak.ideal_seconds(*decode_step_cost(cfg, rows, first_live + t, itemsize), dtype)
             for t in range(steps))


def rollout_ideal(peak, cfg, b, g, p_len, m, dtype):
  """{'prefill', 'decode', 'total'} ideal seconds of one B x G x M rollout."""
  itemsize = jnp.dtype(dtype).itemsize
  pre = peak.ideal_seconds(*prefill_cost(cfg, b, p_len, itemsize), dtype)
  dec = decode_ideal(peak, cfg, b * g, p_len + 1, m - 1, dtype)  # step t attends P + t keys
  return {'prefill': pre, 'decode': dec, 'total': pre + dec}


# ---------------------------------------------------------------------------------------------
# Ours.
# ---------------------------------------------------------------------------------------------

def make_prompts(b: int, p_len: int, vocab: int, seed: int = 0):
  rs = np.random.RandomState(seed)
  return [rs.randint(1, vocab, size=p_len).tolist() for _ in range(b)]


def sample_config(case: str, m: int, g: int):
  return sampler_lib.SampleConfig(max_new_tokens=m, num_samples=g, eos_ids=(), pad_id=PAD,
                                  top_k=0, **CASES[case])


def _best(fn, repeats):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times), times


def time_ours(params, model_cfg, prompts, case, m, g, repeats, time_prefill=True):
  """Warm-up (compiling) call, then best of `repeats` blocked `generate` calls."""
  cfg = sample_config(case, m, g)
  calls = iter(range(1, 10 ** 6))

  def call():
    ro = sampler_lib.generate(params, prompts, jax.random.key(next(calls)), model_cfg=model_cfg,
                              cfg=cfg)
    return jax.block_until_ready(ro)

  t0 = time.perf_counter()
  ro = call()
  first = time.perf_counter() - t0
  lengths = np.asarray(ro.lengths)
  assert (lengths == m).all(), f'rows ended early: lengths {sorted(set(lengths.tolist()))}'
  best, times = _best(call, repeats)
  out = {'best_s': best, 'seconds': times, 'first_call_s': first, 'rows': len(prompts) * g,
         'new_tokens': m, 'tok_s': len(prompts) * g * m / best,
         'head_tokens': np.asarray(ro.tokens[:, :16]).tolist()}
  if time_prefill:  # the same jitted prefill generate runs (compiled above), timed alone
    tokens, mask = jax.device_put(sampler_lib.pad_prompts(prompts, PAD))
    temp, top_p = jax.device_put((np.float32(max(cfg.temperature, 1e-6)), np.float32(cfg.top_p)))
    pre = lambda: jax.block_until_ready(sampler_lib.prefill(
        params, tokens, mask, jax.random.key(0), temp, top_p, model_cfg=model_cfg, cfg=cfg))
    pre()
    out['prefill_s'] = _best(pre, max(1, min(repeats, 3)))[0]
  return out


# ---------------------------------------------------------------------------------------------
# Workers (HF in this environment, Tunix in its own venv), JSON in / JSON out.
# ---------------------------------------------------------------------------------------------

def run_worker(python, script, model_dir, spec, timeout):
  with tempfile.TemporaryDirectory() as tmp:
    spec_path, out_path = os.path.join(tmp, 'spec.json'), os.path.join(tmp, 'out.json')
    with open(spec_path, 'w') as f:
      json.dump(spec, f)
    cmd = [python, os.path.join(HERE, script), f'--model_dir={model_dir}', f'--spec={spec_path}',
           f'--out={out_path}']
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'JAX_PLATFORMS': 'cpu',
                                 'PYTHONPATH': ''})
    except (subprocess.TimeoutExpired, OSError) as e:
      return {'error': f'{script}: {type(e).__name__}: {e}'}
    if proc.returncode or not os.path.exists(out_path):
      return {'error': f'{script} exited {proc.returncode}: {proc.stderr[-2000:]}'}
    with open(out_path) as f:
      return json.load(f)


def _agreement(a, b):
  """Fraction of rows whose first 16 greedy tokens are identical."""
  if not a or not b or len(a) != len(b):
    return None
  return float(np.mean([list(x[:16]) == list(y[:16]) for x, y in zip(a, b)]))


# ---------------------------------------------------------------------------------------------
# Parts.
# ---------------------------------------------------------------------------------------------

def load_size(size, args):
  """-> (model dir, QwenConfig, fp32 params)."""
  if size == 'tiny':
    cfg, params = hf_io.load_hf(synthetic.BASE_POLICY)
    return synthetic.BASE_POLICY, cfg.replace(decode_chunk=args.decode_chunk), params
  cfg = QwenConfig.qwen25_0p5b(decode_chunk=args.decode_chunk)
  model_dir = os.path.join(args.workdir, 'qwen25_0p5b_random_seed0')
  if not os.path.exists(os.path.join(model_dir, 'config.json')):
    t0 = time.perf_counter()
    params = qwen2_lib.init_params(cfg, jax.random.key(0))
    hf_io.save_hf(params, cfg, model_dir + '.tmp')
    os.replace(model_dir + '.tmp', model_dir)
    print(f'  wrote random 0.5B weights to {model_dir} ({time.perf_counter() - t0:.0f} s)')
    del params
  loaded_cfg, params = hf_io.load_hf(model_dir)
  return model_dir, loaded_cfg.replace(decode_chunk=args.decode_chunk), params


def _keep_best(results: dict, key: str, new: dict) -> None:
  """results[key] becomes the faster of it and `new`; 'round_tok_s' lists every round."""
  old = results.get(key)
  rounds = (old['round_tok_s'] if old else []) + [new['tok_s']]
  if old is None or new['best_s'] < old['best_s']:
    results[key] = new
  results[key]['round_tok_s'] = rounds


def _merge_worker(res: dict, name: str, new: dict) -> None:
  """Folds one worker run into res[name]: per case the faster call (an error only if no run
  succeeded)."""
  if 'error' in new:
    res.setdefault(name, new)
    return
  old = res.get(name)
  if old is None or 'error' in old:  # the first run that worked
    res[name] = {**new, 'cases': {}}
  for case, r in new['cases'].items():
    _keep_best(res[name]['cases'], case, r)


def part_compare(args, size):
  quick, big = args.quick, size != 'tiny'
  b, g, p_len = 4, 8, 64
  m = args.big_new_tokens if big else (64 if quick else 128)
  reps = 1 if big else (3 if quick else 5)
  model_dir, cfg, params = load_size(size, args)
  prompts = make_prompts(b, p_len, cfg.vocab_size)
  print(f'\n[{size}] {cfg.num_params / 1e6:.2f}M params, {b} prompts x G={g} = {b * g} rows, '
        f'prompt {p_len}, {m} new tokens')
  res = {'size': size, 'num_params': cfg.num_params, 'prompts': b, 'num_samples': g,
         'prompt_len': p_len, 'new_tokens': m, 'ours': {}, '_cfg': cfg}
  variants = [('float32', c) for c in CASES] + ([('bfloat16', 'top_p')] if big else [])
  spec = {'prompts': prompts, 'num_samples': g, 'new_tokens': m, 'prompt_len': p_len,
          'pad_id': PAD, 'dtype': 'float32', 'repeats': 1 if big else 3,
          'warmup_tokens': 0 if big else 4,
          'cases': [{'name': k, **v} for k, v in CASES.items()]}
  timeout = 1800 if big else 600
  # Rounds alternate ours, HF and Tunix (the shared machine's speed drifts over minutes); each
  # side keeps its best call per case over all rounds, and every round's tok/s is recorded.
  for rnd in range(args.rounds):
    tag = f' round {rnd + 1}/{args.rounds}' if args.rounds > 1 else ''
    for dtype, case in variants:
      # The sampler's own view (layers unrolled; a bf16 copy for bf16), made once like a load.
      view = sampler_lib.sampling_params(params, jnp.dtype(dtype))
      t0 = time.perf_counter()
      r = time_ours(view, cfg.replace(dtype=dtype, scan_layers=False), prompts, case, m, g, reps)
      _keep_best(res['ours'], f'{case}/{dtype}', r)
      print(f'  ours {case} {dtype}{tag}: {r["tok_s"]:.0f} tok/s '
            f'({time.perf_counter() - t0:.0f} s)')
      del view
    if args.hf:
      t0 = time.perf_counter()
      r = run_worker(sys.executable, 'hf_generate_worker.py', model_dir, spec, timeout)
      _merge_worker(res, 'hf', r)
      print(f'  HF{tag}: {_summary(r)} ({time.perf_counter() - t0:.0f} s)')
    if args.tunix_python:
      t0 = time.perf_counter()
      if os.path.exists(args.tunix_python):
        r = run_worker(args.tunix_python, 'tunix_worker.py', model_dir, spec, timeout)
      else:
        r = {'error': f'no Tunix venv at {args.tunix_python} (python -m venv .venv-tunix && '
                      '.venv-tunix/bin/pip install google-tunix==0.1.7)'}
      _merge_worker(res, 'tunix', r)
      print(f'  Tunix{tag}: {_summary(r)} ({time.perf_counter() - t0:.0f} s)')
  del params
  ours_greedy = res['ours']['greedy/float32']['head_tokens']
  res['greedy_agreement'] = {
      k: _agreement(ours_greedy, res.get(k, {}).get('cases', {}).get('greedy', {}).get(
          'head_tokens')) for k in ('hf', 'tunix')}
  return res


def _summary(r):
  if 'error' in r:
    return 'ERROR ' + r['error'].strip().splitlines()[-1][:200]
  return ', '.join(f'{k} {v["tok_s"]:.0f} tok/s' for k, v in r['cases'].items())


def part_long(args):
  _, cfg, params = load_size('tiny', args)
  cfg, params = cfg.replace(scan_layers=False), sampler_lib.sampling_params(params, jnp.float32)
  b, g, p_len = 1, 8, 64  # 8 rows: M = 4096 stays under a minute a call here
  prompts = make_prompts(b, p_len, cfg.vocab_size, seed=1)
  lengths = (128, 512) if args.quick else (128, 1024, 4096)
  rows = []
  for m in lengths:
    r = time_ours(params, cfg, prompts, 'top_p', m, g, 3 if m <= 1024 else 2, time_prefill=False)
    r.pop('head_tokens')
    rows.append({**r, 'ms_per_step': 1e3 * r['best_s'] / m})
    print(f'  long M={m}: {r["tok_s"]:.0f} tok/s')
  for r in rows:
    r['ratio_vs_first'] = r['tok_s'] / rows[0]['tok_s']
  return {'prompts': b, 'num_samples': g, 'prompt_len': p_len, 'case': 'top_p', 'rows': rows,
          '_cfg': cfg}


def _seq_axis(cfg):
  """The cache's sequence axis, found from shapes alone (no assumption about the layout)."""
  c = cfg.decode_chunk
  a = jax.tree.leaves(jax.eval_shape(lambda: qwen2_lib.init_cache(cfg, 1, 2 * c)))[0].shape
  z = jax.tree.leaves(jax.eval_shape(lambda: qwen2_lib.init_cache(cfg, 1, 4 * c)))[0].shape
  (axis,) = [i for i, (x, y) in enumerate(zip(a, z)) if x != y]
  return axis


def _pad_state(state, axis, s_alloc):
  """The prefill state moved into an s_alloc-slot cache (extra slots zero, key mask True)."""
  def pad(x):
    width = [(0, 0)] * x.ndim
    width[axis] = (0, s_alloc - x.shape[axis])
    return jnp.pad(x, width)
  s_now = jax.tree.leaves(state.cache)[0].shape[axis]
  key_mask = jnp.pad(state.key_mask, ((0, 0), (0, s_alloc - s_now)), constant_values=True)
  # Own copies of the other fields: decoding `state` donates (deletes) its buffers.
  return jax.tree.map(jnp.copy, state.replace(cache=None, key_mask=None)).replace(
      cache=jax.tree.map(pad, state.cache), key_mask=key_mask)


def part_context(args):
  _, cfg, params = load_size('tiny', args)
  cfg, params = cfg.replace(scan_layers=False), sampler_lib.sampling_params(params, jnp.float32)
  g, steps = 32, 32  # one prompt x 32 samples: 32 rows, 32 timed decode steps
  lives = (256, 1024) if args.quick else (256, 512, 1024, 2048, 4096, 8192)
  s_alloc = 2 * max(lives)
  axis = _seq_axis(cfg)
  cfg_s = sample_config('top_p', steps + 1, g)
  temp, top_p = jnp.float32(cfg_s.temperature), jnp.float32(cfg_s.top_p)
  rows = []
  for live in lives:
    tokens, mask = sampler_lib.pad_prompts(make_prompts(1, live, cfg.vocab_size, seed=2), PAD)
    pre = lambda: jax.block_until_ready(sampler_lib.prefill(
        params, tokens, mask, jax.random.key(0), temp, top_p, model_cfg=cfg, cfg=cfg_s))
    t_exact, t_alloc = [], []
    s_exact = None
    for i in range(4):  # first round compiles
      state = pre()
      s_exact = jax.tree.leaves(state.cache)[0].shape[axis]
      big = jax.block_until_ready(_pad_state(state, axis, s_alloc))
      for st, acc in ((state, t_exact), (big, t_alloc)):
        t0 = time.perf_counter()
        jax.block_until_ready(sampler_lib.decode(params, st, temp, top_p, model_cfg=cfg,
                                                 cfg=cfg_s))
        acc.append(time.perf_counter() - t0)
      del state, big
    ex, al = min(t_exact[1:]) / steps, min(t_alloc[1:]) / steps
    rows.append({'live': live, 'cache_exact': s_exact, 'cache_alloc': s_alloc,
                 'step_s_exact': ex, 'step_s_alloc': al, 'alloc_over_exact': al / ex,
                 'us_per_row_token': 1e6 * ex / g, 'tok_s': g / ex})
    print(f'  context {live}: {1e3 * ex:.2f} ms/step (cache {s_exact}), '
          f'{1e3 * al:.2f} ms/step (cache {s_alloc})')
  return {'rows_per_step': g, 'timed_steps': steps, 'case': 'top_p', 'seq_axis': axis,
          'rows': rows, '_cfg': cfg}


def part_select(args):
  r, v = 32, QwenConfig.qwen25_0p5b().vocab_size
  key = jax.random.key(1)
  out = {'rows': r, 'vocab': v, 'ms': {}}
  sel_p = jax.jit(lambda l, k: sampler_lib.select(l, k, jnp.float32(0.6), top_k=0,
                                                  top_p=jnp.float32(0.95), greedy=False))
  sel_g = jax.jit(lambda l, k: sampler_lib.select(l, k, jnp.float32(1.0), top_k=0, top_p=None,
                                                  greedy=True))
  ops = {'select top-p 0.95 (T 0.6)': sel_p, 'select greedy': sel_g,
         'jax.random.categorical': jax.jit(lambda l, k: jax.random.categorical(k, l, -1)),
         'argmax': jax.jit(lambda l, k: jnp.argmax(l, -1)),
         'lax.top_k 256': jax.jit(lambda l, k: jax.lax.top_k(l, 256)[0]),
         'log_softmax': jax.jit(lambda l, k: jax.nn.log_softmax(l, -1))}
  # std 0.6 ~ the random 0.5B model's logits (the top-256 candidates never hold 95% of the mass:
  # the full-vocabulary path runs: rejection, rarely the exact threshold); std 6 ~ a trained
  # model's peaked next-token distribution.
  for name, std in (('flat', 0.6), ('peaked', 6.0)):
    logits = jax.random.normal(jax.random.key(0), (r, v)) * std
    for op, fn in ops.items():
      if name == 'peaked' and not op.startswith('select'):
        continue
      jax.block_until_ready(fn(logits, key))
      out['ms'][f'{op} [{name}]'] = 1e3 * _best(lambda: jax.block_until_ready(fn(logits, key)),
                                               5)[0]
  return out


def add_roofline(out, peak):
  """Fills every ideal / roofline / fraction field from the final roofline."""
  for res in out.get('compare', []):
    cfg, b, g = res['_cfg'], res['prompts'], res['num_samples']
    res['ideal'] = {d: rollout_ideal(peak, cfg, b, g, res['prompt_len'], res['new_tokens'], d)
                    for d in {k.split('/')[1] for k in res['ours']}}
    for key, o in res['ours'].items():
      ideal = res['ideal'][key.split('/')[1]]
      o['roofline_tok_s'] = b * g * res['new_tokens'] / ideal['total']
      o['fraction'] = ideal['total'] / o['best_s']
      o['decode_fraction'] = ideal['decode'] / (o['best_s'] - o['prefill_s'])
  if 'long' in out:
    r = out['long']
    for x in r['rows']:
      x['ideal_s'] = rollout_ideal(peak, r['_cfg'], r['prompts'], r['num_samples'],
                                   r['prompt_len'], x['new_tokens'], 'float32')['total']
      x['roofline_tok_s'] = x['rows'] * x['new_tokens'] / x['ideal_s']
      x['fraction'] = x['ideal_s'] / x['best_s']
  if 'context' in out:
    r = out['context']
    for x in r['rows']:
      x['ideal_step_s'] = decode_ideal(peak, r['_cfg'], r['rows_per_step'], x['live'] + 1,
                                       r['timed_steps'], 'float32') / r['timed_steps']
      x['fraction'] = x['ideal_step_s'] / x['step_s_exact']


# ---------------------------------------------------------------------------------------------
# Results (the printed tables are in sampler_tables.py).
# ---------------------------------------------------------------------------------------------

def _public(x):
  """Drops the '_cfg' helpers before writing JSON."""
  if isinstance(x, dict):
    return {k: _public(v) for k, v in x.items() if not k.startswith('_')}
  if isinstance(x, list):
    return [_public(v) for v in x]
  return x


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--quick', action='store_true', help='tiny model only, short lengths')
  ap.add_argument('--parts', default='compare,long,context,select')
  ap.add_argument('--sizes', default=None, help='compare sizes: tiny,0p5b (quick: tiny)')
  ap.add_argument('--big_new_tokens', type=int, default=32, help='M at the 0.5B shape')
  ap.add_argument('--rounds', type=int, default=2, help='ours / HF / Tunix alternations (compare)')
  ap.add_argument('--decode_chunk', type=int, default=128, help='as default_config')
  ap.add_argument('--tunix_python', default=os.path.join(REPO, '.venv-tunix', 'bin', 'python'), help="'' skips Tunix")
  ap.add_argument('--no_hf', dest='hf', action='store_false')
  ap.add_argument('--workdir', default=os.path.join(REPO, 'runs', 'bench_sampler'), help='random 0.5B weights')
  ap.add_argument('--out', default=None)
  args = ap.parse_args()
  sizes = (args.sizes or ('tiny' if args.quick else 'tiny,0p5b')).split(',')
  out_path = args.out or os.path.join(RESULTS, 'sampler_quick.json' if args.quick
                                      else 'sampler.json')
  os.makedirs(RESULTS, exist_ok=True)
  os.makedirs(args.workdir, exist_ok=True)
  t_start = time.perf_counter()
  dtypes = ('float32', 'bfloat16')
  first = roofline.measure(dtypes=dtypes)
  print('roofline (start):', first.describe())
  # Paths inside the repository are recorded relative to it (no machine-specific paths).
  rel = lambda v: (os.path.relpath(v, REPO) if isinstance(v, str) and os.path.isabs(v)
                   and v.startswith(REPO + os.sep) else v)
  out = {'jax': jax.__version__, 'devices': [str(d) for d in jax.devices()],
         'args': {k: rel(v) for k, v in vars(args).items()}}
  parts = args.parts.split(',')
  if 'compare' in parts:
    out['compare'] = [part_compare(args, s) for s in sizes]
  if 'long' in parts:
    out['long'] = part_long(args)
  if 'context' in parts:
    out['context'] = part_context(args)
  if 'select' in parts:
    out['select'] = part_select(args)
  # The machine is shared: the roofline is measured before and after, and the faster of the two
  # (per number) is the bar, so a fraction is never flattered by a slow moment.
  last = roofline.measure(dtypes=dtypes)
  peak = roofline.Roofline(
      matmul_flops={d: max(first.matmul_flops[d], last.matmul_flops[d]) for d in dtypes},
      bandwidth=max(first.bandwidth, last.bandwidth))
  out['roofline'] = {'matmul_flops': peak.matmul_flops, 'bandwidth': peak.bandwidth,
                     'measurements': [{'matmul_flops': r.matmul_flops, 'bandwidth': r.bandwidth}
                                      for r in (first, last)]}
  add_roofline(out, peak)
  out['load_avg'] = os.getloadavg()
  out['wall_s'] = time.perf_counter() - t_start
  with open(out_path, 'w') as f:
    json.dump({k: _public(v) for k, v in out.items()}, f, indent=1, default=float)
  print(f'\nroofline: {peak.describe()} (best of start / end: {first.describe()} / '
        f'{last.describe()}); load average {out["load_avg"]}')
  if 'compare' in out:
    tables.print_compare(out['compare'])
  if 'long' in out:
    tables.print_long(out['long'])
  if 'context' in out:
    tables.print_context(out['context'])
  if 'select' in out:
    tables.print_select(out['select'])
  tables.print_goals(out)
  print(f'\nwrote {out_path} ({out["wall_s"]:.0f} s)')


if __name__ == '__main__':
  main()
