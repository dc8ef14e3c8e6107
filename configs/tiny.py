r"""The embedded default: CEEH on the synthetic chain-arithmetic task, on a laptop CPU.

  python -m ceeh_jax.main                      # this config, workdir runs/tiny

Starts from the shipped base policy (`ceeh_jax/synthetic/base_policy`, a 0.16M-parameter Qwen2
SFT-trained on verbose traces by `python -m ceeh_jax.synthetic.sft`), trains CEEH-ME for a few
dozen steps on 128 generated problems (half easy: 1-2 steps, half hard: 4-6 steps), and
prints ACC / LEN / entropy on easy vs hard questions against the base policy.

What to expect at this scale is measured, not promised: see the README's table and
experiments/tiny_compression/ (CEEH's length reward is small next to correctness here).
"""
from ceeh_jax import default_config


def get_config(arg=None):
  del arg
  c = default_config.get_config()
  c.method = 'ceeh_me'
  c.seed = 0

  # Model: the shipped synthetic base policy (HF directory with its tokenizer).
  c.model.hf_dir = 'synthetic:base_policy'
  c.model.dtype = 'float32'
  c.model.sample_dtype = 'float32'
  c.model.decode_chunk = 64
  c.model.scan_layers = False  # 3 layers: unrolled trains faster on CPU (default_config)

  # Data: generated on first use into <workdir>/data (deterministic from the seed). 128
  # questions = 8 batches an epoch, so 30 steps see each question ~4 times: CEEH's length
  # reward and HAPO's history need a question's earlier results (with 2,000 questions no
  # question recurred within 30 steps and the length reward never fired).
  c.data.train = 'synthetic:train:128'
  c.data.eval = 'synthetic:eval:128'
  c.data.eval_size = 128
  c.data.instruction = ''
  c.data.max_prompt_tokens = 64

  # Sampling
  c.sampling.num_samples = 8
  c.sampling.temperature = 0.6
  c.sampling.top_p = 1.0
  c.sampling.max_new_tokens = 160
  c.sampling.eval_temperature = 0.6
  c.sampling.eval_top_p = 1.0

  # Batching: 16 prompts x 8 samples = 128 responses, 2 updates of 64, each in 4 micro-batches
  # of 16 (on CPU a 16-row micro-batch's activations stay in cache: the 64-row train step runs
  # in 0.66-0.84x the time of one 64-row pass, the same gradients).
  c.batch_size = 16
  c.minibatch_size = 64
  c.micro_batch_size = 16
  c.logp_chunk = 64

  # Optimizer (full fine-tune of the tiny model)
  c.optim.lr = 2e-4
  c.optim.grad_clip = 1.0

  # GRPO / CEEH
  c.grpo.kl_coef = 0.0
  c.ceeh.entropy_coef = 0.001
  c.ceeh.length_lambda = 0.1

  # Mesh: one CPU device.
  c.mesh.shape = (1, 1, 1)

  # Loop
  c.total_steps = 30
  c.eval_every = 15
  c.checkpoint_every = 10
  c.grading.num_workers = 2
  c.grading.timeout_s = 5.0
  return c
