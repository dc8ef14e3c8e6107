r"""Google Tunix's `Sampler` (JAX, CPU) on the same HF weights and prompts: the sampler reference.

Run by `bench_sampler.py` with a separate venv's python (tunix pins its own jax/flax; never
this repo's environment):
  python -m venv .venv-tunix && .venv-tunix/bin/pip install google-tunix==0.1.7
  .venv-tunix/bin/python experiments/bench/tunix_worker.py --model_dir=DIR --spec=S.json \
      --out=OUT.json

The spec (JSON) gives the token-id prompts, G, M, the prompt bucket P and the cases to time
(temperature / top_p). Tunix's sampler takes text, so it gets a whitespace "id tokenizer"
(`"17 4 99"` <-> [17, 4, 99]) that satisfies Tunix's tokenizer protocol: the token ids it
prefills are exactly ours, and its host-side text decode costs next to nothing.

Tunix has no samples-per-prompt: each prompt is repeated G times (R = B·G rows), so its prefill
encodes every prompt G times. EOS is off (`eos_tokens=[-1]`, never sampled), so every row makes
exactly M tokens. The weights load through Tunix's own `create_model_from_safe_tensors`, and
each timed call is the public `sampler(...)` (prefill + while-loop decode + host decode),
best of `repeats` after one compiling warm-up. Prints one JSON line.
"""
import argparse
import json
import os
import time


class IdTokenizer:
  """Tunix tokenizer protocol over whitespace-separated token ids (no BOS)."""

  def __init__(self, pad_id: int, eos_id: int):
    self._pad, self._eos = pad_id, eos_id

  def encode(self, text, **_):
    return [int(t) for t in text.split()]

  def decode(self, ids, **_):
    return ' '.join(str(int(i)) for i in ids)

  def bos_id(self):
    return None

  def eos_id(self):
    return self._eos

  def pad_id(self):
    return self._pad


def model_config(model_lib, hf: dict, dtype):
  rope = hf.get('rope_theta') or (hf.get('rope_parameters') or {}).get('rope_theta', 10000.0)
  n = hf['num_attention_heads']
  return model_lib.ModelConfig(
      num_layers=hf['num_hidden_layers'], vocab_size=hf['vocab_size'],
      embed_dim=hf['hidden_size'], hidden_dim=hf['intermediate_size'], num_heads=n,
      head_dim=hf.get('head_dim') or hf['hidden_size'] // n,
      num_kv_heads=hf.get('num_key_value_heads', n), rope_theta=rope,
      norm_eps=hf.get('rms_norm_eps', 1e-6),
      use_tied_embedding=bool(hf.get('tie_word_embeddings', False)), dtype=dtype,
      param_dtype=dtype)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--model_dir', required=True)
  ap.add_argument('--spec', required=True)
  ap.add_argument('--out', required=True)
  args = ap.parse_args()
  with open(args.spec) as f:
    spec = json.load(f)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  from tunix.generate import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from tunix.models.qwen2 import model as model_lib  # pylint: disable=g-import-not-at-top
  from tunix.models.qwen2 import params as params_lib  # pylint: disable=g-import-not-at-top

  with open(os.path.join(args.model_dir, 'config.json')) as f:
    hf = json.load(f)
  dtype = jnp.dtype(spec.get('dtype', 'float32'))
  cfg = model_config(model_lib, hf, dtype)
  t0 = time.perf_counter()
  model = params_lib.create_model_from_safe_tensors(args.model_dir, cfg, mesh=None, dtype=dtype)
  load_s = time.perf_counter() - t0

  g, m, p_len = spec['num_samples'], spec['new_tokens'], spec['prompt_len']
  texts = [' '.join(map(str, p)) for p in spec['prompts'] for _ in range(g)]
  tok = IdTokenizer(spec['pad_id'], -1)
  sampler = sampler_lib.Sampler(model, tok, sampler_lib.CacheConfig(
      cache_size=p_len + m, num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim))

  def call(case, seed):
    greedy = case['temperature'] == 0  # Tunix is greedy only when top_p is None
    return sampler(texts, max_generation_steps=m, max_prompt_length=p_len, eos_tokens=[-1],
                   temperature=0.0 if greedy else case['temperature'],
                   top_p=None if greedy else case.get('top_p', 1.0), top_k=None, seed=seed)

  results = {}
  for case in spec['cases']:
    t0 = time.perf_counter()
    out = call(case, 0)
    compile_s = time.perf_counter() - t0
    lengths = sorted({len(t) for t in out.tokens})
    times = []
    for i in range(spec.get('repeats', 2)):
      t0 = time.perf_counter()
      call(case, i + 1)
      times.append(time.perf_counter() - t0)
    best = min(times)
    results[case['name']] = {
        'seconds': times, 'best_s': best, 'first_call_s': compile_s,
        'rows': len(texts), 'new_tokens': m, 'row_lengths': lengths,
        'tok_s': len(texts) * m / best,
        'head_tokens': [[int(x) for x in np.asarray(t)[:16]] for t in out.tokens]}
  res = {'tunix': metadata.version('google-tunix'), 'jax': jax.__version__,
         'devices': [str(d) for d in jax.devices()], 'dtype': dtype.name, 'load_s': load_s,
         'prompt_len': p_len, 'cache_size': p_len + m, 'cases': results}
  with open(args.out, 'w') as f:
    json.dump(res, f, indent=1)
  print(json.dumps({k: round(v['tok_s'], 1) for k, v in results.items()}))


if __name__ == '__main__':
  main()
