"""prefs.data.filter: consent enforced where the training data is read (SPEC section 10).

`prefs.data.filter(dataset, subject_of)` returns a `TrainableView`: the samples whose subject
may be trained on under the current policy, by the same rule as `prefs.data.may_train_on`.

How a pass is detected: **every `len()` of the view, in the process that built it, starts a
new pass** (or an explicit `view.refresh()`). torch's samplers call `len(dataset)` once at
the start of every epoch, so a consent revoked or an opt-out recorded - by this process,
another one or `mlprefs data ...` - is honoured from the next epoch. A refresh costs one
aggregate query over the consent table; only when that fingerprint (or the policy) changed
are the consent rows read again, in one query, and the view rebuilt.

Workers: the view's index map lives in shared memory (a `multiprocessing` RawArray), so
DataLoader workers - forked before the sampler's `len()`, or kept alive with
`persistent_workers` - index the same map the main process just refreshed. Workers never
query the store.

Raw subject ids go no further than `subject_of`'s return value: each is turned into its
keyed pseudonym at once (to match consent rows), the view keeps only a small number per
sample, and no error message or log line names one.
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MlprefsError

if TYPE_CHECKING:
    from .privacy import DataPolicy, DataPrivacy

__all__ = [
    "NO_CONSENT",
    "OPTED_OUT",
    "DatasetNotIndexableError",
    "SubjectIdError",
    "TrainableView",
    "ViewChangedError",
    "decide",
]

log = logging.getLogger(__name__)

NO_CONSENT = "no consent"
OPTED_OUT = "opted out"
_REASONS = ("", NO_CONSENT, OPTED_OUT)  # decision codes 0 (kept), 1, 2
# Changes whenever a consent row is added, rewritten or deleted (any process, any backend).
_FINGERPRINT = ("SELECT COUNT(*), MAX(updated_at), SUM(updated_at), SUM(consented), "
                "SUM(opted_out) FROM consent")
_ROWS = "SELECT subject, consented, opted_out, updated_at FROM consent"
_HEAD = 2  # shared slots before the index map: [0] length, [1] generation


class DatasetNotIndexableError(MlprefsError, TypeError):
    """prefs.data.filter was given something without len() and integer indexing."""

    def __init__(self, dataset: Any, missing: str) -> None:
        self.dataset_type = type(dataset).__name__
        super().__init__(
            f"prefs.data.filter needs a map-style dataset (len() and dataset[i]); a "
            f"{self.dataset_type} has no {missing}. Wrap an iterable or stream in a list or a "
            "torch Dataset with __len__ and __getitem__ first")


class SubjectIdError(MlprefsError, ValueError):
    """subject_of failed for a sample, or returned something that is not a subject id."""

    def __init__(self, index: int, problem: str) -> None:
        self.index = index
        super().__init__(f"prefs.data.filter: subject_of {problem} for sample {index}; it must "
                         "return that sample's subject id as a non-empty str "
                         "(e.g. subject_of=lambda sample: str(sample['user_id']))")


class ViewChangedError(MlprefsError, IndexError):
    """An index past the end of the view, or a dataset whose length changed under the view."""


def decide(policy: DataPolicy, row: tuple[Any, Any] | None) -> int:
    """0 may train, 1 no consent, 2 opted out: prefs.data.may_train_on's rule, for one
    consent row (consented, opted_out) or None when nothing is recorded."""
    if row is None:
        return 1 if policy.user_consent_required else 0
    consented, opted_out = row
    if opted_out:
        return 2
    return 1 if policy.user_consent_required and not consented else 0


class TrainableView:
    """The samples of `dataset` that may be trained on now; a torch-compatible Dataset."""

    def __init__(self, data: DataPrivacy, store: Any, dataset: Any,
                 subject_of: Callable[[Any], Any]) -> None:
        if not callable(subject_of):
            raise TypeError("prefs.data.filter(dataset, subject_of): subject_of must be a "
                            f"function of one sample, got {type(subject_of).__name__}")
        for attr, what in (("__len__", "len()"), ("__getitem__", "indexing (dataset[i])")):
            if not hasattr(type(dataset), attr):
                raise DatasetNotIndexableError(dataset, what)
        self._data: DataPrivacy | None = data
        self._store: Any = store
        self._dataset = dataset
        self._owner = os.getpid()
        self._size = len(dataset)
        self._slot_of, self._pseudonyms = _scan(dataset, self._size, subject_of, data.pseudonym)
        self._rows: list[tuple[Any, Any] | None] = [None] * len(self._pseudonyms)
        self._fingerprint: Any = None
        self._policy: Any = None
        self._excluded: dict[str, int] = {}
        from multiprocessing.sharedctypes import RawArray  # shared with forked workers

        self._array = RawArray("q", self._size + _HEAD)
        self._map = memoryview(self._array).cast("B").cast("q")
        self.refresh()

    # -- the Dataset protocol (the hot path) --------------------------------------------
    def __len__(self) -> int:
        """Starts a new pass in the process that built the view: consent is read again."""
        if os.getpid() == self._owner:
            self.refresh()
        return self._map[0]

    def __getitem__(self, index: int) -> Any:
        shared = self._map
        n = shared[0]
        if index < 0:
            index += n
        if 0 <= index < n:
            return self._dataset[shared[index + _HEAD]]
        raise self._out_of_range(index, n)

    def _out_of_range(self, index: Any, n: int) -> Exception:
        try:
            operator.index(index)
        except TypeError:
            return TypeError(f"a filtered view is indexed by int, not {type(index).__name__}")
        return ViewChangedError(
            f"index {index} is out of range for the filtered view of {n} sample(s); if len() "
            "was called in the middle of a pass while consent changed, the view was refreshed "
            "under the sampler: call len(loader) before the epoch's loop, not inside it")

    # -- passes ---------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Start a new pass now: apply the current policy and consent; True if the view changed."""
        data = self._data
        if data is None or os.getpid() != self._owner:
            raise MlprefsError("a filtered view refreshes only in the process that built it "
                               "(a DataLoader worker reads the main process's view)")
        if len(self._dataset) != self._size:
            raise ViewChangedError(
                f"the dataset had {self._size} samples when prefs.data.filter scanned it and has "
                f"{len(self._dataset)} now; call prefs.data.filter again on the changed dataset")
        policy = data.policy
        fingerprint = tuple(self._store.query(_FINGERPRINT)[0])
        if fingerprint == self._fingerprint and policy == self._policy:
            return False
        if fingerprint != self._fingerprint:
            self._rows = self._read_rows(data)
            self._fingerprint = fingerprint
        self._policy = policy
        return self._rebuild(policy)

    def _read_rows(self, data: DataPrivacy) -> list[tuple[Any, Any] | None]:
        """Every consent row, in one query, matched to our subjects by pseudonym. A row may be
        keyed by the raw id (written while anonymisation was off): like may_train_on, the
        newest row of either form counts."""
        slot_by = {p: i for i, p in enumerate(self._pseudonyms)}
        newest: dict[int, tuple[float, tuple[Any, Any]]] = {}
        pseudonym = data.pseudonym
        for subject, consented, opted_out, at in self._store.query(_ROWS):
            slot = slot_by.get(subject)
            if slot is None:
                slot = slot_by.get(pseudonym(subject))
                if slot is None:
                    continue
            seen = newest.get(slot)
            if seen is None or at > seen[0]:
                newest[slot] = (at, (consented, opted_out))
        rows: list[tuple[Any, Any] | None] = [None] * len(self._pseudonyms)
        for slot, (_, row) in newest.items():
            rows[slot] = row
        return rows

    def _rebuild(self, policy: DataPolicy) -> bool:
        codes = bytes(decide(policy, row) for row in self._rows)
        keep = [i for i, slot in enumerate(self._slot_of) if not codes[slot]]
        counts = [0, 0, 0]
        if len(keep) < self._size:
            for slot in self._slot_of:
                counts[codes[slot]] += 1
        excluded = {_REASONS[c]: n for c, n in enumerate(counts) if c and n}
        shared = self._map
        if len(keep) == shared[0] and all(shared[i + _HEAD] == v for i, v in enumerate(keep)):
            self._excluded = excluded
            return False
        shared[0] = 0  # a worker reading mid-rebuild sees an empty view, never a torn one
        for i, v in enumerate(keep):
            shared[i + _HEAD] = v
        shared[1] += 1
        shared[0] = len(keep)
        self._excluded = excluded
        log.info("mlprefs: data filter: %d of %d samples may be trained on (excluded: %s)",
                 len(keep), self._size, excluded or "none")
        return True

    # -- what the view holds ----------------------------------------------------------------
    @property
    def excluded(self) -> Mapping[str, int]:
        """Samples left out in the current pass, by reason ("no consent", "opted out")."""
        return dict(self._excluded)

    @property
    def dataset(self) -> Any:
        return self._dataset

    @property
    def generation(self) -> int:
        """How many times the set of samples has changed (1 after the first pass)."""
        return self._map[1]

    def indices(self) -> list[int]:
        """The dataset indices of the samples in the view, in order (this pass)."""
        shared = self._map
        return [shared[i + _HEAD] for i in range(shared[0])]

    def __repr__(self) -> str:
        return (f"<TrainableView {self._map[0]} of {self._size} samples, "
                f"excluded={self._excluded}>")

    # -- workers started with spawn / forkserver get a copy without the client --------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_data", "_store", "_map", "_rows", "_policy", "_fingerprint"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._data = self._store = None
        self._map = memoryview(self._array).cast("B").cast("q")


def _scan(dataset: Any, size: int, subject_of: Callable[[Any], Any],
          pseudonym: Callable[[str], str]) -> tuple[Sequence[int], list[str]]:
    """One pass over the dataset: per sample a subject slot, per slot a pseudonym. Raw ids
    live only in this function's memo, which is dropped when it returns."""
    from array import array

    slot_of = array("q", bytes(8 * size))
    pseudonyms: list[str] = []
    memo: dict[str, int] = {}
    for i in range(size):
        try:
            sample = dataset[i]
        except Exception as e:
            e.add_note(f"(prefs.data.filter was reading sample {i} of {size} to find its subject)")
            raise
        try:
            subject = subject_of(sample)
        except Exception as e:
            raise SubjectIdError(i, f"raised {type(e).__name__}") from e
        slot = memo.get(subject) if type(subject) is str else None
        if slot is None:
            if not isinstance(subject, str):
                raise SubjectIdError(i, f"returned a {type(subject).__name__}")
            if not subject.strip():
                raise SubjectIdError(i, "returned an empty string")
            slot = memo[subject] = len(pseudonyms)
            pseudonyms.append(pseudonym(subject))
        slot_of[i] = slot
    return slot_of, pseudonyms
