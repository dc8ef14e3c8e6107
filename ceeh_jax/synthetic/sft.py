r"""Builds the synthetic task's base policy: a tiny Qwen2 fine-tuned on verbose traces.

  python -m ceeh_jax.synthetic.sft --out=ceeh_jax/synthetic/base_policy

writes a HF directory (config.json, model.safetensors, tokenizer files, sft_metrics.json)
that `configs/tiny.py` starts RL from. Hard problems' traces carry an error rate, so the base
policy is, like R1-Distill models, accurate on easy questions, weaker on hard ones and long
everywhere.
"""
import functools
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ceeh_jax import hf_io
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import tokenizer as tokenizer_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig
from ceeh_jax.synthetic import task as task_lib
from ceeh_jax.synthetic import tokenizer as syn_tok

BASE_POLICY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'base_policy')
THINK = '<think>\n'


def model_config() -> QwenConfig:
  return QwenConfig(vocab_size=128, num_layers=3, embed_dim=64, mlp_dim=192, num_heads=4,
                    num_kv_heads=2, head_dim=16, rope_theta=10000.0, tie_embeddings=True,
                    max_position_embeddings=512, decode_chunk=64)


def sft_examples(tok, rows, seed, hard_error_rate):
  """(prompt ids, completion ids incl. EOS) pairs; completions are verbose traces."""
  prompts = tokenizer_lib.encode_prompts(
      tok, [tokenizer_lib.build_prompt(tok, r['problem'], instruction='') for r in rows])
  traces = task_lib.sft_traces(rows, seed, hard_error_rate=hard_error_rate)
  completions = tok([task_lib.completion(t) for t in traces], add_special_tokens=False)['input_ids']
  return [(p, list(c) + [tok.eos_token_id]) for p, c in zip(prompts, completions)]


def pack(pairs, length, pad):
  """int32[N, length] tokens and f32 loss weights (1 on completion targets)."""
  toks = np.full((len(pairs), length), pad, np.int32)
  w = np.zeros((len(pairs), length), np.float32)
  for i, (p, c) in enumerate(pairs):
    seq = (p + c)[:length]
    toks[i, :len(seq)] = seq
    w[i, len(p) - 1:len(seq) - 1] = 1.0   # position t predicts t+1
  return toks, w


@functools.partial(jax.jit, static_argnames=('cfg', 'opt'), donate_argnums=(0, 1))
def _step(params, opt_state, toks, w, *, cfg, opt):
  def loss_fn(p):
    logits, _ = qwen2_lib.Qwen2(cfg).apply({'params': p}, toks,
                                           jnp.broadcast_to(jnp.arange(toks.shape[1]), toks.shape))
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    nll = -jnp.take_along_axis(logp, toks[:, 1:, None], -1)[..., 0]
    return (nll * w[:, :-1]).sum() / w.sum()
  loss, g = jax.value_and_grad(loss_fn)(params)
  upd, opt_state = opt.update(g, opt_state, params)
  return optax.apply_updates(params, upd), opt_state, loss


def evaluate_policy(params, cfg, tok, rows, *, max_new_tokens=256, seed=0, temperature=0.6):
  """(acc, mean length) on easy and hard rows with the project's sampler and grader."""
  from ceeh_jax import grading  # pylint: disable=g-import-not-at-top
  prompts = tokenizer_lib.encode_prompts(
      tok, [tokenizer_lib.build_prompt(tok, r['problem'], instruction='') for r in rows])
  sc = sampler_lib.SampleConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=1.0, eos_ids=(tok.eos_token_id,), pad_id=tok.pad_token_id)
  ro = sampler_lib.generate(params, prompts, jax.random.key(seed), model_cfg=cfg, cfg=sc)
  tokens, lengths = jax.device_get((ro.tokens, ro.lengths))
  texts = [THINK + t for t in tokenizer_lib.decode_completions(tok, tokens, lengths)]
  grades = [grading.grade_in_process(t, r['answer']) for t, r in zip(texts, rows)]
  out = {}
  for name, want in (('easy', False), ('hard', True)):
    idx = [i for i, r in enumerate(rows) if r['meta']['hard'] == want]
    out[name] = {'acc': float(np.mean([grades[i].correct for i in idx])),
                 'len': float(np.mean([lengths[i] for i in idx]))}
  return out


def train_base_policy(out_dir, *, steps=2000, batch=32, lr=3e-3, seed=0, hard_error_rate=0.35,
                      log_every=100, init_dir=None):
  t0 = time.time()
  tok_dir = syn_tok.ensure_tokenizer(tempfile.mkdtemp(prefix='ceeh_tok_'))
  tok = tokenizer_lib.load_tokenizer(tok_dir)
  cfg = model_config()
  rows = task_lib.make_dataset(20000, seed=seed + 1000)
  print(f'sft: building {len(rows)} traces', flush=True)
  rng = np.random.default_rng(seed)
  pairs = sft_examples(tok, rows, seed, hard_error_rate)
  lengths = np.array([len(p) + len(c) for p, c in pairs])
  if init_dir:  # continue an earlier SFT run
    _, params = hf_io.load_hf(init_dir)
    params = jax.tree.map(np.asarray, params)
    rng = np.random.default_rng(seed + 1)
  else:
    params = qwen2_lib.init_params(cfg, jax.random.key(seed))
  sched = optax.warmup_cosine_decay_schedule(0.0, lr, 100, steps, lr * 0.05)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.01))
  opt_state = opt.init(params)
  for i in range(steps):
    idx = rng.integers(0, len(pairs), batch)
    # Pad each batch to its own length, rounded up to 32 (a handful of compiled shapes).
    length = int(-(-lengths[idx].max() // 32) * 32)
    toks, w = pack([pairs[i] for i in idx], length, tok.pad_token_id)
    params, opt_state, loss = _step(params, opt_state, toks, w, cfg=cfg, opt=opt)
    if (i + 1) % log_every == 0:
      print(f'sft step {i + 1}/{steps} loss {float(loss):.4f} ({time.time() - t0:.0f}s)', flush=True)
  heldout = task_lib.make_dataset(256, seed=seed + 7)
  result = evaluate_policy(params, cfg, tok, heldout)
  hf_io.save_hf(params, cfg, out_dir, tokenizer_dir=tok_dir)
  result.update(steps=steps, batch=batch, lr=lr, final_loss=float(loss),
                hard_error_rate=hard_error_rate, seconds=time.time() - t0)
  with open(os.path.join(out_dir, 'sft_metrics.json'), 'w') as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result, indent=1))
  return result


flags.DEFINE_string('out', BASE_POLICY_DIR, 'Output HF directory.')
flags.DEFINE_integer('steps', 2000, 'SFT steps.')
flags.DEFINE_string('init', None, 'Continue from this HF directory (an earlier SFT output).')
flags.DEFINE_float('lr', 3e-3, 'Peak learning rate.')


def main(argv):
  del argv
  train_base_policy(flags.FLAGS.out, steps=flags.FLAGS.steps, init_dir=flags.FLAGS.init,
                    lr=flags.FLAGS.lr)


if __name__ == '__main__':
  app.run(main)
