"""Qwen2 / Qwen2.5 architecture presets and the HF `config.json` bridge.

Experiment configs name a preset (`model.preset = 'r1_distill_1p5b'`); the numbers live
here, next to the model, and match the HF `config.json` of each checkpoint.
"""
import dataclasses
import json
import os
from typing import Any

# See qwen2._REMAT: 'full' keeps only each layer's input; save_* keep named bf16 projections.
REMAT_POLICIES = ('none', 'full', 'save_qkv_proj', 'save_dot_except_mlp', 'save_dots', 'dots',
                   'dots_no_batch')
ATTENTION = ('auto', 'blocked', 'xla', 'cudnn', 'splash')  # see models/attention.py


@dataclasses.dataclass(frozen=True)
class QwenConfig:
  """Architecture of a Qwen2-family decoder (field names follow the shape legend)."""
  vocab_size: int          # V
  num_layers: int          # L
  embed_dim: int           # D
  mlp_dim: int             # F
  num_heads: int           # N
  num_kv_heads: int        # K
  head_dim: int            # H
  rope_theta: float = 1_000_000.0
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = False
  max_position_embeddings: int = 32768
  # Numerics and memory.
  dtype: str = 'float32'          # activation dtype (the sampler uses a bf16 view)
  param_dtype: str = 'float32'
  remat_policy: str = 'none'      # one of REMAT_POLICIES
  decode_chunk: int = 128         # cache chunk the decode attention walks (live part only)
  attention: str = 'auto'         # training/prefill attention kernel, one of ATTENTION
  # True: one nn.scan over the layers, params stacked under 'layers' (training: one layer's
  # program, compiled once). False: one module per layer ('layer_0', ...; see
  # `qwen2.unstack_layers`): the sampler decodes this way, since a scanned step slices every
  # weight out of the stack, which XLA:CPU (and GPU without dynamic-slice fusion) copies.
  scan_layers: bool = True
  # LoRA: rank 0 disables adapters; targets name projections ('q','k','v','o','gate','up','down').
  lora_rank: int = 0
  lora_alpha: float = 32.0
  lora_targets: tuple[str, ...] = ('q', 'k', 'v', 'o', 'gate', 'up', 'down')

  def __post_init__(self):
    for name in ('vocab_size', 'num_layers', 'embed_dim', 'mlp_dim', 'num_heads',
                 'num_kv_heads', 'head_dim', 'decode_chunk'):
      if getattr(self, name) <= 0:
        raise ValueError(f'QwenConfig.{name} must be positive, got {getattr(self, name)}')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f'num_heads ({self.num_heads}) must be a multiple of num_kv_heads '
                       f'({self.num_kv_heads}) for grouped-query attention')
    if self.head_dim % 2:
      raise ValueError(f'head_dim must be even for RoPE, got {self.head_dim}')
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f'remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}')
    if self.attention not in ATTENTION:
      raise ValueError(f'attention must be one of {ATTENTION}, got {self.attention!r}')
    if self.lora_rank < 0:
      raise ValueError(f'lora_rank must be >= 0, got {self.lora_rank}')
    bad = set(self.lora_targets) - {'q', 'k', 'v', 'o', 'gate', 'up', 'down'}
    if bad:
      raise ValueError(f'unknown lora_targets {sorted(bad)}')

  def replace(self, **kw) -> 'QwenConfig':
    return dataclasses.replace(self, **kw)

  @property
  def num_params(self) -> int:
    """Parameter count without LoRA adapters (matches HF `num_parameters()`)."""
    d, f, n, k, h = self.embed_dim, self.mlp_dim, self.num_heads, self.num_kv_heads, self.head_dim
    attn = d * n * h + n * h + 2 * (d * k * h + k * h) + n * h * d
    layer = attn + 3 * d * f + 2 * d
    embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return embed + self.num_layers * layer + d

  # ---- Presets (numbers from each checkpoint's HF config.json) ----
  @classmethod
  def qwen25_0p5b(cls, **kw):
    return cls(vocab_size=151936, num_layers=24, embed_dim=896, mlp_dim=4864, num_heads=14,
               num_kv_heads=2, head_dim=64, rope_theta=1e6, tie_embeddings=True,
               max_position_embeddings=32768, **kw)

  @classmethod
  def qwen25_1p5b(cls, **kw):
    return cls(vocab_size=151936, num_layers=28, embed_dim=1536, mlp_dim=8960, num_heads=12,
               num_kv_heads=2, head_dim=128, rope_theta=1e6, tie_embeddings=True,
               max_position_embeddings=131072, **kw)

  @classmethod
  def qwen25_7b(cls, **kw):
    return cls(vocab_size=152064, num_layers=28, embed_dim=3584, mlp_dim=18944, num_heads=28,
               num_kv_heads=4, head_dim=128, rope_theta=1e6, tie_embeddings=False,
               max_position_embeddings=131072, **kw)

  @classmethod
  def qwen25_math_1p5b(cls, **kw):
    return cls(vocab_size=151936, num_layers=28, embed_dim=1536, mlp_dim=8960, num_heads=12,
               num_kv_heads=2, head_dim=128, rope_theta=10000.0, tie_embeddings=True,
               max_position_embeddings=4096, **kw)

  @classmethod
  def qwen25_math_7b(cls, **kw):
    return cls(vocab_size=152064, num_layers=28, embed_dim=3584, mlp_dim=18944, num_heads=28,
               num_kv_heads=4, head_dim=128, rope_theta=10000.0, tie_embeddings=False,
               max_position_embeddings=4096, **kw)

  @classmethod
  def r1_distill_1p5b(cls, **kw):
    return cls(vocab_size=151936, num_layers=28, embed_dim=1536, mlp_dim=8960, num_heads=12,
               num_kv_heads=2, head_dim=128, rope_theta=10000.0, tie_embeddings=False,
               max_position_embeddings=131072, **kw)

  @classmethod
  def r1_distill_7b(cls, **kw):
    return cls(vocab_size=152064, num_layers=28, embed_dim=3584, mlp_dim=18944, num_heads=28,
               num_kv_heads=4, head_dim=128, rope_theta=10000.0, tie_embeddings=False,
               max_position_embeddings=131072, **kw)

  @classmethod
  def tiny(cls, **kw):
    """Prime-sized dims so a swapped axis fails loudly; GQA ratio 3."""
    base = dict(vocab_size=257, num_layers=3, embed_dim=48, mlp_dim=67, num_heads=6,
                num_kv_heads=2, head_dim=8, rope_theta=10000.0, tie_embeddings=False,
                max_position_embeddings=2048)
    base.update(kw)
    return cls(**base)

  @classmethod
  def preset(cls, name: str, **kw) -> 'QwenConfig':
    fn = PRESETS.get(name)
    if fn is None:
      raise ValueError(f'unknown model preset {name!r}; choose from {sorted(PRESETS)}')
    return fn(**kw)

  # ---- HF bridge ----
  @classmethod
  def from_hf(cls, hf: 'dict[str, Any] | str | os.PathLike', **kw) -> 'QwenConfig':
    """Builds a config from a HF Qwen2 `config.json` dict, file or model directory."""
    if not isinstance(hf, dict):
      path = os.fspath(hf)
      if os.path.isdir(path):
        path = os.path.join(path, 'config.json')
      if not os.path.exists(path):
        raise FileNotFoundError(f'no HF config.json at {path}')
      with open(path) as f:
        hf = json.load(f)
    model_type = hf.get('model_type', 'qwen2')
    if model_type not in ('qwen2',):
      raise ValueError(f'expected a Qwen2 config (model_type "qwen2"), got {model_type!r}')
    n = hf['num_attention_heads']
    head_dim = hf.get('head_dim') or hf['hidden_size'] // n
    rope_theta = hf.get('rope_theta')
    if rope_theta is None:  # transformers>=5 nests it under rope_parameters
      rope_theta = (hf.get('rope_parameters') or {}).get('rope_theta', 10000.0)
    return cls(vocab_size=hf['vocab_size'], num_layers=hf['num_hidden_layers'],
               embed_dim=hf['hidden_size'], mlp_dim=hf['intermediate_size'], num_heads=n,
               num_kv_heads=hf.get('num_key_value_heads', n), head_dim=head_dim,
               rope_theta=float(rope_theta), rms_norm_eps=hf.get('rms_norm_eps', 1e-6),
               tie_embeddings=bool(hf.get('tie_word_embeddings', False)),
               max_position_embeddings=hf.get('max_position_embeddings', 32768), **kw)

  def to_hf(self, **extra) -> dict[str, Any]:
    """A HF Qwen2 `config.json` dict for this architecture."""
    cfg = dict(architectures=['Qwen2ForCausalLM'], model_type='qwen2',
               vocab_size=self.vocab_size, hidden_size=self.embed_dim,
               intermediate_size=self.mlp_dim, num_hidden_layers=self.num_layers,
               num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
               # Written always: HF Qwen2 reads `head_dim` when present and only falls back
               # to hidden_size // num_attention_heads without it.
               head_dim=self.head_dim, hidden_act='silu', rope_theta=self.rope_theta,
               rope_parameters={'rope_type': 'default', 'rope_theta': self.rope_theta}, rms_norm_eps=self.rms_norm_eps,
               tie_word_embeddings=self.tie_embeddings,
               max_position_embeddings=self.max_position_embeddings,
               use_sliding_window=False, attention_dropout=0.0,
               torch_dtype='float32' if self.param_dtype == 'float32' else 'bfloat16')
    cfg.update(extra)
    return cfg

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0


PRESETS = {
    'qwen25_0p5b': QwenConfig.qwen25_0p5b,
    'qwen25_1p5b': QwenConfig.qwen25_1p5b,
    'qwen25_7b': QwenConfig.qwen25_7b,
    'qwen25_math_1p5b': QwenConfig.qwen25_math_1p5b,
    'qwen25_math_7b': QwenConfig.qwen25_math_7b,
    'r1_distill_1p5b': QwenConfig.r1_distill_1p5b,
    'r1_distill_7b': QwenConfig.r1_distill_7b,
    'tiny': QwenConfig.tiny,
}

