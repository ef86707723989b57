"""The one background prefetcher: items computed ahead in a thread while the caller works.

Used by the training loop (`train/loop.py`, host batches while the device trains) and by the
collection agents' replay (`collect/online.py`). Imports nothing but the standard library, so
that the generic `train/` package may use it.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
THREAD_NAME = "prefetch"


def prefetch(make: Callable[[int], T], start: int, stop: int | None, size: int = 2
             ) -> Iterator[T]:
  """Yields `make(n)` for `start <= n < stop` (no end when `stop` is None), in order,
  computed up to `size` items ahead in a background thread.

  An exception raised by `make` is re-raised by the `next()` that would have returned its
  item. Closing the iterator (`close()`, or dropping it) stops the thread: it waits for the
  `make` call in progress, so nothing runs in the background afterwards.
  """
  q: queue.Queue = queue.Queue(maxsize=size)
  stop_event = threading.Event()
  steps = lambda: itertools.count(start) if stop is None else range(start, stop)

  def worker():
    try:
      for n in steps():
        if stop_event.is_set():
          return
        q.put((True, make(n)))
    except BaseException as e:  # Surface errors in the consumer's thread.
      q.put((False, e))

  thread = threading.Thread(target=worker, name=THREAD_NAME, daemon=True)
  thread.start()
  try:
    for _ in steps():
      ok, item = q.get()
      if not ok:
        raise item
      yield item
  finally:
    stop_event.set()
    while thread.is_alive():  # Unblock a worker waiting on a full queue.
      try:
        q.get_nowait()
      except queue.Empty:
        thread.join(timeout=0.1)
