"""SIGTERM / SIGINT during training: finish the step, save a checkpoint, stop; exit status.

A preempted job (a cluster scheduler's SIGTERM, a user's Ctrl-C) loses at most the step it was
running: the `Trainer` asks `StopRequest` after every step and, when a signal came, saves a
checkpoint of that step and returns (`interrupted_by` in its summary). Run the same command again
to resume from it. `exit_if_interrupted` gives command-line tools the exit status 128 + signal.
"""

import signal
import sys
import threading

from absl import logging


class StopRequest:
  """SIGTERM / SIGINT during training, remembered and acted on after the current step.

  A context manager: it installs its handler for both signals (main thread only; elsewhere it
  does nothing) and puts the previous handlers back on exit. A second SIGINT while one is pending
  raises KeyboardInterrupt (the user insists).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_number = None
    self._previous = {}

  @property
  def signal_name(self):
    return None if self.signal_number is None else signal.Signals(self.signal_number).name

  def _handle(self, signal_number, frame):  # pylint: disable=unused-argument
    if self.signal_number == signal.SIGINT and signal_number == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_number = signal_number
    logging.warning("%s received: the run saves a checkpoint after the current step and stops",
                    self.signal_name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signal_number in self.SIGNALS:
        self._previous[signal_number] = signal.signal(signal_number, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signal_number, handler in self._previous.items():
      signal.signal(signal_number, handler)
    self._previous = {}


def exit_if_interrupted(summary, command):
  """For command-line tools: a run stopped by a signal exits with 128 + its number, one line."""
  if summary.get("interrupted_by"):
    name = summary["interrupted_by"]
    print(f"{command}: {name} at step {summary['final_step']}: checkpoint "
          f"{summary['checkpoint']} written; run the same command again to resume",
          file=sys.stderr)
    sys.exit(128 + int(getattr(signal, name)))
