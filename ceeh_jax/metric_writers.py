"""Metrics to three places: a JSONL log, TensorBoard event files and the console."""
import json
import math
import os

import numpy as np


def _scalar(v):
  v = np.asarray(v)
  return float(v) if v.size == 1 else None


class MetricWriter:
  """Appends one JSON line per step to `<workdir>/metrics.jsonl` and mirrors it to TensorBoard.

  On resume, `truncate_after(step)` drops lines written after the restored checkpoint so the log
  has each step exactly once (a killed run may have logged steps it never checkpointed).
  With `enabled=False` (every process but the first of a multi-host run) nothing is written.
  """

  def __init__(self, workdir: str, tensorboard: bool = True, filename: str = 'metrics.jsonl',
               enabled: bool = True):
    self.path = os.path.join(workdir, filename)
    self.enabled = enabled
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
    if tensorboard and enabled:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, 'tb'))
      except ImportError:
        print('tensorboardX not installed: no TensorBoard event files will be written')

  def truncate_after(self, step: int) -> int:
    """Keeps only records with step <= `step`; returns how many were dropped."""
    if not self.enabled or not os.path.exists(self.path):
      return 0
    kept, dropped = [], 0
    with open(self.path) as f:
      for line in f:
        try:
          rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
          dropped += 1
          continue
        if rec.get('step', 0) <= step:
          kept.append(line if line.endswith('\n') else line + '\n')
        else:
          dropped += 1
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, self.path)
    return dropped

  def write(self, step: int, metrics: dict) -> dict:
    rec = {'step': int(step)}
    for k, v in sorted(metrics.items()):
      s = _scalar(v) if not isinstance(v, (int, float)) else float(v)
      if s is not None:
        rec[k] = s if math.isfinite(s) else str(s)
    if not self.enabled:
      return rec
    with open(self.path, 'a') as f:
      f.write(json.dumps(rec) + '\n')
      f.flush()
      os.fsync(f.fileno())
    if self._tb is not None:
      for k, v in rec.items():
        if k != 'step' and isinstance(v, float):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()
    return rec

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str, filename: str = 'metrics.jsonl') -> list[dict]:
  with open(os.path.join(workdir, filename)) as f:
    return [json.loads(line) for line in f if line.strip()]
