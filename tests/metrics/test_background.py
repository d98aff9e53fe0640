"""BackgroundWork: a plug-in's per-epoch work on a thread of its own, in submission order."""
import threading
import time

import pytest

from tmseeg.metrics.base import BackgroundWork


def test_items_run_in_order_on_another_thread_and_wait_finishes_them():
    work = BackgroundWork(enabled=True, max_pending=3)
    done, threads = [], set()

    def item(k):
        time.sleep(0.002 * (5 - k % 5))  # later items would overtake earlier ones if parallel
        done.append(k)
        threads.add(threading.get_ident())

    for k in range(20):
        work.submit(item, k)
    work.wait()
    assert done == list(range(20))
    assert threads and threading.get_ident() not in threads
    work.close()


def test_at_most_max_pending_wait_and_a_failure_is_raised_by_wait():
    work = BackgroundWork(enabled=True, max_pending=2)
    gate = threading.Event()
    work.submit(gate.wait)
    work.submit(lambda: None)
    t = threading.Thread(target=work.submit, args=(lambda: None,))
    t.start()
    t.join(0.2)
    assert t.is_alive()  # the third submit waits for the oldest item
    gate.set()
    t.join(5)
    assert not t.is_alive()

    def boom():
        raise RuntimeError("wavelet failed")

    work.submit(boom)
    with pytest.raises(RuntimeError, match="wavelet failed"):
        work.wait()
    work.close()


def test_disabled_runs_each_item_at_once_on_the_callers_thread():
    work = BackgroundWork(enabled=False)
    seen = []
    work.submit(lambda: seen.append(threading.get_ident()))
    assert seen == [threading.get_ident()]
    work.close()
