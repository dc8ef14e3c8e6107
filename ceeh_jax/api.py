"""The calls a researcher needs in a notebook: load, encode, logits, generate.

  import ceeh_jax.api as cj
  model = cj.load('/ckpt/DeepSeek-R1-Distill-Qwen-1.5B')   # or 'synthetic:base_policy'
  tokens, mask = cj.encode(model, ['What is 2+2?'])          # int32[B, T], bool[B, T]
  logits = cj.logits(model, tokens, mask)                    # f32[B, T, V]
  out = cj.generate(model, ['What is 2+2?'], num_samples=4, max_new_tokens=256)
  out.texts[0][1], out.token_ids[0][1], out.logps[0][1], out.lengths[0][1]
"""
import dataclasses
from typing import Any, Sequence

from flax import traverse_util
import jax
import numpy as np

from ceeh_jax import hf_io
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import tokenizer as tokenizer_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig
from ceeh_jax.synthetic import paths as synthetic


@dataclasses.dataclass
class Model:
  config: QwenConfig
  params: Any
  tokenizer: Any = None
  mesh: Any = None
  rules: tuple = sharding_lib.DEFAULT_RULES


@dataclasses.dataclass
class Generations:
  """Per prompt, per sample (lists of length B, each of length G).

  `texts` end before the stop token (EOS); `token_ids`, `logps` and `lengths` are the sampled
  tokens, the stop token included when the completion finished.
  """
  texts: list[list[str]]
  token_ids: list[list[list[int]]]
  logps: list[list[np.ndarray]]
  lengths: list[list[int]]


def load(hf_dir: str, *, mesh=None, rules=sharding_lib.DEFAULT_RULES, tokenizer_dir=None,
         dtype=None) -> Model:
  """Loads a HF Qwen2 directory (config, params — onto `mesh` if given — and tokenizer).

  `hf_dir='synthetic:base_policy'` is the shipped tiny policy of the synthetic task.
  """
  hf_dir = synthetic.resolve_model_dir(hf_dir)
  config, params = hf_io.load_hf(hf_dir, mesh=mesh, rules=rules, dtype=dtype)
  try:
    tok = tokenizer_lib.load_tokenizer(tokenizer_dir or hf_dir)
  except (OSError, ValueError):
    tok = None  # weights-only directory: logits() still works
  return Model(config, params, tok, mesh, rules)


def _tokenizer(model: Model):
  if model.tokenizer is None:
    raise ValueError('this model was loaded without a tokenizer; pass tokenizer_dir to load()')
  return model.tokenizer


def encode(model: Model, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(int32[B, T] tokens, bool[B, T] mask) of texts, left-padded to the longest.

  Plain text gets the tokenizer's BOS (R1 adds one); a chat-formatted prompt
  (`tokenizer.build_prompt`) keeps its single BOS. Left padding puts every row's last token
  at position T - 1, where `logits(...)[:, -1]` predicts the next one.
  """
  tok = _tokenizer(model)
  ids = tokenizer_lib.encode_prompts(tok, list(texts))
  width = max(len(row) for row in ids)
  pad = tok.pad_token_id if tok.pad_token_id is not None else 0
  tokens = np.full((len(ids), width), pad, np.int32)
  mask = np.zeros((len(ids), width), bool)
  for i, row in enumerate(ids):
    tokens[i, width - len(row):] = row
    mask[i, width - len(row):] = True
  return tokens, mask


def logits(model: Model, tokens, mask=None):
  """f32[B, T, V] logits for int32[B, T] tokens; `mask` bool[B, T] marks real (left-padded) tokens.

  `tokens` may also be a list of strings: they are encoded as `encode` does (left-padded).

  Returns a jax.Array (rows over the mesh's data axes when the model has a mesh). On a mesh
  over several processes: a collective (every process calls it with the same tokens), and
  each process gets the whole result as a numpy array.
  """
  if len(tokens) and isinstance(tokens[0], str):
    if mask is not None:
      raise ValueError('pass a mask only with token ids; texts get theirs from encode()')
    tokens, mask = encode(model, tokens)
  tokens = np.asarray(tokens, np.int32)
  mask = np.ones(tokens.shape, bool) if mask is None else np.asarray(mask, bool)
  if model.mesh is not None:  # each process puts only its own rows
    rows = sharding_lib.batch_sharding(model.mesh, tokens.shape[0], 2, model.rules)
    tokens, mask = sharding_lib.put_global(tokens, rows), sharding_lib.put_global(mask, rows)
  fn = jax.jit(sharding_lib.traced_under(model.mesh, model.rules, _logits),
               static_argnames=('config',))
  config = model.config.replace(scan_layers=qwen2_lib.is_scanned(model.params))  # either layout
  out = fn(model.params, tokens, mask, config=config)
  return out if out.is_fully_addressable else sharding_lib.to_host(out)


def _logits(params, tokens, mask, *, config):
  out, _ = qwen2_lib.Qwen2(config).apply({'params': params}, tokens,
                                         qwen2_lib.positions_from_mask(mask), mask)
  return out


@jax.jit
def _layer_slices(x):
  return [x[i] for i in range(x.shape[0])]


def _to_sampler_layout(model: Model) -> None:
  """Puts `model.params` in the sampler's layout once and keeps only that (in place).

  On CPU the sampler decodes over per-layer weights (`sampler.resolve_unroll`); each stacked
  leaf is sliced and then released, so the weights are never held in both layouts (the
  per-call conversion was a second full copy: 7 GB for the 1.5B in fp32). Elsewhere the
  stacked params are sampled as they are. `logits` takes either layout.
  """
  if not (qwen2_lib.is_scanned(model.params) and sampler_lib.resolve_unroll('auto')):
    return
  params, model.params = dict(model.params), None
  layers = traverse_util.flatten_dict(params.pop('layers'))
  per_layer = []
  for path in sorted(layers):
    for i, x in enumerate(_layer_slices(layers.pop(path))):  # the stacked leaf goes here
      if i == len(per_layer):
        per_layer.append({})
      per_layer[i][path] = x
  params.update({f'layer_{i}': traverse_util.unflatten_dict(d) for i, d in enumerate(per_layer)})
  model.params = params


def generate(model: Model, prompts: Sequence[str], *, num_samples: int = 1,
             max_new_tokens: int = 256, temperature: float = 0.6, top_p: float = 0.95,
             top_k: int = 0, seed: int = 0, chat: bool = True, think_prefix: bool = True,
             instruction: str | None = None) -> Generations:
  """Samples `num_samples` completions per text prompt (chat-formatted R1 prompts by default).

  Multi-host with a mesh over several processes: a collective; every process calls it with
  the same arguments and gets the same Generations.
  """
  tok = _tokenizer(model)
  if chat:
    kw = {} if instruction is None else {'instruction': instruction}
    texts = [tokenizer_lib.build_prompt(tok, p, think_prefix=think_prefix, **kw) for p in prompts]
  else:
    texts = list(prompts)
  ids = tokenizer_lib.encode_prompts(tok, texts)
  stops = tuple(tokenizer_lib.stop_ids(tok))
  pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
  cfg = sampler_lib.SampleConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_p=top_p, top_k=top_k, num_samples=num_samples,
                                 eos_ids=stops, pad_id=pad)
  _to_sampler_layout(model)
  ro = sampler_lib.generate(model.params, ids, jax.random.key(seed), model_cfg=model.config,
                            cfg=cfg, mesh=model.mesh, rules=model.rules)
  # On a mesh over several processes the rows span hosts: an all-gather, so every process
  # must call generate (with the same prompts and seed) and each gets all the rows.
  tokens, logps, lengths = sharding_lib.to_host((ro.tokens, ro.logps, ro.lengths))
  # The text ends before the stop token (the ids keep it: it was sampled, and its log-prob counts).
  ends_in_stop = np.array([n > 0 and int(t[n - 1]) in stops for t, n in zip(tokens, lengths)])
  decoded = tokenizer_lib.decode_completions(tok, tokens, lengths - ends_in_stop)
  g = num_samples
  rows = lambda seq: [list(seq[i * g:(i + 1) * g]) for i in range(len(prompts))]
  return Generations(texts=rows(decoded),
                     token_ids=rows([list(t[:n]) for t, n in zip(tokens, lengths)]),
                     logps=rows([lp[:n] for lp, n in zip(logps, lengths)]),
                     lengths=rows([int(n) for n in lengths]))
