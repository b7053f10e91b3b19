"""ca/store/group_commit.py: callers share transactions, failures stay with their caller, and
a caller left waiting gets a StoreError instead of hanging."""
from __future__ import annotations

import threading
import time

import pytest

from ca.errors import StoreError
from ca.store.group_commit import GroupCommitter


class Log:
    """A transaction that can be held open and made to refuse one item."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.refuse: int | None = None

    def __call__(self, items: list[int], deadline: float | None = None) -> None:
        self.entered.set()
        assert self.hold.wait(10)
        if self.refuse in items:
            raise ValueError(f"item {self.refuse} refused")
        self.batches.append(list(items))


def _submit_in_thread(committer: GroupCommitter[int], item: int,
                      errors: dict[int, BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            committer.submit(item)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors[item] = exc
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _behind_a_held_leader(log: Log, committer: GroupCommitter[int],
                          items: list[int]) -> dict[int, BaseException]:
    """Item 0 leads and is held inside its transaction until ``items`` are all queued behind
    it; then everything runs to the end. The errors each caller got, by item."""
    log.hold.clear()
    errors: dict[int, BaseException] = {}
    first = _submit_in_thread(committer, 0, errors)
    assert log.entered.wait(5)
    others = [_submit_in_thread(committer, i, errors) for i in items]
    while len(committer._pending) < len(items):  # noqa: SLF001 - all queued behind 0
        threading.Event().wait(0.01)
    log.hold.set()
    for thread in (first, *others):
        thread.join(10)
    return errors


def test_waiting_callers_share_the_next_transaction() -> None:
    log = Log()
    committer = GroupCommitter(log, max_batch=3)
    assert not _behind_a_held_leader(log, committer, [1, 2, 3, 4, 5])
    assert log.batches[0] == [0]
    assert sorted(i for batch in log.batches[1:] for i in batch) == [1, 2, 3, 4, 5]
    assert [len(batch) for batch in log.batches[1:]] == [3, 2]  # max_batch, then the rest
    assert committer.commits == 3


def test_a_failing_record_fails_only_its_caller() -> None:
    log = Log()
    log.refuse = 2
    errors = _behind_a_held_leader(log, GroupCommitter(log), [1, 2, 3])
    assert list(errors) == [2] and "item 2 refused" in str(errors[2])
    assert sorted(i for batch in log.batches for i in batch) == [0, 1, 3]


def test_a_caller_left_waiting_gets_a_store_error_and_its_record_is_withdrawn() -> None:
    log = Log()
    committer = GroupCommitter(log, timeout=0.3)
    log.hold.clear()
    errors: dict[int, BaseException] = {}
    first = _submit_in_thread(committer, 0, errors)
    assert log.entered.wait(5)
    with pytest.raises(StoreError, match="did not commit within 0.3 s"):
        committer.submit(1)
    log.hold.set()
    first.join(10)
    committer.submit(2)
    assert log.batches == [[0], [2]]  # 1 was withdrawn: never written after its caller gave up


def test_a_leader_interrupted_mid_transaction_leaves_no_caller_believing_it_committed() -> None:
    """A BaseException in the leader (KeyboardInterrupt, SystemExit) ends its transaction
    unfinished; the callers whose records were in it get a StoreError, not a silent return."""
    log = Log()

    def transaction(items: list[int], deadline: float) -> None:
        log(items)
        if len(log.batches) == 2:  # the second transaction: 1 and 2 together
            raise KeyboardInterrupt

    errors = _behind_a_held_leader(log, GroupCommitter(transaction), [1, 2])
    assert 0 not in errors and log.batches == [[0], [1, 2]]
    leader, follower = sorted((1, 2), key=lambda i: isinstance(errors[i], KeyboardInterrupt),
                              reverse=True)
    assert isinstance(errors[leader], KeyboardInterrupt)
    assert isinstance(errors[follower], StoreError) and "interrupted" in str(errors[follower])


def test_an_interrupted_retry_leaves_the_records_after_it_unrecorded() -> None:
    """The batch [1, 2, 3] fails (2 is refused), so each is retried alone; an interruption
    while 1 is retried ends the leader there: 2 and 3, never committed, get a StoreError."""
    log = Log()
    log.refuse = 2

    def transaction(items: list[int], deadline: float) -> None:
        log(items)
        if items == [1]:
            raise SystemExit

    errors = _behind_a_held_leader(log, GroupCommitter(transaction), [1, 2, 3])
    assert 0 not in errors and log.batches[0] == [0]
    interrupted = [i for i in (1, 2, 3) if isinstance(errors.get(i), SystemExit)]
    assert len(interrupted) == 1  # the leader of the second transaction
    for item in (1, 2, 3):
        if item not in interrupted:
            assert isinstance(errors.get(item), StoreError), (item, errors)


def _staggered(committer: GroupCommitter[int], count: int, apart: float) -> list[float]:
    """``count`` threads submitting ``apart`` seconds after each other (requests whose bytes
    arrive one after another); how long each waited for its commit."""
    took = [0.0] * count

    def submit(i: int) -> None:
        time.sleep(i * apart)
        start = time.monotonic()
        committer.submit(i)
        took[i] = time.monotonic() - start
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return took


def test_under_threads_the_leader_gathers_records_that_keep_arriving() -> None:
    """Under OS threads (gthread workers, granian) eight records arrive 5 ms apart: the leader
    waits while they keep coming, each within the quiet pause, and one transaction takes
    them all; committing at once took one transaction each."""
    batches: list[list[int]] = []
    committer = GroupCommitter(lambda items, deadline: batches.append(list(items)),
                               gather=5.0, quiet=0.25)
    _staggered(committer, 8, 0.005)
    assert committer.commits == 1 and sorted(batches[0]) == list(range(8))


def test_under_threads_a_lone_record_waits_only_the_quiet_pause() -> None:
    committer = GroupCommitter(lambda items, deadline: None, gather=10.0, quiet=0.05)
    [took] = _staggered(committer, 1, 0)
    assert committer.commits == 1 and took < 2  # the pause, not the 10-s gathering bound


def test_under_threads_gathering_is_bounded_while_records_never_stop() -> None:
    """Records 20 ms apart for 0.6 s, each within the quiet pause of the one before: the
    leader commits once its 0.1-s gathering bound is spent, not after the last record."""
    committer = GroupCommitter(lambda items, deadline: None, gather=0.1, quiet=0.5)
    took = _staggered(committer, 30, 0.02)
    assert committer.commits >= 3
    assert took[0] < 0.5
