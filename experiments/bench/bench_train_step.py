r"""Train-step model FLOP utilisation at the Qwen2.5-0.5B shape (random weights, fp32, CPU).

  python experiments/bench/bench_train_step.py            # R=2 responses x (64 + 448) tokens
  python experiments/bench/bench_train_step.py --responses=4 --completion=192

Times the jitted gradient computation of one train-step minibatch, `steps.minibatch_loss`: the
trainer's forward (blocked causal attention), chunked fp32 log-probs + entropy, PPO-clip loss
with the CEEH-ME bonus, and the backward to every parameter (full fine-tune). The AdamW update
that follows in `train_step` is memory-bound and left out (0.5B fp32: ~14 GB streamed, ~0.25 s
at ~59 GB/s against tens of seconds of matmuls); fp32 Adam moments would also not fit the 8 GB
this benchmark may use.

Model FLOPs (what the MFU counts, nothing recomputed):
  6 · N_layers · R·T          N_layers = non-embedding params (every sequence position)
  6 · D·V · R·M               the (tied) lm_head matmul, only on the M scored positions
  3 · 4·N·H · R·T²/2 · L      attention QK and PV, causal half, forward + backward
MFU = model FLOPs / seconds / peak, peak = the best fp32 matmul of `roofline.py` in this run.
Writes experiments/bench/results/train_step.json.
"""
import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ceeh_jax import default_config  # noqa: E402
from ceeh_jax import steps as steps_lib  # noqa: E402
from ceeh_jax.models import qwen2 as qwen2_lib  # noqa: E402
from ceeh_jax.models.config import QwenConfig  # noqa: E402
from experiments.bench import roofline  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def model_flops(cfg: QwenConfig, r: int, p: int, m: int) -> dict:
  """Training FLOPs of one minibatch of r responses (prompt p + completion m tokens)."""
  t = p + m
  n_embed = cfg.vocab_size * cfg.embed_dim * (1 if cfg.tie_embeddings else 2)
  n_layers = cfg.num_params - n_embed                    # blocks + final norm
  dense = 6 * n_layers * r * t
  head = 6 * cfg.embed_dim * cfg.vocab_size * r * m
  attn = 3 * 4 * cfg.num_heads * cfg.head_dim * r * t * t / 2 * cfg.num_layers
  return {'dense': dense, 'lm_head': head, 'attention': attn, 'total': dense + head + attn,
          'n_layers_params': n_layers, 'n_lm_head_params': cfg.embed_dim * cfg.vocab_size}


def make_batch(r: int, p: int, m: int, vocab: int, seed: int = 0) -> steps_lib.Batch:
  """A full-length minibatch (every completion token valid, prompts left-padded a little)."""
  rng = np.random.default_rng(seed)
  prompt_mask = np.ones((r, p), bool)
  prompt_mask[:, :p // 8] = False
  return steps_lib.Batch(
      prompt=jnp.asarray(rng.integers(0, vocab, (r, p)) * prompt_mask, jnp.int32),
      prompt_mask=jnp.asarray(prompt_mask),
      completion=jnp.asarray(rng.integers(0, vocab, (r, m)), jnp.int32),
      mask=jnp.ones((r, m), bool),
      old_logp=jnp.asarray(-rng.uniform(8, 12, (r, m)), jnp.float32),
      advantages=jnp.asarray(rng.normal(size=r), jnp.float32),
      hard=jnp.asarray(rng.integers(0, 2, r), jnp.float32))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--preset', default='qwen25_0p5b')
  ap.add_argument('--responses', type=int, default=2)
  ap.add_argument('--prompt', type=int, default=64)
  ap.add_argument('--completion', type=int, default=448)
  ap.add_argument('--logp_chunk', type=int, default=256)
  ap.add_argument('--remat', default='none')
  ap.add_argument('--repeats', type=int, default=2)
  ap.add_argument('--out', default=os.path.join(RESULTS, 'train_step.json'))
  args = ap.parse_args()

  peak = roofline.measure(dtypes=('float32',))
  print('roofline:', peak.describe())
  cfg = QwenConfig.preset(args.preset, remat_policy=args.remat)
  config = default_config.get_config()
  config.method, config.grpo.kl_coef = 'ceeh_me', 0.0
  config.minibatch_size = config.micro_batch_size = args.responses
  config.logp_chunk = args.logp_chunk
  config.sampling.max_new_tokens = args.completion
  params = jax.jit(functools.partial(qwen2_lib.init_params, cfg))(jax.random.key(0))
  train, frozen = steps_lib.split_params(params, False)
  del params
  batch = make_batch(args.responses, args.prompt, args.completion, cfg.vocab_size)
  grad_fn = jax.jit(lambda t, b: steps_lib.minibatch_loss(t, frozen, b, 0.6, jnp.int32(1),
                                                          config=config, model_cfg=cfg))
  t0 = time.perf_counter()
  compiled = grad_fn.lower(train, batch).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(train, batch))
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(train, batch))
    times.append(time.perf_counter() - t0)
  best = min(times)
  flops = model_flops(cfg, args.responses, args.prompt, args.completion)
  ideal = flops['total'] / peak.matmul_flops['float32']
  mfu = ideal / best
  rows = [('train step fwd+bwd (s)', best, ideal, best / ideal, mfu)]
  print(f"\n{args.preset}: {args.responses} responses x ({args.prompt} + {args.completion}) "
        f"tokens, fp32, remat {args.remat}, logp chunk {args.logp_chunk}; "
        f"model {flops['total'] / 1e12:.2f} TFLOP (dense {flops['dense'] / 1e12:.2f}, lm_head "
        f"{flops['lm_head'] / 1e12:.2f}, attention {flops['attention'] / 1e12:.3f})")
  print('| what | ours | FLOP-bound at peak | ratio | MFU (roofline fraction) |')
  print('| --- | ---: | ---: | ---: | ---: |')
  for name, ours, ref, ratio, frac in rows:
    print(f'| {name} | {ours:.2f} | {ref:.2f} | {ratio:.2f}x | {frac:.1%} |')
  print(f'goal MFU >= 40%: {"met" if mfu >= 0.4 else "missed"} ({mfu:.1%}); compile {compile_s:.0f} s; '
        f'times {[round(t, 2) for t in times]}')
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump({'preset': args.preset, 'responses': args.responses, 'prompt': args.prompt,
               'completion': args.completion, 'dtype': 'float32', 'remat': args.remat,
               'logp_chunk': args.logp_chunk, 'seconds': best, 'times': times,
               'compile_s': compile_s, 'flops': flops, 'peak_flops': peak.matmul_flops,
               'bandwidth': peak.bandwidth, 'ideal_seconds': ideal, 'mfu': mfu,
               'load_avg': os.getloadavg()}, f, indent=1)


if __name__ == '__main__':
  main()
