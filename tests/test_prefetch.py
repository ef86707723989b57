"""The background prefetcher (`genrl_jax.data.prefetch`): order, errors, stopping."""

from __future__ import annotations

import threading
import time

import pytest

from genrl_jax.data import prefetch as prefetch_lib


def _prefetch_threads() -> list[threading.Thread]:
  return [t for t in threading.enumerate() if t.name == prefetch_lib.THREAD_NAME]


def test_items_come_in_order_and_the_thread_ends():
  slow_first = lambda n: (time.sleep(0.05) if n == 3 else None, n * n)[1]
  assert list(prefetch_lib.prefetch(slow_first, 3, 9, size=2)) == [n * n for n in range(3, 9)]
  assert list(prefetch_lib.prefetch(slow_first, 5, 5)) == []
  assert not _prefetch_threads()


def test_an_error_in_the_worker_is_raised_in_the_consumer():
  def make(n):
    if n == 2:
      raise KeyError("bad batch 2")
    return n

  it = prefetch_lib.prefetch(make, 0, 10)
  assert [next(it), next(it)] == [0, 1]
  with pytest.raises(KeyError, match="bad batch 2"):
    next(it)
  assert not _prefetch_threads()


def test_stopping_early_stops_the_thread():
  calls = []
  it = prefetch_lib.prefetch(lambda n: calls.append(n) or n, 0, None, size=2)
  assert [next(it) for _ in range(3)] == [0, 1, 2]
  it.close()
  assert not _prefetch_threads()
  made = len(calls)
  assert made <= 3 + 2 + 1  # taken, queued, one blocked on the full queue
  time.sleep(0.05)
  assert len(calls) == made
