"""Every config key with its default (the CEEH recipe). Experiment files override a few.

Experiment configs (`configs/*.py`) start from `get_config()` here and change what they need;
`config_flags.DEFINE_config_file(lock_config=True)` then rejects a misspelled override.
"""
import ml_collections

from ceeh_jax import sharding as sharding_lib


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # One of: grpo, length_penalty, ceeh_me, ceeh_ea, egrc, entra, hapo, thinkprune, dler,
  # laser, laser_d, grpo_lambda, arora_zanette (see README "Methods").
  c.method = 'ceeh_me'
  c.method_hparams = ml_collections.ConfigDict()   # filled from methods.default_hparams(method)

  # Model
  c.model = ml_collections.ConfigDict()
  c.model.preset = 'tiny'          # a QwenConfig preset name, used when hf_dir is empty
  c.model.hf_dir = ''              # HF safetensors directory to start from
  c.model.dtype = 'float32'        # activation dtype for training forward passes
  c.model.param_dtype = 'float32'
  c.model.sample_dtype = 'bfloat16'  # the sampler's view of the params
  # What the backward pass keeps per layer: 'none' (everything), 'full' (layer inputs only),
  # 'save_qkv_proj' / 'save_dot_except_mlp' / 'save_dots' (those bf16 projections too; see
  # models/qwen2.py _REMAT).
  c.model.remat_policy = 'none'
  # Training/prefill attention: 'auto' = Pallas splash on TPU, cuDNN on GPU (bf16), the
  # blocked pure-JAX flash attention elsewhere; or 'blocked' | 'xla' | 'cudnn' | 'splash'.
  c.model.attention = 'auto'
  c.model.decode_chunk = 128
  # Training/scoring forward: True scans one layer program (compiled once: big models);
  # False unrolls the layers over the same stacked params (same values and gradients; ~15%
  # faster train step for the tiny model on CPU, slower to compile). The sampler always
  # unrolls (sampler.py).
  c.model.scan_layers = True
  c.model.lora_rank = 0            # CEEH recipe: 32 (0 = full fine-tune)
  c.model.lora_alpha = 64.0
  c.model.lora_targets = ('q', 'k', 'v', 'o', 'gate', 'up', 'down')
  c.tokenizer_dir = ''             # defaults to model.hf_dir

  # Data
  c.data = ml_collections.ConfigDict()
  c.data.train = 'deepscaler2k'    # JSONL/JSON/Parquet path, `tfds:<name>`, or a benchmark name
  c.data.eval = 'math500'
  # Where `tfds:` sources are prepared; '' = $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  # `tfds:ceeh_math/<benchmark>` is prepared there on first use (python -m
  # ceeh_jax.datasets.prepare does it ahead of time).
  c.data.tfds_data_dir = ''
  c.data.eval_size = 64            # held-out slice used by the periodic eval hook
  c.data.field_map = ml_collections.ConfigDict({'id': 'id', 'problem': 'problem',
                                                'answer': 'answer'})
  c.data.on_error = 'raise'        # 'raise' or 'skip' (counted) for malformed rows
  c.data.max_prompt_tokens = 1024  # prompt budget
  c.data.prompt_overflow = 'reject'  # 'reject' (error naming the row) or 'truncate' (left, counted)
  c.data.instruction = 'Please reason step by step, and put your final answer within \\boxed{}.'
  c.data.think_prefix = True       # end the prompt with "<think>\n" (R1-Distill expects it)

  # Sampling (rollouts)
  c.sampling = ml_collections.ConfigDict()
  c.sampling.num_samples = 12      # G, CEEH recipe
  c.sampling.temperature = 0.6
  c.sampling.top_p = 1.0
  c.sampling.top_k = 0
  c.sampling.max_new_tokens = 20480
  # Decode over per-layer weights (True: fast on CPU, a per-layer copy of the weights in the
  # sample dtype) or the stacked ones (False: no copy); 'auto' = True on CPU only (see
  # sampler.resolve_unroll). Any of the three, also from the command line.
  c.sampling.unroll_layers = ml_collections.FieldReference('auto', field_type=object)
  # Rows (prompts x num_samples) decoded at once; 0 = the whole batch in one call. Bounds the
  # KV cache, rows x (prompt + max_new_tokens) x 2 x layers x kv_heads x head_dim x 2 bytes
  # (0.57 GiB a row for the 1.5B at 21.5k tokens): a multiple of num_samples and of the data
  # axes that divides batch_size x num_samples. See experiments/memory_plans.md.
  c.sampling.rows_per_chunk = 0
  c.sampling.eval_temperature = 0.6
  c.sampling.eval_top_p = 0.95
  c.sampling.eval_num_samples = 1

  # Batching
  c.batch_size = 32                # prompts per rollout batch (B); responses R = B * G
  c.minibatch_size = 96            # responses per optimizer update
  c.micro_batch_size = 8           # responses per forward/backward (gradient accumulation)
  c.old_logp = 'recompute'         # 'recompute' (training forward) or 'sampler'; recompute
                                   # with one update per batch reuses the training forward
  c.logp_chunk = 256               # sequence chunk of the fp32 log-prob/entropy pass

  # Optimizer
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 3e-5
  c.optim.schedule = 'constant'
  c.optim.warmup_steps = 0
  c.optim.min_lr_ratio = 0.1
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0
  c.max_skipped_updates = 10       # stop with a clear error after this many non-finite updates

  # GRPO
  c.grpo = ml_collections.ConfigDict()
  c.grpo.std_normalize = False     # CEEH: mean-only advantages
  c.grpo.eps_low = 0.2
  c.grpo.eps_high = 0.28
  c.grpo.dual_clip = 3.0
  c.grpo.aggregation = 'token-mean'
  c.grpo.kl_coef = 0.001
  c.grpo.kl_kind = 'k3'

  # CEEH (DESIGN.md "CEEH")
  c.ceeh = ml_collections.ConfigDict()
  c.ceeh.reward_correct = 1.0
  c.ceeh.reward_boxed = 0.1
  c.ceeh.reward_none = 0.0
  c.ceeh.length_lambda = 0.1
  c.ceeh.length_clamp = -0.9
  c.ceeh.acc_rate_up = 0.2
  c.ceeh.acc_rate_down = 0.05
  c.ceeh.len_rate_shorter = 0.2
  c.ceeh.len_rate_longer = 0.05
  c.ceeh.compat = False
  c.ceeh.entropy_coef = 0.001
  c.ceeh.entropy_schedule = 'cosine'   # 'cosine' (coef decays) | 'anneal_weight' (5 -> 1) | 'constant'
  c.ceeh.hard_weight = 5.0
  c.ceeh.ea_alpha = 0.4

  # DAPO overlong shaping (usable with any method)
  c.overlong = ml_collections.ConfigDict()
  c.overlong.enabled = False
  c.overlong.max_len = 20480
  c.overlong.cache_len = 4096

  # Grading
  c.grading = ml_collections.ConfigDict()
  c.grading.timeout_s = 5.0
  c.grading.num_workers = 2

  # Mesh: ('data', 'fsdp', 'tensor'); -1 = the remaining devices.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (1, -1, 1)
  c.mesh.rules = sharding_lib.DEFAULT_RULES

  # Loop
  c.total_steps = 500
  c.log_every = 1
  c.eval_every = 50
  c.checkpoint_every = 10
  c.keep_checkpoints = 3
  c.tensorboard = True
  c.progress = True
  return c
