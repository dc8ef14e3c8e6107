r"""HF `transformers` `model.generate` (PyTorch, CPU) on the same weights and prompts.

Run by `bench_sampler.py` as a subprocess (this repo's environment has torch + transformers;
a separate process so torch's and XLA's thread pools never share the two cores):
  python experiments/bench/hf_generate_worker.py --model_dir=DIR --spec=S.json --out=OUT.json

The spec (JSON) gives the token-id prompts (all of length P: no padding), G, M and the cases
(temperature / top_p). Each case is one `generate` call on the B prompts each repeated G times
(rows prompt-major, as ours; what `num_return_sequences=G` does internally, and greedy refuses
`num_return_sequences` > 1), `min_new_tokens = max_new_tokens = M`
(EOS can never end a row: every row makes exactly M tokens), top_k = 0 (HF's default is 50; ours
and Tunix's filter only by top-p), default dynamic KV cache, SDPA attention, fp32, inference
mode, `torch.set_num_threads(threads)`, OMP_WAIT_POLICY=PASSIVE (see below). Best of `repeats`, after one short warm-up call (`warmup_tokens`; 0 = none).
Prints one JSON line.
"""
import argparse
import json
import os
import time

# Before torch starts OpenMP: with the default (active, spinning) wait policy, 2 torch threads on
# 2 cores shared with other processes ran the tiny model's generate ~10x slower here (2.3 s vs
# 0.22 s per call); passive waiting is the fair setting on a loaded machine.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import torch  # noqa: E402
import transformers  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--model_dir', required=True)
  ap.add_argument('--spec', required=True)
  ap.add_argument('--out', required=True)
  ap.add_argument('--threads', type=int, default=2)
  args = ap.parse_args()
  torch.set_num_threads(args.threads)
  with open(args.spec) as f:
    spec = json.load(f)
  dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[spec.get('dtype', 'float32')]
  t0 = time.perf_counter()
  model = transformers.AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype)
  model.eval()
  load_s = time.perf_counter() - t0
  g, m = spec['num_samples'], spec['new_tokens']
  # Each prompt repeated G times, prompt-major (what `num_return_sequences=G` does inside
  # `generate` before the prefill; greedy refuses num_return_sequences > 1).
  ids = torch.tensor(spec['prompts'], dtype=torch.long).repeat_interleave(g, dim=0)
  mask = torch.ones_like(ids)

  def call(case, new_tokens, seed):
    torch.manual_seed(seed)
    kw = dict(do_sample=True, temperature=case['temperature'], top_p=case.get('top_p') or 1.0,
              top_k=0) if case['temperature'] > 0 else dict(do_sample=False)
    with torch.inference_mode():
      return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens,
                            pad_token_id=spec['pad_id'], **kw)

  results = {}
  if spec.get('warmup_tokens', 4):  # one short call first (allocator, kernels)
    call(spec['cases'][0], min(m, spec.get('warmup_tokens', 4)), 0)
  for case in spec['cases']:
    times = []
    for i in range(spec.get('repeats', 2)):
      t0 = time.perf_counter()
      out = call(case, m, i + 1)
      times.append(time.perf_counter() - t0)
    new = out[:, ids.shape[1]:]
    assert new.shape == (ids.shape[0], m), new.shape
    best = min(times)
    results[case['name']] = {'seconds': times, 'best_s': best, 'rows': int(new.shape[0]),
                             'new_tokens': m, 'tok_s': new.shape[0] * m / best,
                             'head_tokens': new[:, :16].tolist()}
  res = {'torch': torch.__version__, 'transformers': transformers.__version__,
         'threads': torch.get_num_threads(), 'omp_wait_policy': os.environ['OMP_WAIT_POLICY'],
         'dtype': str(dtype), 'load_s': load_s,
         'attn_implementation': getattr(model.config, '_attn_implementation', None),
         'cases': results}
  with open(args.out, 'w') as f:
    json.dump(res, f, indent=1)
  print(json.dumps({k: round(v['tok_s'], 1) for k, v in results.items()}))


if __name__ == '__main__':
  main()
