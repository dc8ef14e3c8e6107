r"""CEEH on DeepSeek-R1-Distill-Qwen-1.5B (the paper's main recipe).

Launch on a TPU v5e-8 or v4-8 VM, or an 8x H100 80GB box, weights already on local disk:

  python -m ceeh_jax.main --config=configs/r1_1p5b.py --workdir=runs/r1_1p5b_ceeh \
      --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B \
      --config.data.train=/data/deepscaler.jsonl

Memory (experiments/memory_plans.md: this config compiled for 8 and 4 devices, XLA:CPU,
+-30%): at the paper's 20,480 response tokens, 32 prompts x 12 samples and LoRA r32 the peak
is 11.1 GiB a device on 8 devices (v5e-8: 70% of 16 GiB; 8x H100: 14%) and 20.6 GiB on a
v4-8 (4 devices, one per chip: 64% of 32 GiB). It fits because the backward keeps only each
layer's input (`model.remat_policy='full'`), a micro-batch is one 21.5k-token row per device
(`micro_batch_size=8`; two rows a device on a v4-8), and a rollout decodes 96 rows at a time
(`sampling.rows_per_chunk`: all 384 rows at once need 27.6 GiB of KV cache a device, which
only an 8x H100 holds: `--config.sampling.rows_per_chunk=0` there).

Variants: `--config.method=ceeh_ea` (entropy-as-advantage), `--config.model.lora_rank=0`
(full fine-tune; use `--config.optim.lr=1e-6`; peak 14.0 GiB on 8 devices, 26.9 GiB on a
v4-8: fits all three, v5e-8 at 88%), `--config.mesh.shape=(1,-1,1)` (pure FSDP over every device, the
default, on any of them).

Expect (paper, AIME24/AIME25/MATH-500 at 16k-20k tokens): accuracy within ~1 point of the base
model with 30-50% fewer response tokens after ~500 steps; entropy stays above the
length-penalty baseline, mostly on hard questions. On v5e-8 one step (32 prompts x 12
samples, up to 20,480 tokens) is dominated by rollout time.
"""
from ceeh_jax import default_config


def get_config(arg=None):
  del arg
  c = default_config.get_config()
  c.method = 'ceeh_me'

  # Model
  c.model.preset = 'r1_distill_1p5b'   # used only for shapes when hf_dir is empty
  c.model.hf_dir = ''                  # set on the command line (no hub downloads)
  c.model.dtype = 'bfloat16'
  c.model.param_dtype = 'float32'
  c.model.sample_dtype = 'bfloat16'
  c.model.remat_policy = 'full'        # keep only each layer's input (memory plan)
  c.model.decode_chunk = 512
  c.model.lora_rank = 32
  c.model.lora_alpha = 64.0

  # Data
  c.data.train = 'deepscaler2k'        # vendored 2k-problem DeepScaleR sample; use the full set
  c.data.eval = 'math500'
  c.data.eval_size = 128
  c.data.max_prompt_tokens = 1024

  # Sampling
  c.sampling.num_samples = 12
  c.sampling.temperature = 0.6
  c.sampling.top_p = 1.0
  c.sampling.max_new_tokens = 20480
  c.sampling.rows_per_chunk = 96       # rollout decoded 96 rows at a time: bounds the KV cache

  # Batching: 32 prompts x 12 = 384 responses, 4 updates of 96, each in micro-batches of 8
  # (one 21.5k-token row per device on 8 devices, two on 4).
  c.batch_size = 32
  c.minibatch_size = 96
  c.micro_batch_size = 8

  # Optimizer
  c.optim.lr = 3e-5                    # LoRA; use 1e-6 for a full fine-tune
  # The paper's values for this model. Tuning on a small model? The tiny experiment
  # (experiments/tiny_compression/README.md) found lr 2e-4 too high for a 0.16M-parameter
  # policy (correct answers lost log-probability after one update): use 2e-5..5e-5 there.
  c.optim.grad_clip = 1.0

  # GRPO / CEEH (recipe defaults, see default_config.py)
  c.grpo.eps_low, c.grpo.eps_high = 0.2, 0.28
  c.grpo.kl_coef, c.grpo.kl_kind = 0.001, 'k3'
  c.ceeh.entropy_coef = 0.001
  c.ceeh.length_lambda = 0.1  # paper: 20k-token answers; on short answers (the tiny task's
  # 30-90 tokens) λ 0.1 barely moves lengths and 1.0 compresses (experiments/tiny_compression)

  # Mesh: 8 devices, FSDP over all of them.
  c.mesh.shape = (1, -1, 1)

  # Loop
  c.total_steps = 500
  c.eval_every = 50
  c.checkpoint_every = 10
  c.grading.num_workers = 8
  return c
