r"""The embedded default: CEEH on the synthetic chain-arithmetic task, on a laptop CPU.

  python -m ceeh_jax.main                      # this config, workdir runs/tiny

Starts from the shipped base policy (`ceeh_jax/synthetic/base_policy`, a 0.16M-parameter Qwen2
SFT-trained on verbose traces by `python -m ceeh_jax.synthetic.sft`), trains CEEH-ME for 60
steps on 128 generated problems (half easy: 1-2 steps, half hard: 4-6 steps), and prints ACC /
LEN / entropy on 256 held-out questions x 4 samples, easy vs hard, against the base policy.

Expected (measured: README "What the default job does"): easy answers about a quarter shorter
at the base's easy accuracy (within 0.01), hard answers shorter too with hard accuracy within
its noise; entropy falls on both splits.

Two values differ from the paper's 1.5B/7B recipe (configs/r1_1p5b.py), for this model and task:
  * lr 5e-5 (recipe 3e-5 with LoRA): at 2e-4 one Adam step moved every weight by 2e-4 and
    correct answers lost log-probability (experiments/tiny_compression/README.md);
  * λ 1.0 (recipe 0.1): λ scales the relative saving (len_x − L)/len_x, and answers here vary
    over tens of tokens, not thousands: at 0.1 an all-correct easy group (lengths 35..71 around
    len_x 35) got advantages in [−0.07, +0.04], next to +0.76 for a lone correct answer on a
    hard question; at 1.0, [−0.57, +0.34].
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
  # questions = 8 batches an epoch, so 60 steps see each question ~7 times: CEEH's length
  # reward and HAPO's history need a question's earlier results (with 2,000 questions no
  # question recurred within 30 steps and the length reward never fired). 256 held-out
  # questions x 4 samples put the easy accuracy's standard error near 0.006.
  c.data.train = 'synthetic:train:128'
  c.data.eval = 'synthetic:eval:256'
  c.data.eval_size = 256
  c.data.instruction = ''
  c.data.max_prompt_tokens = 64

  # Sampling
  c.sampling.num_samples = 8
  c.sampling.temperature = 0.6
  c.sampling.top_p = 1.0
  c.sampling.max_new_tokens = 160
  c.sampling.eval_temperature = 0.6
  c.sampling.eval_top_p = 1.0
  c.sampling.eval_num_samples = 4

  # Batching: 16 prompts x 8 samples = 128 responses, 2 updates of 64, each in 4 micro-batches
  # of 16 (on CPU a 16-row micro-batch's activations stay in cache: the 64-row train step runs
  # in 0.66-0.84x the time of one 64-row pass, the same gradients).
  c.batch_size = 16
  c.minibatch_size = 64
  c.micro_batch_size = 16
  c.logp_chunk = 64

  # Optimizer (full fine-tune of the tiny model): see the docstring for why 5e-5.
  c.optim.lr = 5e-5
  c.optim.warmup_steps = 5
  c.optim.grad_clip = 1.0

  # GRPO / CEEH
  c.grpo.kl_coef = 0.0
  c.ceeh.entropy_coef = 0.001
  c.ceeh.length_lambda = 1.0   # the paper's 0.1 is for 20k-token answers: see the docstring

  # Mesh: one CPU device.
  c.mesh.shape = (1, 1, 1)

  # Loop
  c.total_steps = 60
  c.eval_every = 30
  c.checkpoint_every = 10
  c.grading.num_workers = 2
  c.grading.timeout_s = 5.0
  return c
