"""Grading model outputs with math-verify, bounded in time.

The answer is the content of the last `\\boxed{...}` after the last `</think>` (a response that
opens `<think>` and never closes it has no answer). math-verify compares it with the
reference. Every grading runs in a worker process that is killed and replaced when it
exceeds its time budget, so a pathological output (sympy on a 10,000-digit power, a huge
LaTeX blob) costs one timeout and a score of 0, never a stuck run.
"""
import dataclasses
import json
import os
import selectors
import subprocess
import sys
import time
from typing import Sequence

MAX_ANSWER_CHARS = 2000  # longer "answers" are junk: scored wrong without calling math-verify


@dataclasses.dataclass(frozen=True)
class Grade:
  correct: bool
  boxed: bool
  extracted: str | None
  status: str  # 'ok' | 'no_box' | 'timeout' | 'error'


def _last_boxed(text: str) -> str | None:
  """Content of the last \\boxed{...} / \\fbox{...} with balanced braces (linear time)."""
  best = None
  for macro in ('\\boxed', '\\fbox'):
    start = text.rfind(macro)
    while start != -1:
      i = start + len(macro)
      while i < len(text) and text[i] == ' ':
        i += 1
      if i < len(text) and text[i] == '{':
        depth, j = 0, i
        while j < len(text):
          ch = text[j]
          if ch == '{':
            depth += 1
          elif ch == '}':
            depth -= 1
            if depth == 0:
              break
          j += 1
        if depth == 0 and (best is None or start > best[0]):
          best = (start, text[i + 1:j])
        break
      start = text.rfind(macro, 0, start)
  return None if best is None else best[1]


def extract_final_answer(text: str) -> str | None:
  """The last boxed answer after `</think>`; None if absent or thinking never ended."""
  if '</think>' in text:
    text = text.rsplit('</think>', 1)[1]
  elif '<think>' in text:
    return None
  return _last_boxed(text)


def _as_math(s: str) -> str:
  s = s.strip()
  if s.startswith('$') and s.endswith('$'):
    return s
  return f'${s}$'


def grade_in_process(response: str, reference: str) -> Grade:
  """Grades one response in this process (no hard time bound: use `Grader` for that)."""
  try:
    extracted = extract_final_answer(response)
  except Exception:  # noqa: BLE001
    return Grade(False, False, None, 'error')
  if extracted is None:
    return Grade(False, False, None, 'no_box')
  if not extracted.strip() or len(extracted) > MAX_ANSWER_CHARS:
    return Grade(False, True, extracted[:200], 'error')
  try:
    import math_verify  # pylint: disable=g-import-not-at-top
    gold = math_verify.parse(_as_math(reference), parsing_timeout=None)
    pred = math_verify.parse(_as_math(extracted), parsing_timeout=None)
    ok = bool(math_verify.verify(gold, pred, timeout_seconds=None)) if gold and pred else False
    if not ok and extracted.strip() == reference.strip():
      ok = True  # text answers math-verify cannot parse: exact string match
    return Grade(ok, True, extracted, 'ok')
  except Exception:  # noqa: BLE001 - any failure of the grader scores 0
    return Grade(False, True, extracted, 'error')


def _worker_main():
  """Worker loop (`python -m ceeh_jax.grading`): one JSON request per line in, one out."""
  for line in sys.stdin:
    idx, response, reference = json.loads(line)
    g = grade_in_process(response, reference)
    sys.stdout.write(json.dumps([idx, dataclasses.astuple(g)]) + '\n')
    sys.stdout.flush()


@dataclasses.dataclass
class GradeStats:
  graded: int = 0
  timeouts: int = 0
  errors: int = 0


class Grader:
  """A persistent pool of grading processes with a hard per-response time limit.

  Workers are plain subprocesses (`python -m ceeh_jax.grading`) speaking JSON lines: no fork
  of a process that holds JAX threads, no re-import of the caller's main module.
  num_workers=0 grades in-process (fast start, no hard bound; for tests and tiny evals).
  """

  def __init__(self, num_workers: int = 2, timeout_s: float = 5.0):
    if timeout_s <= 0:
      raise ValueError(f'timeout_s must be positive, got {timeout_s}')
    if num_workers < 0:
      raise ValueError(f'num_workers must be >= 0, got {num_workers}')
    self.timeout_s = timeout_s
    self.num_workers = num_workers
    self.stats = GradeStats()
    self._workers = [self._start() for _ in range(num_workers)]

  def _start(self):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env['PYTHONPATH'] = root + os.pathsep + env.get('PYTHONPATH', '')
    return subprocess.Popen([sys.executable, '-m', 'ceeh_jax.grading'], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            bufsize=1, env=env)

  def _restart(self, slot: int):
    proc = self._workers[slot]
    proc.kill()
    proc.wait(timeout=10)
    for f in (proc.stdin, proc.stdout):
      try:
        f.close()
      except OSError:
        pass
    self._workers[slot] = self._start()

  def grade_batch(self, responses: Sequence[str], references: Sequence[str]) -> list[Grade]:
    if len(responses) != len(references):
      raise ValueError(f'{len(responses)} responses but {len(references)} references')
    results: list[Grade | None] = [None] * len(responses)
    todo = []
    for i, (r, ref) in enumerate(zip(responses, references)):
      if not isinstance(r, str):
        r = str(r)
      # Cheap path: no boxed answer needs no sympy.
      if extract_final_answer(r) is None:
        results[i] = Grade(False, False, None, 'no_box')
      else:
        todo.append((i, r, str(ref)))
    if self.num_workers == 0:
      for i, r, ref in todo:
        results[i] = grade_in_process(r, ref)
    else:
      self._run_pool(todo, results)
    for g in results:
      self.stats.graded += 1
      self.stats.timeouts += g.status == 'timeout'
      self.stats.errors += g.status == 'error'
    return results

  def _run_pool(self, todo, results):
    pending = list(reversed(todo))
    busy = {}  # slot -> (idx, start time, response)
    while pending or busy:
      for slot in range(self.num_workers):
        if slot not in busy and pending:
          i, r, ref = pending.pop()
          msg = json.dumps([i, r, ref]) + '\n'
          try:
            self._workers[slot].stdin.write(msg)
            self._workers[slot].stdin.flush()
          except (BrokenPipeError, OSError):
            self._restart(slot)
            self._workers[slot].stdin.write(msg)
            self._workers[slot].stdin.flush()
          busy[slot] = (i, time.monotonic(), r)
      with selectors.DefaultSelector() as sel:
        for slot in busy:
          sel.register(self._workers[slot].stdout, selectors.EVENT_READ, slot)
        ready = sel.select(timeout=0.05)
      for key, _ in ready:
        slot = key.data
        line = self._workers[slot].stdout.readline()
        try:
          idx, fields = json.loads(line)
          results[idx] = Grade(*fields)
        except (ValueError, TypeError):  # the worker died mid-answer: score 0, replace it
          results[busy[slot][0]] = Grade(False, True, None, 'error')
          self._restart(slot)
        del busy[slot]
      now = time.monotonic()
      for slot, (i, t0, r) in list(busy.items()):
        if now - t0 > self.timeout_s:
          extracted = extract_final_answer(r)
          results[i] = Grade(False, True, None if extracted is None else extracted[:200],
                             'timeout')
          self._restart(slot)
          del busy[slot]

  def close(self):
    for proc in self._workers:
      try:
        proc.stdin.close()
      except OSError:
        pass
      try:
        proc.wait(timeout=2)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
      proc.stdout.close()
    self._workers = []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False


if __name__ == '__main__':
  _worker_main()
