"""Frozen object graphs: ``shoal.freeze``, ``shoal.save``, ``shoal.load`` and the views.

``freeze(obj)`` encodes a tree of dict/list/tuple/set/frozenset/str/bytes/int/float/bool/None and
ndarray leaves into one sealed shared segment, without an intermediate pickle, and returns a
read-only view: FrozenDict (a Mapping), FrozenList and FrozenTuple (Sequences), FrozenSet (a Set).
Every process that receives the view (it pickles to a small handle) reads the same physical
pages; nothing is copied or unpickled. Nested containers come back as views, leaves as new
Python objects on every access, ndarray leaves as zero-copy read-only ``shoal.Array`` views of
the image, which pickle (with every slice of them) as a small reference, never their bytes.
``thaw()`` copies deeply: containers become builtins and arrays private writable ndarrays.

Semantics are Python's: insertion order, ``freeze(d) == d``, ``1``, ``1.0`` and ``True`` are one
key, as are ``0.0`` and ``-0.0``, and ``2**60`` and ``2.0**60``. Table hashes are the same in every
process whatever PYTHONHASHSEED (Python's numeric hash for numbers, shoal's seeded hash for
str/bytes), so a table built in one process is probed by any other.

What is native and what is pickled: the exact builtin types above, ndarrays and numpy scalars
(``np.float32(1.5)`` comes back as ``np.float32(1.5)``) are encoded natively. Other leaf values
-- including subclasses such as IntEnum members, and object-dtype arrays -- are pickled (protocol 5) and unpickled on access; ``allow_pickle=False`` refuses them
with TypeError instead. Keys must be None, bool, int, float, str, bytes or tuples/frozensets of
these (subclasses are stored as the base type); any other key type is a TypeError. A NaN key
is stored and iterated, but never found by lookup, as with a distinct NaN object in a dict.
dict subclasses freeze as dicts, set and frozenset both as FrozenSet (thaw() gives back the
kind it came from).

Hot paths (``d[k]``, ``k in d``, ``len``, iteration, ``l[i]``) are C type slots
(python/bindings/frozen_views.cpp); these classes add the collections.abc mixins, equality,
repr and pickling.
"""

from __future__ import annotations

import math
import operator
import os
import pickle
from collections.abc import ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, SupportsIndex

from . import _shoal

if TYPE_CHECKING:
    import numpy as np

# numpy is imported by the functions that meet an array leaf, not here: a process that freezes
# or reads no array (a Pool worker over a frozen dict of str) never loads it (75 ms, 6 MiB). The
# encoder finds numpy's types once numpy is in sys.modules (bindings: codec::numpy_leaf_types).

# Called first by every method below that recurses into nested views through Python (repr, ==,
# <, hash): it raises RecursionError while the C stack still has room, so a deep tree cannot
# overflow it even after sys.setrecursionlimit() was raised (docs/design/frozen.md, "Nesting").
_check_stack = _shoal.check_stack


class _KeysView(KeysView[Any]):
    __slots__ = ()
    _mapping: FrozenDict

    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iter(0)


class _ValuesView(ValuesView[Any]):
    __slots__ = ()
    _mapping: FrozenDict

    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iter(1)


class _ItemsView(ItemsView[Any, Any]):
    __slots__ = ()
    _mapping: FrozenDict

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping._iter(2)


if TYPE_CHECKING:
    _ViewBase = _shoal._FrozenViewBase
else:
    _ViewBase = object  # the real bases are the C types each view class names first


class _FrozenCommon(_ViewBase):
    """Pickling, copying and size, shared by the four views."""

    __slots__ = ()

    @property
    def nbytes(self) -> int:
        """Bytes of the whole frozen image this view belongs to."""
        return int(_shoal.frozen_owner_info(self._owner)["nbytes"])

    def handle(self) -> str:
        """The handle of the segment holding this object (pins it for transit)."""
        info = _shoal.frozen_owner_info(self._owner, True)
        if "handle" not in info:
            raise ValueError(f"a loaded file has no handle; load it again: {info['path']!r}")
        return str(info["handle"])

    def __reduce__(self) -> Any:
        where = _locator(self._owner)
        if where[0] == "segment":
            return (_rebuild_segment, (where[1], self._ref))
        return (_rebuild_file, (*where[1:], self._ref))

    def __copy__(self) -> Any:
        return self  # immutable: a copy is the object itself, as for tuple

    def __deepcopy__(self, memo: Any) -> Any:
        return self


class FrozenDict(_shoal._FrozenDictBase, _FrozenCommon, Mapping[Any, Any]):
    """A read-only dict in shared memory (a collections.abc.Mapping)."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # as dict

    def keys(self) -> KeysView[Any]:
        """A view of the keys, in insertion order (set operations as dict's)."""
        return _KeysView(self)

    def values(self) -> ValuesView[Any]:
        """A view of the values, in insertion order (nested containers as views)."""
        return _ValuesView(self)

    def items(self) -> ItemsView[Any, Any]:
        """A view of the (key, value) pairs, in insertion order."""
        return _ItemsView(self)

    def __reversed__(self) -> Iterator[Any]:
        for i in range(len(self) - 1, -1, -1):
            yield self._entry(i)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        _check_stack()
        if len(self) != len(other):
            return False
        for k, v in other.items():
            try:
                mine = self[k]
            except (KeyError, TypeError):
                return False
            if not (mine is v or mine == v):
                return False
        return True

    def __or__(self, other: object) -> dict[Any, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self, **other}

    def __ror__(self, other: object) -> dict[Any, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**other, **self}

    def __repr__(self) -> str:
        _check_stack()
        body = ", ".join(f"{k!r}: {v!r}" for k, v in self._iter(2))
        return f"FrozenDict({{{body}}})"

    def copy(self) -> dict[Any, Any]:
        """A shallow plain dict (nested containers stay views); thaw() copies deeply."""
        return dict(self._iter(2))


def _repeat_count(n: object) -> SupportsIndex:
    """`n` for `view * n`, refused as Python refuses `[1] * 2.0`."""
    if not hasattr(type(n), "__index__"):
        raise TypeError(f"can't multiply sequence by non-int of type '{type(n).__name__}'")
    return n  # type: ignore[return-value]  # it has __index__


def _seq_index(
    seq: Sequence[Any], value: Any, start: SupportsIndex, stop: SupportsIndex | None
) -> int:
    """list.index's search (negative bounds count from the end), with list's message."""
    n = len(seq)
    lo = operator.index(start)
    hi = n if stop is None else operator.index(stop)
    lo = max(lo + n, 0) if lo < 0 else lo
    hi = hi + n if hi < 0 else min(hi, n)
    for i in range(lo, hi):
        v = seq[i]
        if v is value or v == value:
            return i
    raise ValueError(f"{value!r} is not in {type(seq).__name__}")


def _seq_compare(self: Any, other: object, plain: type, view: type, op: str) -> Any:
    if isinstance(other, (plain, view)):
        _check_stack()
        a, b = plain(self), plain(other)
        return getattr(a, op)(b)
    return NotImplemented


class FrozenList(_shoal._FrozenListBase, _FrozenCommon, Sequence[Any]):
    """A read-only list in shared memory (a Sequence). Slices are plain lists."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # as list

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, FrozenList)):
            return NotImplemented
        _check_stack()
        return len(self) == len(other) and all(
            a is b or a == b for a, b in zip(self, other, strict=True)
        )

    def __lt__(self, other: object) -> bool:
        return _seq_compare(self, other, list, FrozenList, "__lt__")  # type: ignore[no-any-return]

    def __le__(self, other: object) -> bool:
        return _seq_compare(self, other, list, FrozenList, "__le__")  # type: ignore[no-any-return]

    def __gt__(self, other: object) -> bool:
        return _seq_compare(self, other, list, FrozenList, "__gt__")  # type: ignore[no-any-return]

    def __ge__(self, other: object) -> bool:
        return _seq_compare(self, other, list, FrozenList, "__ge__")  # type: ignore[no-any-return]

    def __add__(self, other: object) -> list[Any]:
        if not isinstance(other, (list, FrozenList)):
            return NotImplemented
        return [*self, *other]

    def __radd__(self, other: object) -> list[Any]:
        if not isinstance(other, list):
            return NotImplemented
        return [*other, *self]

    def __mul__(self, n: SupportsIndex) -> list[Any]:
        return list(self) * _repeat_count(n)

    def __rmul__(self, n: SupportsIndex) -> list[Any]:
        if not hasattr(type(n), "__index__"):
            return NotImplemented  # "x" * view: str's repetition then names this type
        return list(self) * n

    def index(self, value: Any, start: SupportsIndex = 0, stop: SupportsIndex | None = None) -> int:
        """The first position of `value` in [start, stop); ValueError if it is not there."""
        return _seq_index(self, value, start, stop)

    def __repr__(self) -> str:
        _check_stack()
        return f"FrozenList([{', '.join(map(repr, self))}])"

    def copy(self) -> list[Any]:
        """A shallow plain list (nested containers stay views); thaw() copies deeply."""
        return list(self)


class FrozenTuple(_shoal._FrozenTupleBase, _FrozenCommon, Sequence[Any]):
    """A read-only tuple in shared memory (a Sequence). Slices are plain tuples."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (tuple, FrozenTuple)):
            return NotImplemented
        _check_stack()
        return len(self) == len(other) and all(
            a is b or a == b for a, b in zip(self, other, strict=True)
        )

    def __hash__(self) -> int:
        _check_stack()
        return hash(tuple(self))  # equal to the plain tuple it equals

    def __lt__(self, other: object) -> bool:
        return _seq_compare(self, other, tuple, FrozenTuple, "__lt__")  # type: ignore[no-any-return]

    def __le__(self, other: object) -> bool:
        return _seq_compare(self, other, tuple, FrozenTuple, "__le__")  # type: ignore[no-any-return]

    def __gt__(self, other: object) -> bool:
        return _seq_compare(self, other, tuple, FrozenTuple, "__gt__")  # type: ignore[no-any-return]

    def __ge__(self, other: object) -> bool:
        return _seq_compare(self, other, tuple, FrozenTuple, "__ge__")  # type: ignore[no-any-return]

    def __add__(self, other: object) -> tuple[Any, ...]:
        if not isinstance(other, (tuple, FrozenTuple)):
            return NotImplemented
        return (*self, *other)

    def __radd__(self, other: object) -> tuple[Any, ...]:
        if not isinstance(other, tuple):
            return NotImplemented
        return (*other, *self)

    def __mul__(self, n: SupportsIndex) -> tuple[Any, ...]:
        return tuple(self) * _repeat_count(n)

    def __rmul__(self, n: SupportsIndex) -> tuple[Any, ...]:
        if not hasattr(type(n), "__index__"):
            return NotImplemented  # "x" * view: str's repetition then names this type
        return tuple(self) * n

    def index(self, value: Any, start: SupportsIndex = 0, stop: SupportsIndex | None = None) -> int:
        """The first position of `value` in [start, stop); ValueError if it is not there."""
        return _seq_index(self, value, start, stop)

    def __repr__(self) -> str:
        _check_stack()
        inner = ", ".join(map(repr, self))
        return f"FrozenTuple(({inner},))" if len(self) == 1 else f"FrozenTuple(({inner}))"


class FrozenSet(_shoal._FrozenSetBase, _FrozenCommon, AbstractSet[Any]):
    """A read-only set in shared memory (a collections.abc.Set), from a set or a frozenset.
    Set operations (``&``, ``|``, ``-``, ``^``) return plain frozensets."""

    __slots__ = ()

    @classmethod
    def _from_iterable(cls, it: Any) -> frozenset[Any]:
        return frozenset(it)

    def __hash__(self) -> int:
        _check_stack()
        return hash(frozenset(self))  # equal to the plain frozenset it equals

    def __repr__(self) -> str:
        _check_stack()
        return f"FrozenSet({{{', '.join(map(repr, self))}}})" if len(self) else "FrozenSet()"


# ---- numpy leaves ---------------------------------------------------------------------------
_ORDER_C, _ORDER_F, _ORDER_SCALAR = 0, 1, 2  # layout::kNdOrder* (src/layout/frozen_layout.hpp)


def _ndarray_parts(a: np.ndarray | np.generic) -> tuple[str, int, tuple[int, ...], int, Any] | None:
    """(descr, itemsize, shape, order, contiguous buffer) of an array or numpy scalar leaf;
    None: pickle it (object dtype)."""
    import numpy as np

    from ._array import _descr_of

    if a.dtype.hasobject:
        return None
    if isinstance(a, np.generic):
        one = np.asarray(a).reshape(1)  # the scalar's one element, in its own memory
        buf = one.view(np.uint8).data  # raw bytes: datetime and str dtypes have no buffer format
        return _descr_of(one.dtype), int(one.dtype.itemsize), (), _ORDER_SCALAR, buf
    fortran = bool(a.flags.f_contiguous and not a.flags.c_contiguous and a.ndim > 1)
    data = np.asfortranarray(a) if fortran else np.ascontiguousarray(a)
    buf = data.reshape(-1, order="F" if fortran else "C").view(np.uint8).data
    order = _ORDER_F if fortran else _ORDER_C
    return _descr_of(a.dtype), int(a.dtype.itemsize), tuple(a.shape), order, buf


class _Leaf:
    """Where the elements of a shoal.Array read out of a frozen image live: the image (its
    FrozenImage owner) and the leaf's ref in it. An Array keeps it as its origin, so that the
    array and every view of it pickle as (where the image is, ref, view) instead of bytes."""

    __slots__ = ("owner", "ref")

    def __init__(self, owner: Any, ref: int) -> None:
        self.owner = owner
        self.ref = ref

    def reduce(self, arr: np.ndarray, base: int) -> tuple[Any, ...]:
        """Array.__reduce__ for `arr`, whose leaf starts at address `base` in this process."""
        from ._array import _descr_of

        offset = arr.__array_interface__["data"][0] - base
        view = (offset, arr.shape, arr.strides, _descr_of(arr.dtype))
        return (_rebuild_leaf, (_locator(self.owner), self.ref, view))


def _ndarray_leaf(
    owner: Any, ref: int, offset: int, nbytes: int, descr: str, shape: tuple[int, ...], order: int
) -> Any:
    """A read-only shoal.Array over an image's bytes (the owner's buffer keeps the mapping
    alive), or the numpy scalar a scalar leaf holds."""
    import numpy as np

    from ._array import Array, _dtype_from_descr

    dtype = _dtype_from_descr(descr)
    # The node's own itemsize matched its byte count (F5), but the descr text is a separate
    # field: a corrupt one may name a dtype of another size, which numpy would refuse with a
    # bare ValueError from reshape.
    if dtype.itemsize * math.prod(shape) != nbytes or dtype.hasobject:
        raise _shoal.DecodeError(
            f"frozen ndarray at byte {offset}: dtype {descr} times shape {shape} is not its "
            f"{nbytes} bytes, or holds Python objects (the image is corrupt)"
        )
    count = nbytes // dtype.itemsize if dtype.itemsize else 0
    flat = np.frombuffer(owner, dtype=dtype, count=count, offset=offset)
    if order == _ORDER_SCALAR:
        return flat[0]
    arr = flat.reshape(shape, order="F" if order == _ORDER_F else "C").view(Array)
    base = flat.__array_interface__["data"][0]
    arr._shoal_ref = (_Leaf(owner, ref), base, base + nbytes)
    return arr


_NATIVE = (
    "dict, list, tuple, set, frozenset, str, bytes, int, float, bool, None, numpy arrays "
    "and numpy scalars"
)


def _dumps(obj: Any) -> bytes:
    """The pickle fallback for a leaf of no native type; a leaf that will not pickle gets a
    TypeError saying what happened and what to do."""
    try:
        return pickle.dumps(obj, protocol=5)
    except (MemoryError, RecursionError):
        raise
    except Exception as e:
        name = type(obj).__name__
        hint = ""
        try:
            memoryview(obj)
            hint = " (for a buffer: bytes(x), or numpy.frombuffer(x, numpy.uint8))"
        except TypeError:
            pass
        raise TypeError(
            f"shoal cannot share a {name}: it is not one of the types shoal encodes natively "
            f"({_NATIVE}), so it falls back to pickling, and pickling it failed ({e}). Pass a "
            f"supported type{hint} or make it picklable; allow_pickle=False refuses every "
            "non-native leaf up front"
        ) from e


_shoal._frozen_init(
    FrozenDict,
    FrozenList,
    FrozenTuple,
    FrozenSet,
    None,  # (numpy.ndarray, numpy.generic): found by the encoder once numpy is imported
    _ndarray_parts,
    _ndarray_leaf,
    _dumps,
    pickle.loads,
)


# ---- public functions ----------------------------------------------------------------------
def freeze(obj: Any, *, allow_pickle: bool = True) -> Any:
    """Encode `obj` into shared memory once and return a read-only view of it.

    dict -> FrozenDict, list -> FrozenList, tuple -> FrozenTuple, set/frozenset -> FrozenSet;
    a leaf (str, int, ndarray, ...) at the root comes back as the decoded leaf. The view pickles
    to a small handle, so it can be passed to any process, under any start method.
    """
    return _shoal.frozen_freeze(obj, allow_pickle)


def save(obj: Any, path: str | os.PathLike[str], *, allow_pickle: bool = True) -> None:
    """Write `obj` (a tree as for freeze(), or an ndarray) to a file in the frozen layout.

    The file is written under a temporary name, fsynced and renamed into place, read-only
    (0444, less what the umask removes: 0400 under umask 077), so a reader never sees it half
    written. shoal.load() maps it in O(1).
    """
    _shoal.frozen_save(obj, os.fspath(path), allow_pickle)


def load(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Any:
    """Map a file written by shoal.save() read-only and return its view (or its ndarray).

    O(1): only the header is read now; every other offset is checked when it is read, so a
    corrupt file raises shoal.DecodeError on access. Every process that loads the file shares
    one page-cache copy. Files holding pickled leaves are refused (ValueError) unless
    allow_pickle=True, as numpy.load does: unpickling runs arbitrary code.
    """
    owner = _shoal.frozen_owner_load(os.fspath(path), allow_pickle)
    return _shoal.frozen_root(owner)


# ---- pickling glue (names are part of every pickle: keep them stable) -----------------------
# _rebuild_segment is the "frozen" kind's reconstructor in shoal._kinds.
def _locator(owner: Any) -> tuple[Any, ...]:
    """Where an image is, for a pickle: ("segment", pinned or held handle) or ("file", path, st_dev,
    st_ino, st_size, allow_pickle)."""
    info = _shoal.frozen_owner_info(owner, send=True)  # held inside shoal.hold, else pinned
    if "handle" in info:
        return ("segment", info["handle"])
    # The file as it was loaded: one replaced at the same path since is refused on unpickling.
    return ("file", info["path"], info["dev"], info["ino"], info["size"], info["allow_pickle"])


def _owner_at(where: tuple[Any, ...]) -> Any:
    """The FrozenImage a _locator() tuple names, in this process."""
    if where[0] == "segment":
        return _shoal.frozen_owner_from_segment(_shoal.Segment.attach(where[1]))
    _, path, dev, ino, size, allow_pickle = where
    st = os.stat(path)
    if (st.st_dev, st.st_ino, st.st_size) != (dev, ino, size):
        raise _shoal.StaleHandleError(
            f"{path!r} is no longer the file this frozen view was loaded from "
            "(it was replaced or changed); load it again"
        )
    return _shoal.frozen_owner_load(path, allow_pickle)


def _rebuild_segment(handle: str, ref: int) -> Any:
    return _shoal.frozen_view(_owner_at(("segment", handle)), ref)


def _rebuild_file(path: str, dev: int, ino: int, size: int, allow_pickle: bool, ref: int) -> Any:
    return _shoal.frozen_view(_owner_at(("file", path, dev, ino, size, allow_pickle)), ref)


def _rebuild_leaf(where: tuple[Any, ...], ref: int, view: tuple[Any, ...]) -> Any:
    """A pickled shoal.Array read out of a frozen image: the leaf `ref`, then the view of it
    (offset of its first element from the leaf's start, shape, strides, dtype descr), checked
    to lie inside the leaf."""
    import numpy as np

    from ._array import Array, _dtype_from_descr

    leaf = _shoal.frozen_view(_owner_at(where), ref)
    if (
        not isinstance(leaf, Array)
        or leaf._shoal_ref is None
        or not isinstance(leaf._shoal_ref[0], _Leaf)
    ):
        raise _shoal.DecodeError(f"frozen ref {ref} is not an ndarray leaf")
    offset, shape, strides, descr = view
    dtype = _dtype_from_descr(descr)
    if dtype.hasobject:
        raise _shoal.DecodeError(f"array view dtype {descr} holds Python objects")
    try:
        # numpy checks that every element the shape and strides reach lies inside the leaf.
        arr = np.ndarray(shape, dtype, buffer=leaf, offset=offset, strides=strides)
    except (TypeError, ValueError) as e:
        raise _shoal.DecodeError(f"array view does not fit its frozen leaf: {e}") from e
    out = arr.view(Array)
    out._shoal_ref = leaf._shoal_ref
    return out
