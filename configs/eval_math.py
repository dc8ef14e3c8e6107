r"""Paper evaluation of R1-Distill-Qwen-1.5B (or a CEEH run on it) on AIME24/25, AMC23, MATH500.

Settings as the papers report them: temperature 0.6, top-p 0.95, k = 16 samples per problem
on AIME24 / AIME25 / AMC23 and k = 4 on MATH500, up to 20,480 new tokens (config.sampling),
DeepSeek's prompt (`data.instruction`, `<think>\n` prefix).

  # 1. the base model (its results.json is the reference for L-Acc / NAG):
  python -m ceeh_jax.main --config=configs/eval_math.py --workdir=runs/eval_r1_base \
      --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B
  # 2. a trained run (latest checkpoint of its workdir; LoRA is merged when lora_rank > 0):
  python -m ceeh_jax.main --config=configs/eval_math.py --workdir=runs/eval_r1_ceeh \
      --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B \
      --config.model.lora_rank=32 \
      --config.eval.checkpoint_workdir=runs/r1 \
      --config.eval.base_results=runs/eval_r1_base/results.json
  # 3. the paper table:
  python -m ceeh_jax.compare runs/eval_r1_base runs/eval_r1_ceeh --base=runs/eval_r1_base

`config.model` must describe the checkpoint's architecture as the training config did (same
hf_dir, lora_rank/alpha/targets). Set --config.mesh.shape for the machine (default: every
device on the fsdp axis; eval.batch_size must divide by data x fsdp).
"""
import ml_collections

from ceeh_jax import default_config


def get_config(arg=None):
  del arg
  c = default_config.get_config()
  c.mode = 'eval'
  c.model.hf_dir = ''             # --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B
  c.model.sample_dtype = 'bfloat16'
  c.sampling.max_new_tokens = 20480
  c.grading.num_workers = 8
  c.grading.timeout_s = 5.0
  c.eval = ml_collections.ConfigDict()
  c.eval.checkpoint_workdir = ''
  c.eval.benchmarks = ('aime24', 'aime25', 'amc23', 'math500')
  c.eval.num_samples = 0          # 0 = paper defaults: 16 for aime/amc, 4 for math500
  c.eval.temperature = 0.6
  c.eval.top_p = 0.95
  c.eval.top_k = 0
  c.eval.max_new_tokens = 0       # 0 = config.sampling.max_new_tokens (20480)
  c.eval.batch_size = 32          # prompts per sampler call (x k rows)
  c.eval.limit = 0
  c.eval.base_results = ''
  return c
