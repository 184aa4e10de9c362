"""``shoal.Dict`` and ``shoal.List``: a dict and a list in shared memory that every process
reads and writes in place.

The hot methods (``d[k]``, ``d[k] = v``, ``del d[k]``, ``k in d``, ``len(d)``, ``iter(d)``,
``get``, ``pop``, ``popitem``, ``setdefault``, ``clear``) are C slots of the base class
``_shoal.DictCore`` (python/bindings/dict_bind.cpp); this module adds the rest of dict's methods,
the views, the lock object and pickling. Design note: docs/design/dict.md, "The Python layer".
``shoal.List`` is built the same way over ``_shoal.ListCore`` (python/bindings/list_bind.cpp:
indexing, slices, assignment, ``len``, ``in``, ``iter`` and ``append`` in C); design note:
docs/design/list.md.
"""

from __future__ import annotations

import copy as _copy
import operator
import sys
import threading
import types
import warnings
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    MutableSequence,
    ValuesView,
)
from typing import Any, Self

from . import _glue, _shoal
from ._sync import OwnerDiedWarning, _timeout

_KEYS, _VALUES, _ITEMS = 0, 1, 2
_OK, _OWNER_DIED, _TIMEOUT = 0, 1, 2


class DictLock:
    """``d.lock``: an RLock over the dict's write lock (multiprocessing.RLock's methods).
    (``l.lock`` of a shoal.List is the same, over the list's lock: :class:`ListLock`.)

    Every write to the dict takes this same lock (recursively when the caller holds it), so a
    compound update under it is atomic against every other writer, in every process::

        with d.lock:
            d["n"] += 1

    Reads never take it and never wait for it. The holding thread may acquire it again; it is
    released when released as often as acquired. Waiting releases the GIL, and Ctrl-C raises
    KeyboardInterrupt with the lock not taken. When the previous holder died holding it, the
    acquire takes it over and warns :class:`shoal.OwnerDiedWarning`: its last single operation
    has been completed or rolled back (the dict is consistent), but a compound update it was
    making under the lock is not rolled back.
    """

    __slots__ = ("_core",)
    _name = "shoal.Dict.lock"

    def __init__(self, core: _shoal.DictCore | _shoal.ListCore) -> None:
        self._core = core

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take the lock: True; False when `timeout` seconds pass first (at once with
        block=False)."""
        s = self._core._lock(bool(block), _timeout(block, timeout))
        if s == _TIMEOUT:
            return False
        if s == _OWNER_DIED:
            warnings.warn(
                OwnerDiedWarning(
                    f"{self._name}: the previous holder died holding it (the lock is held "
                    "now); its last single operation was completed or rolled back, a compound "
                    "update it made under the lock is not rolled back"
                ),
                stacklevel=2,
            )
        return True

    def release(self) -> None:
        """Release once (InvalidArgumentError, a ValueError, when this thread does not hold
        it)."""
        self._core._unlock()

    def __enter__(self) -> bool:
        s = self._core._lock(True, -1.0)
        if s == _OWNER_DIED:
            try:
                warnings.warn(
                    OwnerDiedWarning(
                        f"{self._name}: the previous holder died holding it (the lock is "
                        "held now); a compound update it made under the lock is not rolled back"
                    ),
                    stacklevel=2,
                )
            except BaseException:
                self._core._unlock()
                raise
        return True

    def __exit__(self, *exc: object) -> None:
        self._core._unlock()

    @property
    def _count(self) -> int:
        return int(self._core._lock_depth)

    def __repr__(self) -> str:
        return f"<{self._name} count={self._count}>"


class ListLock(DictLock):
    """``l.lock``: an RLock over the list's write lock, as :class:`DictLock` is over a dict's.

    Every write to the list takes it, so ``with l.lock: l.append(len(l))`` is atomic against
    every other writer, in every process."""

    __slots__ = ()
    _name = "shoal.List.lock"


class _ViewMapping:
    """dict views' ``mapping``: a read-only proxy of the dict they view."""

    __slots__ = ()

    @property
    def mapping(self) -> Mapping[Any, Any]:
        return types.MappingProxyType(self._mapping)  # type: ignore[attr-defined]


class _DictKeys(_ViewMapping, KeysView[Any]):
    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iter(_KEYS)  # type: ignore[no-any-return, attr-defined]

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._mapping._list(_KEYS))  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"dict_keys({list(self)!r})"


class _DictValues(_ViewMapping, ValuesView[Any]):
    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iter(_VALUES)  # type: ignore[no-any-return, attr-defined]

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._mapping._list(_VALUES))  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"dict_values({list(self)!r})"


class _DictItems(_ViewMapping, ItemsView[Any, Any]):
    __slots__ = ()

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping._iter(_ITEMS)  # type: ignore[no-any-return, attr-defined]

    def __reversed__(self) -> Iterator[tuple[Any, Any]]:
        return reversed(self._mapping._list(_ITEMS))  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"dict_items({list(self)!r})"


_MISSING: Any = object()
_repr_active = threading.local()  # the shared dicts being repr'd by this thread


class Dict(_shoal.DictCore):
    """A dict in shared memory, read and written in place by every process: ``dict``'s methods
    and semantics (insertion order, ``1``, ``1.0`` and ``True`` as one key, views, ``|``,
    ``fromkeys``, ``==`` with any mapping), constructed like ``dict(...)``::

        d = shoal.Dict(a=1)
        d["b"] = "two"              # seen at once by every process that has d
        pool.map(work, [d] * 8)     # pickles as a handle: the same dict in every worker
        with d.lock:                # a compound update, atomic against every other writer
            d["n"] = d.get("n", 0) + 1

    **Keys** are the keys a FrozenDict takes: None, bool, int (any size), float, str, bytes,
    and tuples and frozensets of these (a FrozenTuple or FrozenSet key is the tuple or frozenset
    it equals). They hash as in a FrozenDict, so a key read from a FrozenDict is found in a Dict
    and the other way round. Another hashable key is TypeError when stored and simply absent
    when looked up; an unhashable one is TypeError, as dict's. An int subclass key (an IntEnum)
    is stored as its int value. A NaN key is never found again (there is no identity in shared
    memory).

    **Values** of those types are stored natively. **Nested state stays live**: a plain
    ``dict`` stored into a Dict becomes a *new* shoal.Dict, held by reference (each store
    converts afresh: later changes to the original dict are not seen), and a ``list`` a new
    shoal.List. Reading it back
    gives a shoal.Dict over the same shared dict, so ``d["a"] = {}; d["a"]["x"] = 1`` is seen
    by every process. A shoal.Dict stored into a Dict is stored as a reference to that same
    dict (``d["b"] = d["a"]``: both name one dict), as are a whole shoal.Array, the root of a
    frozen object (its segment's), and a Lock, RLock, Semaphore, Event or Value: what reads back
    is the same shared object. A referenced object lives while any entry refers to it or any
    process holds it; ``del``, an overwrite, ``pop`` and ``clear`` let go of the entry's
    reference (``pop`` returns the object). Any other value (a user class instance, a subclass
    of a builtin, a slice of an array) is stored as a *copy*, by pickling, when
    ``allow_pickle`` (the default; with ``allow_pickle=False``, TypeError): reading it back
    unpickles a new object, and later changes to it are not seen by the dict. A pickled value is
    its own stored kind: a stored bytes value never reads back as unpickled data.

    **Concurrency.** Reads never block and never see a half-done write. Each single operation
    (``d[k] = v``, ``del``, ``pop``, ``popitem``, ``setdefault``, ``clear``) is atomic across
    processes, and survives its process being killed at any instant (the next writer completes
    or rolls it back and warns :class:`shoal.OwnerDiedWarning`). ``update``, ``|=`` and
    ``fromkeys`` run under ``d.lock`` as one step for other writers. Iterating is weakly
    consistent against other processes' writes (each key present throughout is seen once, in
    insertion order, never one twice) and raises RuntimeError when this process changes the
    size meanwhile, as dict does (through this object).

    Pickling writes a handle: a Dict passed to a Process or a Pool, or through a queue, is the
    same dict in the receiver (``shoal.hold(d)`` makes repeated sends free).
    ``shoal.attach(handle)`` gives a Dict too. The memory lives while any process has it.
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, *args: Any, allow_pickle: bool = True, **kwargs: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"Dict expected at most 1 argument, got {len(args)}")
        super().__init__(None, bool(allow_pickle))
        _shoal.remember_object(self.segment(), self)
        if args or kwargs:
            self.update(*args, **kwargs)

    @classmethod
    def _from(cls, source: Any, allow_pickle: bool) -> Self:
        obj = cls.__new__(cls)
        _shoal.DictCore.__init__(obj, source, allow_pickle)
        _shoal.remember_object(obj.segment(), obj)
        return obj

    # ---- reads ----

    def keys(self) -> KeysView[Any]:
        """A view of the keys (set operations, len, ``in``), live as dict's."""
        return _DictKeys(self)

    def values(self) -> ValuesView[Any]:
        """A view of the values, live as dict's."""
        return _DictValues(self)

    def items(self) -> ItemsView[Any, Any]:
        """A view of the (key, value) pairs (set operations, len, ``in``), live as dict's."""
        return _DictItems(self)

    def __reversed__(self) -> Iterator[Any]:
        keys: list[Any] = self._list(_KEYS)
        return iter(keys[::-1])

    def copy(self) -> Dict:
        """A new shoal.Dict with the same items (a new shared object, not a plain dict). Shallow,
        as dict.copy: a nested container is the same one in both."""
        new = Dict(allow_pickle=self.allow_pickle)
        new.update(self._list(_ITEMS))
        return new

    def __copy__(self) -> Dict:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Dict:
        # A new shared dict whose nested containers are new ones too (memo: a cycle stays one).
        new = Dict(allow_pickle=self.allow_pickle)
        memo[id(self)] = new
        with new.lock:
            for k, v in self._list(_ITEMS):
                new[k] = _copy.deepcopy(v, memo)
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        mine = self._list(_ITEMS)
        if len(mine) != len(other):
            return False
        for k, v in mine:
            try:
                ov = other[k]
            except KeyError:
                return False
            if not (ov is v or ov == v):
                return False
        return True

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __repr__(self) -> str:
        # A dict that holds itself (through references) prints {1: {...}}, as dict does. The
        # guard keys on the shared object, not the Python one: two Python objects may stand
        # for one shared dict.
        me = self.segment().id
        active: set[str] | None = getattr(_repr_active, "ids", None)
        if active is None:
            active = _repr_active.ids = set()
        if me in active:
            return "{...}"
        active.add(me)
        try:
            return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in self._list(_ITEMS)) + "}"
        finally:
            active.discard(me)

    # ---- writes ----

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Like dict.update (a mapping, or an iterable of pairs, then keyword arguments), as one
        step for other writers (under ``d.lock``)."""
        if isinstance(other, Mapping) or hasattr(other, "keys"):
            pairs: Iterable[Any] = ((k, other[k]) for k in other.keys())  # noqa: SIM118
        else:
            pairs = other
        with self.lock:
            for i, kv in enumerate(pairs):
                try:
                    k, v = kv
                except (TypeError, ValueError):
                    try:
                        n = len(kv)
                    except TypeError:
                        raise TypeError(
                            f"cannot convert dictionary update sequence element #{i} to a sequence"
                        ) from None
                    raise ValueError(
                        f"dictionary update sequence element #{i} has length {n}; 2 is required"
                    ) from None
                self[k] = v
            for k, v in kwargs.items():
                self[k] = v

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> Any:
        """A new Dict (of this class) with keys from iterable, each set to value."""
        d = cls()
        with d.lock:
            for k in iterable:
                d[k] = value
        return d

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def __ror__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = Dict(other, allow_pickle=self.allow_pickle)
        new.update(self)
        return new

    def __ior__(self, other: Any) -> Self:
        self.update(other)
        return self

    # ---- the lock, pickling ----

    @property
    def lock(self) -> DictLock:
        """The dict's write lock as an RLock (see :class:`DictLock`)."""
        return DictLock(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_glue.rebuild_dict, (type(self), self.send_handle(), self.allow_pickle))

    def __class_getitem__(cls, item: Any) -> Any:
        return types.GenericAlias(cls, item)


MutableMapping.register(Dict)


def _as_index(i: Any) -> int:
    # Any int is an index; beyond 64 bits it is out of range (or clamped) either way.
    return max(-sys.maxsize, min(operator.index(i), sys.maxsize))


class List(_shoal.ListCore):
    """A list in shared memory, read and written in place by every process: ``list``'s methods
    and semantics (negative indices, slices and slice assignment with a step, ``sort(key=,
    reverse=)``, ``+``, ``*``, comparisons with lists), constructed like ``list(...)``::

        lst = shoal.List([1, 2])
        lst.append("three")         # seen at once by every process that has lst
        pool.map(work, [lst] * 8)   # pickles as a handle: the same list in every worker
        with lst.lock:              # a compound update, atomic against every other writer
            lst.append(len(lst))

    **Values** are what a :class:`shoal.Dict` value can be, converted the same way: None,
    bool, int, float, str, bytes, tuples and frozensets natively; a plain dict or list as a
    *new* shoal.Dict or shoal.List held by reference (so ``lst[0]["y"] = 2`` is seen by every
    process), a shoal container or other whole shoal object as a reference to itself; anything
    else as a *copy*, by pickling, when ``allow_pickle`` (the default; TypeError otherwise).
    Reading a pickled element back unpickles a new object.

    **Concurrency.** Reads (``lst[i]``, slices, ``len``, iteration, ``in``) never block and
    never see a half-done write; a slice or ``copy()`` is read at one instant. Each single
    operation (``append``, ``extend``, ``insert``, ``pop``, ``remove``, ``lst[i] = x``, slice
    assignment and deletion, ``clear``, ``reverse``, ``sort``, ``+=``, ``*=``) is atomic across
    processes, and survives its process being killed at any instant (the next writer completes
    or rolls it back and warns :class:`shoal.OwnerDiedWarning`). Iteration walks by index, as
    list's iterator does: against other processes' writes it may skip or repeat an element
    that moved, and always ends.

    Pickling writes a handle: a List passed to a Process or a Pool, or through a queue, is the
    same list in the receiver (``shoal.hold(lst)`` makes repeated sends free).
    ``shoal.attach(handle)`` gives a List too. The memory lives while any process has it.
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, iterable: Iterable[Any] = (), /, *, allow_pickle: bool = True) -> None:
        super().__init__(None, bool(allow_pickle))
        _shoal.remember_object(self.segment(), self)
        if not isinstance(iterable, tuple) or iterable:
            self.extend(iterable)

    @classmethod
    def _from(cls, source: Any, allow_pickle: bool) -> Self:
        obj = cls.__new__(cls)
        _shoal.ListCore.__init__(obj, source, allow_pickle)
        _shoal.remember_object(obj.segment(), obj)
        return obj

    # ---- reads ----

    def __reversed__(self) -> Iterator[Any]:
        items: list[Any] = self._items()
        return iter(items[::-1])

    def index(self, value: Any, start: Any = 0, stop: Any = sys.maxsize, /) -> int:
        """The first index of value in [start, stop) (ValueError when absent), as list.index."""
        items: list[Any] = self._items()
        try:
            return items.index(value, start, stop)
        except ValueError:
            raise ValueError(f"{value!r} is not in list") from None

    def count(self, value: Any, /) -> int:
        """How many elements equal value."""
        items: list[Any] = self._items()
        return items.count(value)

    def copy(self) -> List:
        """A new shoal.List with the same elements (a new shared object, not a plain list)."""
        return List(self._items(), allow_pickle=self.allow_pickle)

    def __copy__(self) -> List:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> List:
        # The stored values are copies already (immutable natives, or pickles that unpickle
        # afresh), so a shallow copy is a deep one.
        return self.copy()

    def __repr__(self) -> str:
        # A list that holds itself (through references) prints [[...]], as list does.
        me = self.segment().id
        active: set[str] | None = getattr(_repr_active, "ids", None)
        if active is None:
            active = _repr_active.ids = set()
        if me in active:
            return "[...]"
        active.add(me)
        try:
            return repr(self._items())
        finally:
            active.discard(me)

    @staticmethod
    def _other(other: object) -> list[Any] | None:
        if isinstance(other, List):
            items: list[Any] = other._items()
            return items
        if isinstance(other, list):
            return other
        return None

    def __eq__(self, other: object) -> bool:
        o = self._other(other)
        if o is None:
            return NotImplemented
        return bool(self._items() == o)

    def __ne__(self, other: object) -> bool:
        o = self._other(other)
        if o is None:
            return NotImplemented
        return bool(self._items() != o)

    def __lt__(self, other: object) -> bool:
        o = self._other(other)
        if o is None:
            return NotImplemented
        return bool(self._items() < o)

    def __le__(self, other: object) -> bool:
        o = self._other(other)
        if o is None:
            return NotImplemented
        return bool(self._items() <= o)

    def __gt__(self, other: object) -> bool:
        o = self._other(other)
        if o is None:
            return NotImplemented
        return bool(self._items() > o)

    def __ge__(self, other: object) -> bool:
        o = self._other(other)
        if o is None:
            return NotImplemented
        return bool(self._items() >= o)

    def __add__(self, other: Any) -> List:
        o = self._other(other)
        if o is None:
            return NotImplemented
        return List(self._items() + o, allow_pickle=self.allow_pickle)

    def __radd__(self, other: Any) -> List:
        o = self._other(other)
        if o is None:
            return NotImplemented
        return List(o + self._items(), allow_pickle=self.allow_pickle)

    def __mul__(self, n: Any) -> List:
        try:
            times = _as_index(n)
        except TypeError:
            return NotImplemented
        return List(self._items() * times, allow_pickle=self.allow_pickle)

    __rmul__ = __mul__

    # ---- writes ----

    def extend(self, iterable: Iterable[Any], /) -> None:
        """Append every element of iterable, all or none, in one step for other processes."""
        items = iterable if isinstance(iterable, (list, tuple)) else list(iterable)
        self._extend(items)

    def insert(self, index: Any, value: Any, /) -> None:
        """Insert value before index (any index: clamped, as list.insert). Atomic."""
        self._insert(_as_index(index), value)

    def pop(self, index: Any = -1, /) -> Any:
        """Remove and return the element at index (default last); IndexError when out of
        range or empty. Atomic."""
        r = self._pop(_as_index(index))
        if r is None:
            raise IndexError("pop from empty list" if len(self) == 0 else "pop index out of range")
        return r[0]

    def remove(self, value: Any, /) -> None:
        """Remove the first element equal to value (ValueError when none), as one step for
        other writers (under ``lst.lock``)."""
        with self.lock:
            for i, v in enumerate(self._items()):
                if v is value or v == value:
                    del self[i]
                    return
        raise ValueError("list.remove(x): x not in list")

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        """Sort in place, stable, with Python's comparisons (and key=, reverse= as list.sort),
        in one step for other processes: the order is computed here, under ``lst.lock``, and
        the elements are then moved in one store. A comparison that raises leaves the list
        unchanged."""
        with self.lock:
            items: list[Any] = self._items()
            keys = items if key is None else [key(v) for v in items]
            order = sorted(range(len(items)), key=keys.__getitem__, reverse=bool(reverse))
            self._permute(order)

    def __iadd__(self, other: Any) -> Self:
        self.extend(other)
        return self

    def __imul__(self, n: Any) -> Self:
        times = _as_index(n)
        with self.lock:
            self._set_all(self._items() * times)
        return self

    # ---- the lock, pickling ----

    @property
    def lock(self) -> ListLock:
        """The list's write lock as an RLock (see :class:`ListLock`)."""
        return ListLock(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_glue.rebuild_list, (type(self), self.send_handle(), self.allow_pickle))

    def __class_getitem__(cls, item: Any) -> Any:
        return types.GenericAlias(cls, item)


MutableSequence.register(List)


# The magic at the top of the header a container's heap root names (src/layout/*_layout.hpp).
_CONTAINERS: dict[bytes, type[Dict | List]] = {b"SHOALDCT": Dict, b"SHOALLST": List}


# ---- nesting: what a container stores by reference ---------------------------------------
# The bindings (python/bindings/refs.cpp) call _to_ref(value, allow_pickle) for every value that
# is not a scalar, before pickling it: a Segment makes the value a reference to that object (the
# container's root segment then holds it alive), None lets it be stored as before. What a
# reference reads back as is _from_ref(segment): the kind's attach (shoal.attach's), once per
# object per process while its Python object lives.


# What a list stored into a container becomes: a new shoal.List (a replaceable factory,
# (list, allow_pickle) -> the container), and the container types stored as references to
# themselves.
def _new_list(items: list[Any], allow_pickle: bool) -> Any:
    return List(items, allow_pickle=allow_pickle)


_list_factory: Callable[[list[Any], bool], Any] | None = _new_list
_container_types: tuple[type, ...] = (_shoal.DictCore, _shoal.ListCore)
# The plain containers being converted by this thread: a dict that holds itself becomes a
# shoal.Dict that holds itself.
_converting = threading.local()


def _convert(value: Any, make: Callable[[], Any], fill: Callable[[Any], None]) -> _shoal.Segment:
    memo: dict[int, Any] | None = getattr(_converting, "memo", None)
    if memo is None:
        memo = _converting.memo = {}
    made = memo.get(id(value))
    if made is not None:
        seg: _shoal.Segment = made.segment()
        return seg
    new = make()
    memo[id(value)] = new
    try:
        fill(new)
    finally:
        del memo[id(value)]
    seg = new.segment()
    return seg


def _to_ref(value: Any, allow_pickle: bool) -> _shoal.Segment | None:
    t = type(value)
    if t is dict:
        return _convert(
            value,
            lambda: Dict(allow_pickle=allow_pickle),
            lambda new: new.update(value),
        )
    if t is list:
        factory = _list_factory
        if factory is None:
            return None
        return _convert(value, lambda: factory([], allow_pickle), lambda new: new.extend(value))
    if isinstance(value, _container_types):
        own: _shoal.Segment = value.segment()  # type: ignore[attr-defined]
        return own
    return _object_segment(value)


def _object_segment(value: Any) -> _shoal.Segment | None:
    """The segment of a whole shoal object stored by reference: a whole shoal.Array, a frozen
    root, a lock/semaphore/event/value; None for anything else (a slice, a sub-view)."""
    from . import _array, _frozen, _hold

    if isinstance(value, _array.Array):
        ref = value._shoal_ref
        if ref is None or not isinstance(ref[0], _shoal.Segment):
            return None
        whole = _array._view(ref[0])
        if (
            whole.shape == value.shape
            and whole.dtype == value.dtype
            and whole.strides == value.strides
            and whole.ctypes.data == value.ctypes.data
        ):
            return ref[0]
        return None
    if isinstance(value, _frozen._FrozenCommon):
        owner = value._owner
        if _shoal.frozen_root(owner)._ref != value._ref:  # type: ignore[attr-defined]
            return None
        seg = _shoal.frozen_owner_segment(owner)
        return seg if isinstance(seg, _shoal.Segment) else None
    segments = _hold._sync_segments(value)
    if len(segments) == 1:
        return segments[0]
    return None


def _from_ref(seg: _shoal.Segment) -> Any:
    from . import _kinds

    k = _kinds.KINDS.get(seg.kind)
    if k is None or k.entry is None:
        raise _shoal.IncompatibleSegmentError(
            f"a container refers to an object of kind {seg.kind}, which this build's Python "
            "cannot attach"
        )
    return k.entry.attach(seg)


_shoal.set_container_hooks(_to_ref, _from_ref)


def from_heap(heap: _shoal.Heap) -> Any:
    """``shoal.attach``'s opener for kind "heap": the Dict, List or Queue the heap holds (by the
    magic of the header its root names), else the heap itself."""
    root = heap.root
    if root == 0:
        return heap
    try:
        magic = heap.read(root, 8)
        cls = _CONTAINERS.get(magic)
        if cls is not None:
            return cls._from(heap, True)
        if magic == b"SHOALQUE":
            from . import _queues

            return _queues.from_heap_queue(heap)
    except _shoal.ShoalError:
        pass
    return heap
