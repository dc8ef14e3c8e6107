"""The Markdown tables `bench_sampler.py` prints from its results (see its docstring)."""


def _fmt(x, spec='.0f'):
  return '—' if x is None else format(x, spec)


def print_compare(results):
  print('\n### (a, b, e) Rollout throughput: B x G rows, exactly M new tokens (EOS off); '
        'tok/s = R·M / wall time of the whole call (prefill + decode)')
  print('| case | ours tok/s | HF tok/s | ours/HF | Tunix tok/s | ours/Tunix | roofline tok/s '
        '| fraction |')
  print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for res in results:
    rows, m = res['prompts'] * res['num_samples'], res['new_tokens']
    for key, o in res['ours'].items():
      case, dtype = key.split('/')
      ref = lambda name: res.get(name, {}).get('cases', {}).get(case, {}).get('tok_s')
      hf, tx = ref('hf'), ref('tunix')
      ideal = res['ideal'][dtype]['total']
      label = (f"{res['size']} {case} {dtype}" + ('' if dtype == 'float32' else ' (refs fp32)') +
               f" ({rows}x{m}, P {res['prompt_len']})")
      ratio = lambda ref: '—' if not ref else f"{o['tok_s'] / ref:.2f}x"
      print(f"| {label} | {o['tok_s']:.0f} | {_fmt(hf)} | {ratio(hf)} | "
            f"{_fmt(tx)} | {ratio(tx)} | {rows * m / ideal:.0f} | "
            f"{ideal / o['best_s']:.1%} |")
  print('\nOurs split (prefill timed alone; decode = whole call − prefill):')
  print('| case | prefill s | decode s | decode tok/s | decode roofline tok/s | decode fraction |')
  print('| --- | ---: | ---: | ---: | ---: | ---: |')
  for res in results:
    rows, m = res['prompts'] * res['num_samples'], res['new_tokens']
    for key, o in res['ours'].items():
      dtype = key.split('/')[1]
      dec = o['best_s'] - o['prefill_s']
      ideal = res['ideal'][dtype]['decode']
      print(f"| {res['size']} {key} | {o['prefill_s']:.3f} | {dec:.3f} | "
            f"{rows * (m - 1) / dec:.0f} | {rows * (m - 1) / ideal:.0f} | {ideal / dec:.1%} |")
  for res in results:
    for k in ('hf', 'tunix'):
      if 'error' in res.get(k, {}):
        print(f"{res['size']} {k}: {res[k]['error'].strip().splitlines()[-1][:300]}")
    print(f"{res['size']} greedy agreement with ours (rows whose first 16 tokens match): "
          + ', '.join(f'{k} {_fmt(v, ".0%")}' for k, v in res['greedy_agreement'].items()))


def print_long(r):
  print(f"\n### (c) Long rollouts, tiny model, ours, {r['prompts']}x{r['num_samples']} rows, "
        f"prompt {r['prompt_len']}, {r['case']}, EOS off")
  print('| new tokens | ours tok/s | ratio vs first | ms/step | roofline tok/s | fraction |')
  print('| ---: | ---: | ---: | ---: | ---: | ---: |')
  for x in r['rows']:
    print(f"| {x['new_tokens']} | {x['tok_s']:.0f} | {x['ratio_vs_first']:.0%} | "
          f"{x['ms_per_step']:.2f} | {x['roofline_tok_s']:.0f} | {x['fraction']:.1%} |")


def print_context(r):
  print(f"\n### (d) Decode cost vs live context, tiny model, {r['rows_per_step']} rows, "
        f"{r['timed_steps']} decode steps timed after `sampler.prefill`")
  print('| live tokens | cache slots | ms/step | ms/step in a '
        f"{r['rows'][0]['cache_alloc']}-slot cache | alloc/exact | µs per row-token | "
        'roofline ms/step | fraction |')
  print('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for x in r['rows']:
    print(f"| {x['live']} | {x['cache_exact']} | {1e3 * x['step_s_exact']:.2f} | "
          f"{1e3 * x['step_s_alloc']:.2f} | {x['alloc_over_exact']:.2f} | "
          f"{x['us_per_row_token']:.1f} | {1e3 * x['ideal_step_s']:.3f} | {x['fraction']:.1%} |")


def print_select(r):
  print(f"\n### Token selection alone on [{r['rows']}, {r['vocab']}] fp32 logits (per step)")
  print('| op | ms |')
  print('| --- | ---: |')
  for k, v in r['ms'].items():
    print(f'| {k} | {v:.1f} |')


def print_goals(out):
  comp = {r['size']: r for r in out.get('compare', [])}
  lines = []
  for size, r in comp.items():
    o = r['ours']['top_p/float32']
    hf = r.get('hf', {}).get('cases', {}).get('top_p', {}).get('tok_s')
    if hf:
      lines.append(f'{size} sampled ours/HF = {o["tok_s"] / hf:.2f}x (goal >= 3x)')
    tx = r.get('tunix', {}).get('cases', {}).get('greedy', {}).get('tok_s')
    if tx:
      g = r['ours']['greedy/float32']['tok_s']
      lines.append(f'{size} greedy ours/Tunix = {g / tx:.2f}x (goal >= 1x)')
  if '0p5b' in comp:
    r = comp['0p5b']
    rows, m = r['prompts'] * r['num_samples'], r['new_tokens']
    for key, o in r['ours'].items():
      dec = o['best_s'] - o['prefill_s']
      frac = r['ideal'][key.split('/')[1]]['decode'] / dec
      lines.append(f'0p5b {key} decode roofline fraction = {frac:.1%} (goal >= 50%)')
  if 'long' in out:
    last = out['long']['rows'][-1]
    lines.append(f"long M={last['new_tokens']} tok/s = {last['ratio_vs_first']:.0%} of M=128 "
                 '(goal >= 80%)')
  if lines:
    print('\nGoals:\n  ' + '\n  '.join(lines))
