"""Metadata filters: a small JSON filter language compiled to a boolean mask over an index's pids.

A filter is a dict whose keys name fields of the stored ``metadata`` (or ``$id``, the document's
own id) and whose values are either a plain value (equality) or a dict of operators; the conditions
of all keys must hold (AND)::

    {"lang": "en", "year": {"$gte": 2000, "$lt": 2010}, "tag": {"$in": ["a", "b"]}, "$id": {"$ne": "x"}}

Operators: ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``, ``$nin``, ``$exists``.
Operands are JSON scalars (strings, numbers, booleans, null); ``$in``/``$nin`` take a list of them
and ``$exists`` a boolean. The matching rules follow MongoDB's:

- a field holding a list matches when any element matches (``{"tag": "a"}`` finds ``["a", "b"]``),
  and ``$ne``/``$nin`` are the exact negation of ``$eq``/``$in`` (so they also match a missing field);
- numbers compare with numbers (as 64-bit floats), strings with strings (ranges on ISO dates work),
  booleans only equal booleans (``true`` is not ``1``); a value of another type never matches;
- ``null`` equals a stored null or a missing field.

Cost: the first filter on a field reads the whole document store once (one JSON parse per document)
and keeps that field as numpy columns, about 20 bytes per stored value; the columns are cached per
``Index`` object and read again only after documents are added (deletes do not invalidate them).
Evaluating a filter is then vectorised numpy work over the stored values of its fields.

Example:
    >>> spec = compile_filter({"lang": "en", "year": {"$gte": 2000}})
    >>> spec.fields
    ('lang', 'year')
    >>> compile_filter({"year": {"$between": [1, 2]}})
    Traceback (most recent call last):
    ...
    flmr.search.filters.FilterError: filter field 'year': unknown operator '$between' (known: $eq, $exists, \
$gt, $gte, $in, $lt, $lte, $ne, $nin)
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from flmr.search.errors import SearchError

if TYPE_CHECKING:  # torch and the index load on use, so that the command line checks filters quickly
    import torch

    from flmr.index.index import Index
    from flmr.index.sharded import ShardedIndex

ID_FIELD = "$id"
RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", *RANGE_OPERATORS)
Scalar = str | int | float | bool | None


class FilterError(SearchError):
    """A filter that is not valid; the message names the field and operator at fault."""


@dataclass(frozen=True)
class _Condition:
    field: str
    operator: str
    operand: Any


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: ``spec`` is a dict
class MetadataFilter:
    """A validated filter: call ``mask(index)`` for the live documents it matches.

    Build it with ``compile_filter``; ``spec`` is the normalised dict it came from.
    """

    spec: dict[str, Any]
    conditions: tuple[_Condition, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.field for c in self.conditions))

    def mask(self, index: Index | ShardedIndex) -> torch.Tensor:
        """(num_documents,) bool tensor: True for the documents that match and are not deleted (global
        pids of a sharded index: its shards' masks end to end)."""
        import torch

        from flmr.index.sharded import ShardedIndex

        if isinstance(index, ShardedIndex):
            return torch.cat([self.mask(shard) for shard in index.shards])
        columns = _columns_for(index, self.fields)
        matched = ~index.deleted.numpy()
        for condition in self.conditions:
            matched &= columns[condition.field].evaluate(condition.operator, condition.operand)
        return torch.from_numpy(matched)


def compile_filter(spec: Mapping[str, Any] | MetadataFilter | None) -> MetadataFilter | None:
    """Validate a filter dict (see the module docstring) and compile it; ``None`` stays ``None``.

    Raises ``FilterError`` naming the bad field and operator.

    Example:
        >>> compile_filter({"tag": {"$in": ["a", "b"]}}).conditions[0].operator
        '$in'
        >>> compile_filter({"year": {"$gt": [1]}})
        Traceback (most recent call last):
        ...
        flmr.search.filters.FilterError: filter field 'year': $gt takes a number or a string, got [1]
    """
    if spec is None or isinstance(spec, MetadataFilter):
        return spec
    if not isinstance(spec, Mapping):
        raise FilterError(f"a filter is a JSON object of field conditions, got {type(spec).__name__}")
    conditions = []
    for name, value in spec.items():
        if not isinstance(name, str) or not name:
            raise FilterError(f"filter field names are non-empty strings, got {name!r}")
        if name.startswith("$") and name != ID_FIELD:
            raise FilterError(
                f"filter field {name!r}: top-level keys are metadata fields or {ID_FIELD!r} "
                "(conditions on several fields are always combined with AND)"
            )
        operators = value if isinstance(value, Mapping) else {"$eq": value}
        if not operators:
            raise FilterError(f"filter field {name!r}: empty condition")
        for operator, operand in operators.items():
            conditions.append(_Condition(name, operator, _checked_operand(name, operator, operand)))
    return MetadataFilter(dict(spec), tuple(conditions))


def parse_filter(text: str | None) -> MetadataFilter | None:
    """Compile a filter given as JSON text (command line, query string); ``FilterError`` if invalid.

    Example:
        >>> parse_filter('{"lang": "en"}').spec
        {'lang': 'en'}
    """
    if text is None or not text.strip():
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise FilterError(f"the filter is not valid JSON: {error}") from None
    return compile_filter(spec)


def _checked_operand(name: str, operator: str, operand: Any) -> Any:
    where = f"filter field {name!r}"
    if operator not in OPERATORS:
        raise FilterError(f"{where}: unknown operator {operator!r} (known: {', '.join(sorted(OPERATORS))})")
    if operator == "$exists":
        if not isinstance(operand, bool):
            raise FilterError(f"{where}: $exists takes true or false, got {operand!r}")
        return operand
    if operator in ("$in", "$nin"):
        if not isinstance(operand, list) or not all(_is_scalar(v) for v in operand):
            raise FilterError(f"{where}: {operator} takes a list of strings, numbers, booleans or nulls")
        return tuple(operand)
    if operator in RANGE_OPERATORS:
        if isinstance(operand, bool) or not isinstance(operand, (int, float, str)):
            raise FilterError(f"{where}: {operator} takes a number or a string, got {operand!r}")
        return operand
    if not _is_scalar(operand):
        raise FilterError(f"{where}: {operator} takes a string, number, boolean or null, got {operand!r}")
    return operand


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# -- columns ---------------------------------------------------------------------------------------
@dataclass
class _Column:
    """Every stored value of one field as (pid, value) entries, split by type into numpy arrays.

    A list value contributes one entry per element; a missing field contributes none.
    """

    num_documents: int
    present: np.ndarray  # bool per pid: the field exists (even as null or a list)
    number_pids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    numbers: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    string_pids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    string_codes: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    vocabulary: list[str] = field(default_factory=list)  # string_codes index into it
    bool_pids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    bools: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    null_pids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def evaluate(self, operator: str, operand: Any) -> np.ndarray:
        """Bool per pid: the field satisfies ``operator operand``."""
        if operator == "$exists":
            return self.present.copy() if operand else ~self.present
        if operator == "$ne":
            return ~self._any_equal((operand,))
        if operator == "$nin":
            return ~self._any_equal(operand)
        if operator == "$eq":
            return self._any_equal((operand,))
        if operator == "$in":
            return self._any_equal(operand)
        compare = _RANGE_TESTS[operator]
        if isinstance(operand, str):
            return self._mark_strings(lambda value: compare(value, operand))
        return self._mark(self.number_pids, compare(self.numbers, float(operand)))

    def _any_equal(self, operands: tuple[Scalar, ...]) -> np.ndarray:
        matched = np.zeros(self.num_documents, bool)
        numbers = [float(v) for v in operands if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers:
            matched |= self._mark(self.number_pids, np.isin(self.numbers, numbers))
        strings = {v for v in operands if isinstance(v, str)}
        if strings:
            matched |= self._mark_strings(strings.__contains__)
        bools = [v for v in operands if isinstance(v, bool)]
        if bools:
            matched |= self._mark(self.bool_pids, np.isin(self.bools, bools))
        if any(v is None for v in operands):
            matched |= self._mark(self.null_pids, np.ones(self.null_pids.shape[0], bool)) | ~self.present
        return matched

    def _mark_strings(self, test: Callable[[str], bool]) -> np.ndarray:
        # the test runs once per distinct string, not once per document
        passing = np.fromiter((test(value) for value in self.vocabulary), bool, len(self.vocabulary))
        return self._mark(self.string_pids, passing[self.string_codes])

    def _mark(self, pids: np.ndarray, selected: np.ndarray) -> np.ndarray:
        matched = np.zeros(self.num_documents, bool)
        matched[pids[selected]] = True
        return matched


_RANGE_TESTS: dict[str, Callable[[Any, Any], Any]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def stored_records(index: Index | ShardedIndex) -> Iterator[dict[str, Any]]:
    """The stored fields of every document as raw dicts, in (global) pid order, read sequentially.

    Much faster than ``index.document(pid)`` per pid for whole-store scans (one open per segment).
    """
    from flmr.index.sharded import ShardedIndex

    if isinstance(index, ShardedIndex):
        for shard in index.shards:
            yield from stored_records(shard)
        return
    for segment in index.manifest["segments"]:
        with open(index.path / segment["folder"] / "documents.jsonl", "rb") as lines:
            for line in lines:
                yield json.loads(line)


def _build_columns(index: Index, names: tuple[str, ...]) -> dict[str, _Column]:
    entries: dict[str, dict[type, tuple[list[int], list[Any]]]] = {n: {} for n in names}
    present = {name: np.zeros(index.num_documents, bool) for name in names}
    for pid, record in enumerate(stored_records(index)):
        metadata = record.get("metadata") or {}
        for name in names:
            source = record if name == ID_FIELD else metadata
            key = "id" if name == ID_FIELD else name
            if key not in source:
                continue
            present[name][pid] = True
            value = source[key]
            for item in value if isinstance(value, list) else (value,):
                kind = type(None) if item is None else (float if type(item) is int else type(item))
                pids, values = entries[name].setdefault(kind, ([], []))
                pids.append(pid)
                values.append(item)
    return {name: _column(index.num_documents, present[name], entries[name]) for name in names}


def _column(num_documents: int, present: np.ndarray, entries: dict[type, tuple[list, list]]) -> _Column:
    column = _Column(num_documents, present)
    if float in entries:
        column.number_pids = np.array(entries[float][0], np.int64)
        column.numbers = np.array(entries[float][1], np.float64)
    if str in entries:
        column.string_pids = np.array(entries[str][0], np.int64)
        codes: dict[str, int] = {}
        column.string_codes = np.array([codes.setdefault(v, len(codes)) for v in entries[str][1]], np.int64)
        column.vocabulary = list(codes)
    if bool in entries:
        column.bool_pids = np.array(entries[bool][0], np.int64)
        column.bools = np.array(entries[bool][1], bool)
    if type(None) in entries:
        column.null_pids = np.array(entries[type(None)][0], np.int64)
    return column


@dataclass
class _ColumnCache:
    store_key: tuple[str | None, ...]
    columns: dict[str, _Column]


_CACHE: weakref.WeakKeyDictionary[Index, _ColumnCache] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def store_key(index: Index | ShardedIndex) -> tuple[Any, ...]:
    """Identifies the document store's contents: it changes on ``add`` and rebuilds, not on ``delete``."""
    from flmr.index.sharded import ShardedIndex

    if isinstance(index, ShardedIndex):
        return tuple(store_key(shard) for shard in index.shards)
    return (index.manifest.get("index_id"), *(segment["folder"] for segment in index.manifest["segments"]))


def _columns_for(index: Index, names: tuple[str, ...]) -> dict[str, _Column]:
    with _CACHE_LOCK:  # one scan even when concurrent requests filter on a new field
        cached = _CACHE.get(index)
        if cached is None or cached.store_key != store_key(index):
            cached = _CACHE[index] = _ColumnCache(store_key(index), {})
        missing = tuple(name for name in names if name not in cached.columns)
        if missing:
            cached.columns.update(_build_columns(index, missing))
        return {name: cached.columns[name] for name in names}
