"""Progress of a long job as log lines: done / total, rate and ETA."""

import time

from absl import logging


class Progress:
  """Logs `done / total <unit>` with the rate and ETA at most every `interval` seconds (one log
  line each time, never a progress bar: long jobs log to files)."""

  def __init__(self, total, interval=10.0, label="scored", unit="pairs"):
    self.total, self.interval, self.label, self.unit = total, interval, label, unit
    self.done = 0
    self.start = self.last = time.time()

  def update(self, count):
    self.done += count
    now = time.time()
    if now - self.last >= self.interval or self.done >= self.total:
      self.last = now
      rate = self.pairs_per_second
      logging.info("%s %d / %d %s (%.0f%%), %.1f %s/s, ETA %.0f s", self.label, self.done,
                   self.total, self.unit, 100.0 * self.done / max(self.total, 1), rate, self.unit,
                   (self.total - self.done) / max(rate, 1e-9))

  @property
  def seconds(self):
    return time.time() - self.start

  @property
  def pairs_per_second(self):
    """Items (pairs, or whatever `unit` counts) per second so far."""
    return self.done / max(self.seconds, 1e-9)
