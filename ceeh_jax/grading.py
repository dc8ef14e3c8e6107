"""Grades model outputs against reference answers with math-verify, bounded in time.

The answer is the content of the last `\\boxed{...}` (`\\fbox{...}`, `\\boxed x`) after the
last `</think>` (none if `<think>` never closes), correct when math-verify says
`verify(parse(\\boxed{reference}), parse(\\boxed{answer}))`.

Grading is the one host step of training (DESIGN.md) and sympy can hang in C code that no
signal interrupts, so `Grader` keeps worker processes with a soft deadline per task (SIGALRM:
status 'timeout', worker kept) and a hard one, `timeout_s + kill_grace_s` (SIGKILL, fresh
worker). Workers are new interpreters from `subprocess` (fork+exec): no `fork()` of a parent
running JAX threads, no re-import of its `__main__` as multiprocessing 'spawn' would do.

Pre-filter in the parent: no box => 'no_box', math-verify skipped; an answer longer than
`max_answer_chars` (2000; the longest vendored reference has 210) => wrong, status 'error'
(where sympy hangs and eats memory). A distinct (answer, reference) pair is verified once
per batch; 'ok' verdicts are cached (a question's G samples often agree).
"""
import collections
import contextlib
import dataclasses
import functools
import logging
import multiprocessing.connection as mp_connection
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple, Sequence

MAX_ANSWER_CHARS = 2000
_THIS_FILE = os.path.abspath(__file__)


STATUSES = ('ok', 'timeout', 'error', 'no_box')


class Grade(NamedTuple):
  """One graded response; status is one of STATUSES."""
  correct: bool
  boxed: bool
  extracted: str | None
  status: str


@dataclasses.dataclass
class GradeStats:
  """Counts over graded responses (cumulative on `Grader.stats`, per call on `last_stats`)."""
  total: int = 0
  correct: int = 0
  no_box: int = 0
  timeouts: int = 0
  errors: int = 0
  cache_hits: int = 0
  worker_restarts: int = 0
  seconds: float = 0.0

  def add(self, other: 'GradeStats') -> None:
    for k, v in dataclasses.asdict(other).items():
      setattr(self, k, getattr(self, k) + v)


# --- Answer extraction ------------------------------------------------------------------------

# One token per structural character: a box opener, an escaped `\{` `\}` `\\` (literal in TeX,
# so they never open or close a group), or a bare brace. One regex pass: linear in the text.
_TOKENS = re.compile(r'\\(?:boxed|fbox)\s*\{|\\boxed(?=\s)|\\[\\{}]|[{}]')
_SPACE_ARG = re.compile(r'\s*([^\s$]+)')


def extract_final_answer(text: str, *, require_think_close: bool = False) -> str | None:
  """Content of the last complete box after the last `</think>`, stripped; None if none.

  `<think>` without `</think>`: thinking never ended, None. `require_think_close` treats a
  text without `</think>` so too (for prompts that end in `<think>`, as R1's template does).
  Unclosed boxes are ignored; of nested boxes the innermost (last opened) wins.
  """
  close = text.rfind('</think>')
  if close >= 0:
    text = text[close + len('</think>'):]
  elif require_think_close or '<think>' in text:
    return None
  hits = [i for i in (text.find('\\boxed'), text.find('\\fbox')) if i >= 0]
  if not hits:
    return None
  start = min(hits)  # braces before the first box cannot close a box
  while start > 0 and text[start - 1] == '\\':  # but start on a whole run of backslashes
    start -= 1
  stack = []  # per open brace: (box start, content start), or None for a plain group
  best = None  # (box start, content start, content end) of the last-opened complete box
  for m in _TOKENS.finditer(text, start):
    tok = m.group()
    if tok == '{':
      stack.append(None)
    elif tok == '}':
      top = stack.pop() if stack else None
      if top is not None and (best is None or top[0] > best[0]):
        best = (top[0], top[1], m.start())
    elif tok == '\\boxed':  # `\boxed 5`: the argument runs to whitespace or `$`
      arg = _SPACE_ARG.match(text, m.end())
      if arg and (best is None or m.start() > best[0]):
        best = (m.start(), arg.start(1), arg.end(1))
    elif tok[-1] == '{' and len(tok) > 2:  # \boxed{ or \fbox{
      stack.append((m.start(), m.end()))
  return None if best is None else text[best[1]:best[2]].strip()


def _screen(response, reference, max_chars, require_think_close):
  """(final Grade, None) when math-verify is not needed, else (None, extracted answer)."""
  if not isinstance(response, str) or not isinstance(reference, str):
    return Grade(False, False, None, 'error'), None
  try:
    extracted = extract_final_answer(response, require_think_close=require_think_close)
  except Exception:  # pylint: disable=broad-except  (MemoryError on absurd inputs)
    return Grade(False, False, None, 'error'), None
  if extracted is None:
    return Grade(False, False, None, 'no_box'), None
  if len(extracted) > max_chars:
    return Grade(False, True, extracted, 'error'), None
  if not extracted:  # `\boxed{}`: boxed, trivially wrong
    return Grade(False, True, extracted, 'ok'), None
  return None, extracted


# --- math-verify, in whichever process runs it ------------------------------------------------

class _SoftTimeout(BaseException):
  """Raised by SIGALRM; a BaseException so math-verify's `except Exception` cannot eat it."""


def _raise_soft_timeout(*_):
  raise _SoftTimeout()


@functools.cache
def _math_verify():
  import math_verify  # pylint: disable=g-import-not-at-top  (sympy: a second to import)
  for name in ('math_verify.parser', 'math_verify.grader'):  # "timeout is off": we bound it
    logging.getLogger(name).addFilter(lambda r: 'Timeout is disabled' not in r.getMessage())
  return math_verify


@functools.lru_cache(maxsize=8192)
def _parse_reference(reference: str) -> tuple:
  # \boxed{} rather than $...$: references such as `a+$ $b` (minerva) or `$69$,$84$`
  # (olympiadbench multi-answer) carry dollar signs of their own.
  return tuple(_math_verify().parse('\\boxed{' + reference + '}', parsing_timeout=None))


def _verify(extracted: str, reference: str) -> bool:
  mv = _math_verify()
  gold = list(_parse_reference(reference))
  pred = mv.parse('\\boxed{' + extracted + '}', parsing_timeout=None)
  return bool(mv.verify(gold, pred, timeout_seconds=None))


def _verify_soft(extracted: str, reference: str, timeout_s: float | None) -> tuple[bool, str]:
  """(correct, status) under a SIGALRM deadline when on a main thread (else unbounded)."""
  use_alarm = bool(timeout_s and hasattr(signal, 'setitimer')
                   and threading.current_thread() is threading.main_thread())
  old = signal.signal(signal.SIGALRM, _raise_soft_timeout) if use_alarm else None
  try:
    try:
      if use_alarm:  # re-fires every 0.1 s until cancelled: an exception raised inside a
        # callback Python ignores (a gc callback, a __del__) is swallowed; the next one lands
        signal.setitimer(signal.ITIMER_REAL, timeout_s, 0.1)
      return _verify(extracted, reference), 'ok'
    finally:
      if use_alarm:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
  except _SoftTimeout:
    return False, 'timeout'
  except Exception:  # pylint: disable=broad-except  (RecursionError, MemoryError, sympy bugs)
    return False, 'error'


def grade(response: str, reference: str, timeout_s: float | None = 5.0, *,
          max_answer_chars: int = MAX_ANSWER_CHARS, require_think_close: bool = False) -> Grade:
  """Grades one response in this process; never raises. The SIGALRM bound works only on
  the main thread and cannot stop C code: training uses `Grader` (hard kill)."""
  done, extracted = _screen(response, reference, max_answer_chars, require_think_close)
  if done is not None:
    return done
  correct, status = _verify_soft(extracted, reference, timeout_s)
  return Grade(correct, True, extracted, status)


grade_in_process = grade  # the first version's name, still used by synthetic/sft.py


# --- The bounded worker pool ------------------------------------------------------------------

def _worker_main(rfd: int, wfd: int, memory_limit_mb: int) -> None:
  """Worker loop: sends ('ready', pid), then (tag, correct, status) per (tag, answer, ref, s)."""
  import warnings  # pylint: disable=g-import-not-at-top
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
  warnings.simplefilter('ignore')
  logging.getLogger('math_verify').setLevel(logging.ERROR)
  rx = mp_connection.Connection(rfd, writable=False)
  tx = mp_connection.Connection(wfd, readable=False)
  if memory_limit_mb:  # a runaway bignum gets MemoryError (status 'error'), not the host's RAM
    import resource  # pylint: disable=g-import-not-at-top
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit_mb << 20, memory_limit_mb << 20))
  try:
    _verify('1', '1')  # import sympy and build the LaTeX grammar before saying 'ready'
  except BaseException as e:  # pylint: disable=broad-except
    return tx.send(('fail', repr(e)))
  try:
    tx.send(('ready', os.getpid()))
    while (msg := rx.recv()) is not None:  # None: the parent's close()
      tag, extracted, reference, timeout_s = msg
      tx.send((tag, *_verify_soft(extracted, reference, timeout_s)))
  except (EOFError, OSError):  # the parent is gone (or dropped the Grader unclosed)
    pass


_WORKER_CODE = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='ceeh_grading_worker')"
                "['_worker_main'](*map(int, sys.argv[2:5]))")


class _Worker:
  """One worker process (running this file by path: no package imports) and our pipe ends."""

  def __init__(self, memory_limit_mb: int | None):
    from_parent, to_child = os.pipe()
    from_child, to_parent = os.pipe()
    self.proc = subprocess.Popen(
        [sys.executable, '-c', _WORKER_CODE, _THIS_FILE, str(from_parent), str(to_parent),
         str(memory_limit_mb or 0)],
        pass_fds=(from_parent, to_parent), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    for fd in (from_parent, to_parent):  # the child's ends
      os.close(fd)
    self.tx = mp_connection.Connection(to_child, readable=False)
    self.rx = mp_connection.Connection(from_child, writable=False)
    # task: index of the (answer, reference) pair it is verifying, due by `deadline`.
    self.ready, self.started, self.task, self.deadline = False, time.monotonic(), None, 0.0

  def stop(self, graceful: bool) -> None:
    if graceful:  # ask it to exit; kill it if it does not within 2 s
      with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        self.tx.send(None)
        self.proc.wait(timeout=2.0)
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()
    self.tx.close()
    self.rx.close()


class Grader:
  """A persistent pool of grading processes with a hard per-response time bound.

    with Grader(num_workers=2, timeout_s=5.0) as grader:
      grades = grader.grade_batch(texts, answers)   # list[Grade]; grader.last_stats.timeouts

  A response a worker has picked up takes at most `timeout_s + kill_grace_s`. Workers start
  in the background in `__init__`; `num_workers=0` grades in this process (soft bound only).
  Never raises for response content; RuntimeError only when workers cannot start at all.
  """

  def __init__(self, num_workers: int = 2, timeout_s: float = 5.0, *,
               max_answer_chars: int = MAX_ANSWER_CHARS, require_think_close: bool = False,
               kill_grace_s: float = 1.0, cache_size: int = 100_000,
               memory_limit_mb: int | None = 4096, startup_timeout_s: float = 120.0):
    if num_workers < 0 or timeout_s <= 0 or kill_grace_s < 0 or max_answer_chars < 1:
      raise ValueError('Grader needs num_workers >= 0, timeout_s > 0, kill_grace_s >= 0 and '
                       f'max_answer_chars >= 1; got {num_workers}, {timeout_s}, '
                       f'{kill_grace_s}, {max_answer_chars}')
    self.num_workers, self.timeout_s, self.kill_grace_s = num_workers, timeout_s, kill_grace_s
    self.max_answer_chars, self.require_think_close = max_answer_chars, require_think_close
    self.cache_size, self.memory_limit_mb = cache_size, memory_limit_mb
    self.startup_timeout_s = startup_timeout_s
    self.stats, self.last_stats = GradeStats(), GradeStats()
    self._cache = collections.OrderedDict()  # (extracted, reference) -> correct; LRU
    self._failed_starts, self._closed = 0, False
    self._workers = [_Worker(memory_limit_mb) for _ in range(num_workers)]

  @property
  def worker_pids(self) -> list[int]:
    return [w.proc.pid for w in self._workers]

  def grade_batch(self, responses: Sequence[str], references: Sequence[str]) -> list[Grade]:
    """Grades response i against reference i; one Grade per response, in order."""
    if self._closed:
      raise RuntimeError('Grader.grade_batch called after close()')
    if len(responses) != len(references):
      raise ValueError(f'{len(responses)} responses but {len(references)} references')
    t0, stats = time.perf_counter(), GradeStats(total=len(responses))
    grades = [None] * len(responses)
    todo = {}  # (extracted, reference) -> positions: each distinct pair is verified once
    for i, (resp, ref) in enumerate(zip(responses, references)):
      done, extracted = _screen(resp, ref, self.max_answer_chars, self.require_think_close)
      if done is not None:
        grades[i] = done
      elif (extracted, ref) in self._cache:
        self._cache.move_to_end((extracted, ref))
        grades[i] = Grade(self._cache[extracted, ref], True, extracted, 'ok')
        stats.cache_hits += 1
      else:
        todo.setdefault((extracted, ref), []).append(i)
    keys = list(todo)
    for key, (correct, status) in zip(keys, self._run(keys, stats)):
      for i in todo[key]:
        grades[i] = Grade(correct, True, key[0], status)
      if status == 'ok' and self.cache_size > 0:
        self._cache[key] = correct
        if len(self._cache) > self.cache_size:
          self._cache.popitem(last=False)
    n = collections.Counter(g.status for g in grades)
    stats.correct = sum(g.correct for g in grades)
    stats.no_box, stats.timeouts, stats.errors = n['no_box'], n['timeout'], n['error']
    stats.seconds = time.perf_counter() - t0
    self.last_stats = stats
    self.stats.add(stats)
    return grades

  def _run(self, tasks: list[tuple[str, str]], stats: GradeStats) -> list[tuple[bool, str]]:
    """(correct, status) per (extracted, reference), spread over the workers."""
    if not self._workers:
      return [_verify_soft(e, r, self.timeout_s) for e, r in tasks]
    for k, w in enumerate(self._workers):
      if w.task is not None:  # busy since an interrupted call: its answer would be stale
        self._replace(k, stats)
    out = [None] * len(tasks)
    queue = collections.deque(range(len(tasks)))
    while queue or any(w.task is not None for w in self._workers):
      for k, w in enumerate(self._workers):
        if w.ready and w.task is None and queue:
          j = queue.popleft()
          try:
            w.tx.send((j, *tasks[j], self.timeout_s))
          except OSError:  # died while idle: the task never started, so it goes back
            queue.appendleft(j)
            self._replace(k, stats)
            continue
          w.task, w.deadline = j, time.monotonic() + self.timeout_s + self.kill_grace_s
      waiting = {w.rx: k for k, w in enumerate(self._workers)
                 if w.task is not None or not w.ready}
      due = min(w.deadline if w.ready else w.started + self.startup_timeout_s
                for w in map(self._workers.__getitem__, waiting.values()))
      for conn in mp_connection.wait(list(waiting), max(0.0, due - time.monotonic())):
        self._receive(waiting[conn], out, queue, stats)
      now = time.monotonic()
      for k, w in enumerate(self._workers):
        if w.task is not None and now >= w.deadline:  # hard bound: C code ignores SIGALRM
          out[w.task] = (False, 'timeout')
          self._replace(k, stats)
        elif not w.ready and now >= w.started + self.startup_timeout_s:
          raise RuntimeError(f'a grading worker did not start within {self.startup_timeout_s}'
                             ' s (is math-verify installed? its stderr is above)')
    return out

  def _receive(self, k: int, out: list, queue: collections.deque, stats: GradeStats) -> None:
    w = self._workers[k]
    try:
      msg = w.rx.recv()
    except (EOFError, OSError):  # the worker died (crashed, or killed from outside)
      if not w.ready:
        self._failed_starts += 1
        if self._failed_starts >= 3:
          raise RuntimeError('grading workers keep dying at start-up; their stderr is above')
      if w.task is not None:  # one retry elsewhere; a task that kills two workers is an error
        out[w.task] = (False, 'error') if out[w.task] == 'retried' else 'retried'
        if out[w.task] == 'retried':
          queue.appendleft(w.task)
      self._replace(k, stats)
      return
    if msg[0] == 'ready':
      w.ready, self._failed_starts = True, 0
    elif msg[0] == 'fail':
      raise RuntimeError(f'a grading worker could not load math-verify: {msg[1]}')
    else:
      out[msg[0]] = (msg[1], msg[2])
      w.task = None

  def _replace(self, k: int, stats: GradeStats) -> None:
    self._workers[k].stop(graceful=False)
    self._workers[k] = _Worker(self.memory_limit_mb)
    stats.worker_restarts += 1

  def close(self) -> None:
    """Stops the workers; idempotent. (An unclosed Grader's workers exit when its pipes are
    garbage-collected: they read EOF.)"""
    if not self._closed:
      self._closed = True
      for w in self._workers:
        w.stop(graceful=True)
      self._workers = []

  def __enter__(self) -> 'Grader':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def grade_batch(responses: Sequence[str], references: Sequence[str], timeout_s: float = 5.0,
                num_workers: int = 2, **kwargs) -> list[Grade]:
  """One-off bounded grading with a temporary `Grader` (a training loop keeps one instead)."""
  with Grader(num_workers=num_workers, timeout_s=timeout_s, **kwargs) as grader:
    return grader.grade_batch(responses, references)
