"""`preemption.StopRequest`: SIGTERM and SIGINT are remembered for after the step, a second Ctrl-C
raises KeyboardInterrupt, and the previous handlers come back on exit (in-process, real signals).
The end-to-end runs: test_training_faults.py (SIGTERM) and test_search_finetune_faults.py (SIGINT)."""

import os
import signal

import pytest

from fashionbert_tf.training import preemption


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_is_remembered_and_the_previous_handlers_come_back(signal_number):
  before = {number: signal.getsignal(number) for number in preemption.StopRequest.SIGNALS}
  with preemption.StopRequest() as stop:
    assert stop.signal_number is None
    os.kill(os.getpid(), signal_number)   # delivered before the next bytecode: no exception
    assert stop.signal_number == signal_number
    assert stop.signal_name == signal.Signals(signal_number).name
  assert {number: signal.getsignal(number) for number in preemption.StopRequest.SIGNALS} == before


def test_a_second_sigint_raises_keyboard_interrupt_but_a_sigterm_after_one_does_not():
  with preemption.StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signal_number == signal.SIGTERM
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.signal_number == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
