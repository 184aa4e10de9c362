"""``shoal.Dict``: a dict in shared memory that every process reads and writes in place.

The hot methods (``d[k]``, ``d[k] = v``, ``del d[k]``, ``k in d``, ``len(d)``, ``iter(d)``,
``get``, ``pop``, ``popitem``, ``setdefault``, ``clear``) are C slots of the base class
``_shoal.DictCore`` (python/bindings/dict_bind.cpp); this module adds the rest of dict's methods,
the views, the lock object and pickling. Design note: docs/design/dict.md, "The Python layer".
"""

from __future__ import annotations

import copy as _copy
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
    ValuesView,
)
from typing import Any, Self

from . import _glue, _shoal
from ._sync import OwnerDiedWarning, _timeout

_KEYS, _VALUES, _ITEMS = 0, 1, 2
_OK, _OWNER_DIED, _TIMEOUT = 0, 1, 2


class DictLock:
    """``d.lock``: an RLock over the dict's write lock (multiprocessing.RLock's methods).

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

    def __init__(self, core: _shoal.DictCore) -> None:
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
                    "shoal.Dict.lock: the previous holder died holding it (the lock is held "
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
                        "shoal.Dict.lock: the previous holder died holding it (the lock is "
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
        return f"<shoal.Dict.lock count={self._count}>"


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
    shoal.List once that type exists (until then a list is pickled, below). Reading it back
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


# ---- nesting: what a container stores by reference ---------------------------------------
# The bindings (python/bindings/refs.cpp) call _to_ref(value, allow_pickle) for every value that
# is not a scalar, before pickling it: a Segment makes the value a reference to that object (the
# container's root segment then holds it alive), None lets it be stored as before. What a
# reference reads back as is _from_ref(segment): the kind's attach (shoal.attach's), once per
# object per process while its Python object lives.

# The shoal.List factory, (list, allow_pickle) -> a new shoal.List; None until a module that
# has one registers it (register_list): until then a list value is pickled.
_list_factory: Callable[[list[Any], bool], Any] | None = None
# Container types stored as references to themselves (shoal.Dict's base, shoal.List's).
_container_types: tuple[type, ...] = (_shoal.DictCore,)
# The plain containers being converted by this thread: a dict that holds itself becomes a
# shoal.Dict that holds itself.
_converting = threading.local()


def register_list(factory: Callable[[list[Any], bool], Any], core_type: type) -> None:
    """Make lists stored into a container new shoal.Lists (``factory(items, allow_pickle)``),
    and store objects of `core_type` (their ``segment()``) by reference."""
    global _list_factory, _container_types
    _list_factory = factory
    if core_type not in _container_types:
        _container_types = (*_container_types, core_type)


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
    """``shoal.attach``'s opener for kind "heap": a Dict when the heap holds one (its root
    names a dict header), else the heap itself."""
    try:
        return Dict._from(heap, True)
    except _shoal.ShoalError:
        return heap
