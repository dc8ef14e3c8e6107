"""experiments/memory_plans.md from `memory_plan.plan`: every recipe on the hardware its config
names (`python experiments/memory_plan.py --all > experiments/memory_plans.md`).

Measuring lives in memory_plan.py; this file only chooses the setups and writes the tables.
"""
import sys

import memory_plan as mp

# (config, variant, config overrides, targets). The full fine-tunes are the documented variants
# (`--config.model.lora_rank=0`).
RECIPES = (
    ('r1_1p5b', 'LoRA r32 (as shipped)', {}, ('TPU v5e-8', 'TPU v4-8', '8xH100')),
    ('r1_1p5b', 'full fine-tune', {'model.lora_rank': 0}, ('TPU v5e-8', 'TPU v4-8', '8xH100')),
    ('r1_7b', 'LoRA r32 (as shipped)', {},
     ('8xH100', 'TPU v5p-8', 'TPU v4-16', 'TPU v5e-8', 'TPU v4-8')),
    ('r1_7b', 'full fine-tune', {'model.lora_rank': 0}, ('8xH100', 'TPU v5p-8', 'TPU v4-16')),
)
ALL_ROWS_DEVICES = 8  # the shipped LoRA recipes' decode is also planned with all rows at once

INTRO = """\
# Memory plans of the r1 recipes (AOT, abstract arrays, XLA:CPU proxy)

Regenerate with one command (about {minutes} minutes and {rss:.1f} GiB of host RAM on the 2-core
machine that wrote this file):

    nice python experiments/memory_plan.py --all > experiments/memory_plans.md

Every number comes from the code and configs of this commit. For each recipe and device count,
`experiments/memory_plan.py` builds the TrainState, one minibatch and one rollout chunk's
decode state as `jax.ShapeDtypeStruct`s with their shardings, compiles `steps.train_step` and
`sampler._decode` for fake CPU devices and reads `compiled.memory_analysis()` per device
(`total = argument + output - alias + temp + code`).

* **XLA:CPU is the measuring tool**: argument bytes (params, optimizer state, KV cache) are
  exact on any backend; temp bytes are the CPU compiler's (fusion, scheduling, buffer reuse),
  so read them as +-30% of TPU/GPU. On CPU `model.attention='auto'` is the blocked JAX flash
  attention; TPU runs Pallas splash and GPU cuDNN, both also O(T) memory. Confirm on the
  device with `scripts/device_check.sh` (peak `device.memory_stats()` next to this plan).
* **Train step**: one minibatch of `minibatch_size` rows, prompt 1,024 + completion M tokens,
  accumulated over micro-batches of `micro_batch_size` rows; the batch rows are spread over the
  data axes and, when a micro-batch has fewer rows than devices, each row's sequence is split
  over them instead (`sharding.constrain`).
* **Rollout**: the trainer's state stays on the device while the sampler decodes
  `sampling.rows_per_chunk` rows at a time with a bf16 KV cache of (1,024 + M) tokens; the
  rollout peak is the train state plus the decode program's total (its arguments are the bf16
  sampling view of the params and the decode state, the cache included). Prefill is smaller
  than decode (its output is the same cache) and is not listed.
* **One XLA:CPU artifact is taken out**: XLA:CPU has no bf16 dynamic-update-slice, so it
  carries the bf16 KV cache through the decode loop as fp32 copies of k and v (2x the cache,
  found in the compiled program), where TPU and GPU update the donated cache in place. Decode
  temp and total below are without those copies (the CPU figure in brackets). The train step
  is listed as XLA:CPU compiled it (its bf16 activations also partly run in f32 on CPU: an
  upper bound there).
* **Fits** = the larger of the two peaks <= {fit:.0%} of the target's HBM per device. Targets:
{targets}
"""


def _apply(config, overrides):
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _gib(x):
  return f'{x / mp.GIB:.2f}'


def _setup(config):
  m, s = config.model, config.sampling
  return (f'micro {config.micro_batch_size}, remat `{m.remat_policy}`, '
          f'rows_per_chunk {s.get("rows_per_chunk", 0) or "all"}, M {s.max_new_tokens:,}')


def _decode_row(de, label):
  """A programs-table row of a decode plan; temp and total without XLA:CPU's fp32 cache."""
  f32 = de['cpu_f32_cache']
  label += ' (unrolled)' if de['unrolled'] else ''
  return (f'| | | {label} | {de["rows"]} x {de["cache_len"]:,} | {_gib(de["argument"])} | '
          f'{_gib(de["temp"] - f32)} (CPU {_gib(de["temp"])}) | {_gib(de["total"] - f32)} | '
          f'KV cache {_gib(de["cache"])} | {de["compile_s"]:.0f} |')


def render(plan, load_config, progress=sys.stderr):
  import time  # pylint: disable=g-import-not-at-top
  t_start = time.time()
  programs, verdicts, setups = [], [], []
  for name, variant, overrides, targets in RECIPES:
    config = _apply(load_config(name), overrides)
    setups.append(f'| `{name}` | {variant} | {_setup(config)} |')
    devices = sorted({mp.TARGETS[t].devices for t in targets}, reverse=True)
    for n in devices:
      print(f'[memory_plan] {name} {variant} on {n} devices ...', file=progress, flush=True)
      res = plan(config, n)
      tr, de = res['train'], res['decode']
      mesh = mp.mesh_shape(config, n)
      programs.append(
          f'| `{name}` {variant} | {n} {mesh} | train | {config.minibatch_size} x '
          f'{1024 + config.sampling.max_new_tokens:,} (micro {config.micro_batch_size}) | '
          f'{_gib(tr["argument"])} | {_gib(tr["temp"])} | {_gib(tr["total"])} | '
          f'state {_gib(tr["state"])} | {tr["compile_s"]:.0f} |')
      programs.append(_decode_row(de, 'decode'))
      rollout = tr['state'] + de['total'] - de['cpu_f32_cache']
      peak = max(tr['total'], rollout)
      for t in (mp.TARGETS[t] for t in targets if mp.TARGETS[t].devices == n):
        ok = peak <= mp.FIT * t.hbm_gib * mp.GIB
        verdicts.append(
            f'| `{name}` {variant} | {t.name} ({t.devices} x {t.hbm_gib:g} GiB) | '
            f'{_gib(tr["total"])} | {_gib(rollout)} | **{_gib(peak)}** | '
            f'{100 * peak / (t.hbm_gib * mp.GIB):.0f}% | {"yes" if ok else "**no**"} |')
      if not overrides and n == ALL_ROWS_DEVICES:  # why the rollout is chunked
        rows = config.batch_size * config.sampling.num_samples
        print(f'[memory_plan] {name} decode of all {rows} rows on {n} devices ...',
              file=progress, flush=True)
        de_all = plan(config, n, what=('decode',), decode_rows=rows)['decode']
        programs.append(_decode_row(de_all, 'decode, all rows at once'))
        rollout_all = tr['state'] + de_all['total'] - de_all['cpu_f32_cache']
        names = [t for t in targets if mp.TARGETS[t].devices == n]
        fits = [t for t in names if rollout_all <= mp.FIT * mp.TARGETS[t].hbm_gib * mp.GIB]
        verdicts.append(
            f'| `{name}` {variant}, all {rows} rows decoded at once | {n} devices | '
            f'{_gib(tr["total"])} | {_gib(rollout_all)} | **{_gib(max(rollout_all, tr["total"]))}**'
            f' | | {", ".join(fits) or "**none**"} |')
  targets = '\n'.join(f'  {t.name}: {t.devices} devices x {t.hbm_gib:g} GiB HBM.'
                      for t in mp.TARGETS.values())
  out = [INTRO.format(minutes=max(1, round((time.time() - t_start) / 60)), rss=mp.peak_rss_gib(),
                      fit=mp.FIT, targets=targets)]
  out += ['## Setups (from configs/*.py)\n', '| config | variant | setup |', '|---|---|---|']
  out += setups
  out += ['', '## Programs (GiB per device)\n',
          '| recipe | devices (mesh) | program | rows x tokens | arg | temp | total | '
          'resident part | compile s |', '|' + '---|' * 9]
  out += programs
  out += ['', '## Does it fit? (GiB per device)\n',
          '| recipe | target | train step | rollout (state + decode) | peak | of HBM | fits |',
          '|' + '---|' * 7]
  out += verdicts
  out += ['', NOTES.format(kv=_kv_note(load_config))]
  return '\n'.join(out) + '\n'


def _kv_note(load_config):
  """The KV-cache arithmetic for each recipe's model, from its config."""
  parts = []
  for name in dict.fromkeys(r[0] for r in RECIPES):
    config = load_config(name)
    m = mp.model_config(config)
    tokens = 1024 + config.sampling.max_new_tokens
    per_token = m.num_layers * 2 * m.num_kv_heads * m.head_dim * 2
    rows = config.batch_size * config.sampling.num_samples
    parts.append(f'  * `{name}`: {per_token / 1024:.0f} KiB a token ({m.num_layers} layers, '
                 f'{m.num_kv_heads} KV heads), {per_token * tokens / mp.GIB:.2f} GiB a row at '
                 f'{tokens:,} tokens,\n    {per_token * tokens * rows / mp.GIB:.0f} GiB for '
                 f'all {rows} rows.')
  return '\n'.join(parts)


NOTES = """\
## Reading it

* The KV cache is rows x (1,024 + M) x layers x 2 x kv_heads x head_dim x 2 bytes (bf16):
{kv}
  All rows at once is more than the smaller targets hold: `sampling.rows_per_chunk` bounds
  the rows decoded together (each chunk's cache is freed before the next; rows stay
  prompt-major), at the cost of more sequential decode calls per rollout.
* The train step's temp is dominated by the activations the backward pass keeps: the layer
  inputs (remat `full`: 3 KiB a token a layer at 1.5B, 7 KiB at 7B) plus, with the save_*
  policies, the named bf16 projections. The recipe's earlier `dots_no_batch` kept every
  projection's fp32 accumulation and LoRA's fp32 delta (~82 KiB a token a layer), and a
  4-row micro-batch was padded to 8 rows on 8 devices.
* Every target marked **no** is named in its config's docstring, with what fits instead.
"""
