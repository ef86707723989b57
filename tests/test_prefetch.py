"""The background prefetcher (`genrl_jax.data.prefetch`): order, errors, stopping."""

from __future__ import annotations

import threading

import pytest

from genrl_jax.data import prefetch as prefetch_lib


def _prefetch_threads() -> list[threading.Thread]:
  return [t for t in threading.enumerate() if t.name == prefetch_lib.THREAD_NAME]


def test_items_come_in_order_and_the_thread_ends():
  square = lambda n: n * n
  assert list(prefetch_lib.prefetch(square, 3, 9, size=2)) == [n * n for n in range(3, 9)]
  assert list(prefetch_lib.prefetch(square, 5, 5)) == []
  assert not _prefetch_threads()


def test_items_are_made_ahead_while_the_consumer_waits():
  """With the consumer holding item 0, the thread makes items 1.. on its own: `size` of them
  queued, one more blocked on the full queue. Waits on events, never on a clock."""
  made = {n: threading.Event() for n in range(10)}
  def make(n):
    made[n].set()
    return n
  it = prefetch_lib.prefetch(make, 0, 10, size=2)
  assert next(it) == 0
  for n in (1, 2, 3):
    assert made[n].wait(timeout=60), f"item {n} was not made ahead"
  assert not made[4].is_set()  # 1, 2 queued and 3 waiting for room: nothing beyond
  assert list(it) == list(range(1, 10))


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
  # close() returns after the thread has ended, so no call can follow: the count is final.
  assert not _prefetch_threads()
  assert 3 <= len(calls) <= 3 + 2 + 1  # taken, queued, one blocked on the full queue
