r"""TRL's GRPOTrainer (PyTorch, CPU) on the same tiny model and prompts: the RL-step reference.

Run by `bench_rl_step.py` with a separate venv's python (torch CPU + trl; never this repo's
environment):
  .venv-trl/bin/python experiments/bench/trl_worker.py --model_dir=DIR --prompts=P.json \
      --out=OUT.json

One GRPO step = 8 prompts x 8 completions of exactly 128 new tokens (min_new_tokens forces the
full length, as our side disables EOS), beta = 0 (no reference model), one optimizer update of
all 64 completions, no gradient checkpointing (our tiny config does not remat either). Reward:
the trivial one both sides share, 1 if the completion's token count is even else 0 (always
even here, so the advantages are 0 but every step still runs the full forward/backward).
Prints nothing but a JSON line; writes the per-step wall times and generation times.
"""
import argparse
import json
import os
import tempfile
import time

import datasets
import torch
import transformers
import trl


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--model_dir', required=True)
  ap.add_argument('--prompts', required=True, help='JSON list of prompt strings')
  ap.add_argument('--out', required=True)
  ap.add_argument('--steps', type=int, default=4, help='measured steps (after 1 warm-up)')
  ap.add_argument('--num_generations', type=int, default=8)
  ap.add_argument('--new_tokens', type=int, default=128)
  ap.add_argument('--temperature', type=float, default=0.6)
  ap.add_argument('--threads', type=int, default=2)
  ap.add_argument('--workdir', default=os.path.join(tempfile.gettempdir(), 'trl_bench_out'))
  args = ap.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)

  with open(args.prompts) as f:
    prompts = json.load(f)
  total = args.steps + 1
  data = datasets.Dataset.from_dict({'prompt': prompts * total})
  tok = transformers.AutoTokenizer.from_pretrained(args.model_dir)
  model = transformers.AutoModelForCausalLM.from_pretrained(args.model_dir,
                                                            dtype=torch.float32)

  def reward(completions, completion_ids=None, **_):
    return [float(len(ids) % 2 == 0) for ids in completion_ids]

  g = args.num_generations
  cfg = trl.GRPOConfig(
      output_dir=args.workdir, per_device_train_batch_size=len(prompts) * g,
      gradient_accumulation_steps=1, num_generations=g, max_completion_length=args.new_tokens,
      beta=0.0, num_iterations=1, temperature=args.temperature, top_p=1.0, learning_rate=2e-4,
      max_steps=total, logging_steps=1, report_to='none', save_strategy='no', use_cpu=True,
      bf16=False, gradient_checkpointing=False, shuffle_dataset=False,
      generation_kwargs={'min_new_tokens': args.new_tokens}, disable_dropout=True)
  trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=data,
                            processing_class=tok)

  gen_times, step_marks = [], []
  generate = trainer._generate

  def timed_generate(*a, **kw):
    t0 = time.perf_counter()
    out = generate(*a, **kw)
    gen_times.append(time.perf_counter() - t0)
    return out

  trainer._generate = timed_generate

  class Steps(transformers.TrainerCallback):
    def on_step_begin(self, *_, **__):
      step_marks.append([time.perf_counter()])

    def on_step_end(self, *_, **__):
      step_marks[-1].append(time.perf_counter())

  trainer.add_callback(Steps())
  trainer.train()
  steps = [e - b for b, e in step_marks]
  res = {'trl': trl.__version__, 'torch': torch.__version__, 'threads': args.threads,
         'step_s': steps, 'generate_s': gen_times, 'measured_step_s': steps[1:],
         'measured_generate_s': gen_times[1:], 'prompts': len(prompts), 'num_generations': g,
         'new_tokens': args.new_tokens}
  with open(args.out, 'w') as f:
    json.dump(res, f, indent=1)
  print(json.dumps({'best_step_s': min(steps[1:]), 'best_generate_s': min(gen_times[1:])}))


if __name__ == '__main__':
  main()
