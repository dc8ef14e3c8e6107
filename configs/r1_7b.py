r"""CEEH on DeepSeek-R1-Distill-Qwen-7B.

Launch on an 8x H100 80GB box, a TPU v5p-8 (4 chips x 95 GiB) or a TPU v4-16 (8 chips x
32 GiB, two hosts), weights on local disk:

  python -m ceeh_jax.main --config=configs/r1_7b.py --workdir=runs/r1_7b_ceeh \
      --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-7B \
      --config.data.train=/data/deepscaler.jsonl

Memory (experiments/memory_plans.md, XLA:CPU, +-30%): LoRA r32 at 20,480 response tokens,
32 prompts x 12 samples peaks at 26.0 GiB a device on 8 devices (8x H100: 33%; v4-16: 81% of
32 GiB) and 47.9 GiB on a v5p-8's 4 devices (50%), with remat 'full', micro-batches of one
21.5k-token row per device, FSDP over all devices and rollouts decoded 48 rows at a time
(`sampling.rows_per_chunk`; the KV cache is 0.14 GiB a row a device on 8 devices, all 384
rows at once need 64.8 GiB a device: only an 8x H100 holds that). A TPU v5e-8 (16 GiB) or
v4-8 (4 x 32 GiB) does not fit this model at these lengths: the plan's 8- and 4-device train
steps alone need 26.0 and 47.9 GiB a device.

The full fine-tune (`--config.model.lora_rank=0`, ~16 bytes a parameter of master weights and
Adam moments) peaks at 42.1 GiB on 8 devices (8x H100: yes; v4-16: no, 132%) and 81.3 GiB on
a v5p-8 (86%).

Expect (paper): similar accuracy to the base model with 30-40% fewer tokens on AIME/MATH-500.
"""
from ceeh_jax import default_config


def get_config(arg=None):
  del arg
  c = default_config.get_config()
  c.method = 'ceeh_me'
  # Model
  c.model.preset = 'r1_distill_7b'
  c.model.dtype = 'bfloat16'
  c.model.sample_dtype = 'bfloat16'
  c.model.remat_policy = 'full'
  c.model.decode_chunk = 512
  c.model.lora_rank = 32
  c.model.lora_alpha = 64.0
  # Data
  c.data.train = 'deepscaler2k'
  c.data.eval = 'math500'
  c.data.eval_size = 128
  # Sampling
  c.sampling.num_samples = 12
  c.sampling.temperature = 0.6
  c.sampling.top_p = 1.0
  c.sampling.max_new_tokens = 20480
  c.sampling.rows_per_chunk = 48       # rollout decoded 48 rows at a time: bounds the KV cache
  # Batching
  c.batch_size = 32
  c.minibatch_size = 96
  c.micro_batch_size = 8               # one 21.5k-token row per device on 8 devices
  # Optimizer
  c.optim.lr = 3e-5
  # The paper's values for this model. Tuning on a small model? The tiny experiment
  # (experiments/tiny_compression/README.md) found lr 2e-4 too high for a 0.16M-parameter
  # policy (correct answers lost log-probability after one update): use 2e-5..5e-5 there.
  # CEEH: the recipe's λ 0.1 (default_config) is for 20k-token answers; on short answers (the
  # tiny task's 30-90 tokens) λ 0.1 barely moves lengths and 1.0 compresses.
  # Mesh: FSDP over all devices (tensor parallel (1, 4, 2) keeps 2 rows' residual stream per
  # device: 35.6 vs 26.8 GiB train step on 8 devices, see experiments/memory_plans.md).
  c.mesh.shape = (1, -1, 1)
  # Loop
  c.total_steps = 500
  c.eval_every = 50
  c.checkpoint_every = 10
  c.grading.num_workers = 8
  return c
