"""Chained digit arithmetic mod 10: a verifiable reasoning task with difficulty by construction.

A problem assigns a start digit and then one variable per step; every number is a digit and
every result is taken mod 10 (its last digit). The question asks for the last variable:

  easy (1-2 steps):  `a=3 b=a+4 c=b*3 find c`                 -> 1
  hard (4-6 steps):  `a=6 b=a-7 c=b+a d=c*7 e=d-b find e`     -> 6

Easy steps apply a digit to the previous variable. Hard problems have more steps, and about
half of their steps combine the previous variable with an earlier one (a lookup further back),
so there are more chances to slip and a slip propagates. Each step of a trace substitutes the
values and writes the result (`c=7*3=1`), so a tiny transformer only ever copies two digits and
applies one of ~400 digit facts; easy questions become reliable and hard ones stay hit or miss.

`concise_trace` is the minimal chain; `verbose_trace` adds what R1-Distill adds (a restated
goal, symbolic step forms, "wait, check" re-computations, a repeated result, a recap), each
optional with a per-trace verbosity, so lengths vary and the policy has seen every shorter
variant. Traces start with `<think>\\n` (what the R1 prompt ends with) and end with
`</think>\\n\\n...\\boxed{answer}`; answers are plain digits, graded by math-verify.
"""
import hashlib
import json
import os
from typing import NamedTuple

import numpy as np

VARS = 'abcdefg'            # a = start, then one variable per step (6 steps at most)
OPS = '+-*'
MULTIPLIERS = (3, 7, 9)
EASY_STEPS = (1, 2)
HARD_STEPS = (4, 5, 6)
BINARY_FRACTION = 0.5       # hard steps (after the first) combining two variables
THINK_OPEN, THINK_CLOSE = '<think>\n', '\n</think>\n\n'
# Phrase banks for verbose traces. `{t}` target variable, `{e}` substituted expression, `{r}`
# its result. Kept to a closed word list (synthetic.tokenizer.WORDS).
OPENERS = ('okay, so we need {t}.', 'let me find {t}.', 'okay, the question asks for {t}.')
CHECKS = (' wait, check: {e}={r}.', ' hmm, {e} is {r}.', ' wait, {e}={r}? yes.')
FINALS = ('so {t}={r}.', 'so the answer is {r}.')


class Step(NamedTuple):
  """`target = left op right`; `right` is a digit string or an earlier variable."""
  target: str
  left: str
  op: str
  right: str


def _apply(op: str, x: int, y: int) -> int:
  if op == '+':
    return (x + y) % 10
  if op == '-':
    return (x - y) % 10
  if op == '*':
    return (x * y) % 10
  raise ValueError(f'unknown operator {op!r}')


def _digit(rng, op: str) -> str:
  # Multipliers are the units mod 10 other than 1, so `x*k` permutes the digits: the answers
  # stay uniform and no step erases the chain (x0, x5 and even multipliers would skew to 0).
  return str(int(rng.choice(MULTIPLIERS))) if op == '*' else str(int(rng.integers(1, 10)))


def _sample_steps(rng, n: int, hard: bool) -> list[Step]:
  steps = []
  for i in range(1, n + 1):
    prev = VARS[i - 1]
    if hard and i >= 2 and rng.random() < BINARY_FRACTION:
      # A lookup further back. Only + and -: a product of two variables skews to even digits.
      op = str(rng.choice(['+', '-']))
      other = VARS[int(rng.integers(0, i - 1))]
      left, right = (prev, other) if rng.random() < 0.5 else (other, prev)
    else:
      op = str(rng.choice(list(OPS)))
      left, right = prev, _digit(rng, op)
    steps.append(Step(VARS[i], left, op, right))
  return steps


def format_problem(start: int, steps: list[Step]) -> str:
  parts = [f'a={start}'] + [f'{s.target}={s.left}{s.op}{s.right}' for s in steps]
  return ' '.join(parts) + f' find {steps[-1].target}'


def parse_problem(problem: str) -> tuple[int, list[Step]]:
  """(start digit, steps) of a problem text; ValueError naming the part that is malformed."""
  words = problem.split(' ')
  if len(words) < 4 or words[-2] != 'find':
    raise ValueError(f'not a chain problem (expected "a=D ... find X"): {problem!r}')
  first = words[0]
  if len(first) != 3 or first[:2] != 'a=' or not first[2].isdigit():
    raise ValueError(f'a chain problem starts with "a=<digit>", got {first!r} in {problem!r}')
  steps, known = [], ['a']
  for w in words[1:-2]:
    if len(w) != 5 or w[1] != '=' or w[3] not in OPS or w[0] != VARS[len(known)]:
      raise ValueError(f'malformed step {w!r} in {problem!r} (expected e.g. "{VARS[len(known)]}=a+4")')
    left, right = w[2], w[4]
    if left not in known or not (right.isdigit() or right in known):
      raise ValueError(f'step {w!r} uses an undefined variable in {problem!r}')
    steps.append(Step(w[0], left, w[3], right))
    known.append(w[0])
  if words[-1] != known[-1]:
    raise ValueError(f'the question must ask for the last variable {known[-1]!r}: {problem!r}')
  return int(first[2]), steps


def evaluate(start: int, steps: list[Step], slip: tuple[int, int] | None = None) -> dict:
  """Variable -> value; `slip=(k, delta)` adds delta to step k's result (an arithmetic slip
  that later steps then use)."""
  values = {'a': start}
  for k, s in enumerate(steps):
    right = values[s.right] if s.right in values else int(s.right)
    values[s.target] = _apply(s.op, values[s.left], right)
    if slip is not None and slip[0] == k:
      values[s.target] = (values[s.target] + slip[1]) % 10
  return values


def make_problem(rng: np.random.Generator, difficulty: str, uid: str | None = None) -> dict:
  """One problem row {id, problem, answer, meta={'steps', 'hard'}}; difficulty 'easy'|'hard'.

  Without `uid` the id is a hash of the problem text (equal problems, equal ids).
  """
  if difficulty not in ('easy', 'hard'):
    raise ValueError(f"difficulty must be 'easy' or 'hard', got {difficulty!r}")
  hard = difficulty == 'hard'
  n = int(rng.choice(HARD_STEPS if hard else EASY_STEPS))
  start = int(rng.integers(0, 10))
  steps = _sample_steps(rng, n, hard)
  problem = format_problem(start, steps)
  answer = evaluate(start, steps)[steps[-1].target]
  if uid is None:
    uid = 'arith-' + hashlib.sha1(problem.encode()).hexdigest()[:12]
  return {'id': uid, 'problem': problem, 'answer': str(answer),
          'meta': {'steps': n, 'hard': hard}}


def make_dataset(n: int, seed: int, hard_fraction: float = 0.5) -> list[dict]:
  """`n` problems, hard with probability `hard_fraction`; ids `arith-<seed>-<i>` are unique.

  Easy problems come from a small space (210 one-step, 4,410 two-step), so they repeat
  within and across datasets; hard ones almost never do.
  """
  if n < 0 or not 0.0 <= hard_fraction <= 1.0:
    raise ValueError(f'need n >= 0 and 0 <= hard_fraction <= 1, got {n}, {hard_fraction}')
  rng = np.random.default_rng(seed)
  return [make_problem(rng, 'hard' if rng.random() < hard_fraction else 'easy',
                       uid=f'arith-{seed}-{i}') for i in range(n)]


def write_jsonl(rows, path: str) -> str:
  """Writes rows as JSONL with the data loader's schema {id, problem, answer, meta}."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    for r in rows:
      f.write(json.dumps({'id': str(r['id']), 'problem': r['problem'], 'answer': str(r['answer']),
                          'meta': dict(r.get('meta', {}))}) + '\n')
  os.replace(tmp, path)  # readers never see a half-written file
  return path


# --- Traces ------------------------------------------------------------------------------------

def _substituted(s: Step, values: dict) -> str:
  right = str(values[s.right]) if s.right in values else s.right
  return f'{values[s.left]}{s.op}{right}'


def _answer_block(answer: int) -> str:
  return THINK_CLOSE + '\\boxed{' + str(answer) + '}'


def concise_trace(row: dict) -> str:
  """The minimal trace: `<think>\\nb=3+4=7 c=7*3=1\\n</think>\\n\\n\\boxed{1}`."""
  start, steps = parse_problem(row['problem'])
  values = evaluate(start, steps)
  body = ' '.join(f'{s.target}={_substituted(s, values)}={values[s.target]}' for s in steps)
  return THINK_OPEN + body + _answer_block(values[steps[-1].target])


def _slip(rng, start: int, steps: list[Step]) -> tuple[int, int]:
  """A (step, delta) slip that changes the final answer (the last step's always does)."""
  target = steps[-1].target
  right = evaluate(start, steps)[target]
  for k in rng.permutation(len(steps)):
    for delta in rng.permutation(np.arange(1, 10)):
      if evaluate(start, steps, (int(k), int(delta)))[target] != right:
        return int(k), int(delta)
  raise AssertionError('unreachable: a slip in the last step always changes the answer')


def verbose_trace(row: dict, rng: np.random.Generator, *, error_rate: float = 0.0,
                  verbosity: float | None = None) -> str:
  """An R1-Distill-like trace, 2-4x the concise one: same steps plus optional redundancy.

  Every extra (restated goal, symbolic step form, a check after a step, the repeated result, a
  recap, "the answer is") appears with probability tied to `verbosity` (drawn from U[0.4, 1]
  when None). With probability `error_rate` one step slips (a wrong digit that later steps
  use and checks repeat), so the boxed answer is wrong; with 0 (default) it is always right.
  """
  if not 0.0 <= error_rate <= 1.0:
    raise ValueError(f'error_rate must be in [0, 1], got {error_rate}')
  v = float(rng.uniform(0.4, 1.0)) if verbosity is None else float(verbosity)
  start, steps = parse_problem(row['problem'])
  slip = _slip(rng, start, steps) if error_rate and rng.random() < error_rate else None
  values = evaluate(start, steps, slip)
  target, answer = steps[-1].target, values[steps[-1].target]
  pick = lambda bank: bank[int(rng.integers(len(bank)))]
  # R1-Distill always restates the goal and repeats the result; the rest is optional.
  lines = [pick(OPENERS).format(t=target)]
  if rng.random() < 0.5 * v:
    lines.append(f'a={start}.')
  for s in steps:
    e, r, u = _substituted(s, values), values[s.target], rng.random()
    if u < 0.5 * v:  # re-check the step (at most one extra per step keeps hard traces short)
      lines.append(f'{s.target}={e}={r}' + pick(CHECKS).format(e=e, r=r))
    elif u < v:  # the symbolic form first
      lines.append(f'{s.target}={s.left}{s.op}{s.right}={e}={r}')
    else:
      lines.append(f'{s.target}={e}={r}')
  lines.append(pick(FINALS).format(t=target, r=answer))
  if rng.random() < 0.5 * v:
    recap = ' '.join(f'{s.target}={values[s.target]}' for s in steps)
    lines.append(f'let me verify: {recap}. yes.')
  tail = 'the answer is \\boxed{' + str(answer) + '}.' if rng.random() < 0.5 * v else (
      '\\boxed{' + str(answer) + '}')
  return THINK_OPEN + '\n'.join(lines) + THINK_CLOSE + tail


def completion(trace: str) -> str:
  """The part of a trace after the prompt: R1 prompts already end with `<think>\\n`."""
  if not trace.startswith(THINK_OPEN):
    raise ValueError(f'a trace starts with {THINK_OPEN!r}, got {trace[:20]!r}')
  return trace[len(THINK_OPEN):]


def sft_traces(rows, seed: int, *, hard_error_rate: float = 0.0,
               concise_fraction: float = 0.0) -> list[str]:
  """One full trace per row for SFT of the base policy: verbose, except a `concise_fraction`
  of concise ones; hard rows slip with `hard_error_rate` (a weaker base on hard questions)."""
  rng = np.random.default_rng(seed)
  out = []
  for r in rows:
    if rng.random() < concise_fraction:
      out.append(concise_trace(r))
    else:
      rate = hard_error_rate if r['meta']['hard'] else 0.0
      out.append(verbose_trace(r, rng, error_rate=rate))
  return out
