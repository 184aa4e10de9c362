"""``shoal.Dict``: a dict in shared memory that every process reads and writes in place.

The hot methods (``d[k]``, ``d[k] = v``, ``del d[k]``, ``k in d``, ``len(d)``, ``iter(d)``,
``get``, ``pop``, ``popitem``, ``setdefault``, ``clear``) are C slots of the base class
``_shoal.DictCore`` (python/bindings/dict_bind.cpp); this module adds the rest of dict's methods,
the views, the lock object and pickling. Design note: docs/design/dict.md, "The Python layer".
"""

from __future__ import annotations

import types
import warnings
from collections.abc import (
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


class Dict(_shoal.DictCore):
    """A dict in shared memory, read and written in place by every process: ``dict``'s methods
    and semantics (insertion order, ``1``, ``1.0`` and ``True`` as one key, views, ``|``,
    ``fromkeys``, ``==`` with any mapping), constructed like ``dict(...)``::

        d = shoal.Dict(a=1)
        d["b"] = "two"              # seen at once by every process that has d
        pool.map(work, [d] * 8)     # pickles as a handle: the same dict in every worker
        with d.lock:                # a compound update, atomic against every other writer
            d["n"] = d.get("n", 0) + 1

    **Keys** are None, bool, int (64 bits), float, str and bytes (another hashable key is
    TypeError when stored and simply absent when looked up; an unhashable one is TypeError, as
    dict's). An int subclass key (an IntEnum) is stored as its int value. A NaN key is never
    found again (there is no identity in shared memory).

    **Values** of exactly those types are stored natively; any other value (an int beyond 64
    bits, a tuple, a list, a dict, a user class instance, a subclass of a builtin) is stored as
    a *copy*, by pickling, when ``allow_pickle`` (the default; with ``allow_pickle=False``,
    TypeError): reading it back unpickles a new object, and later changes to the original or to
    what was read back are not seen by the dict. In particular ``d["a"] = {}; d["a"]["x"] = 1``
    does not change ``d["a"]`` in this version: reassign (``d["a"] = {**d["a"], "x": 1}``) under
    ``d.lock``. A pickled value is its own stored kind: a stored bytes value never reads back as
    unpickled data.

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
        if args or kwargs:
            self.update(*args, **kwargs)

    @classmethod
    def _from(cls, source: Any, allow_pickle: bool) -> Self:
        obj = cls.__new__(cls)
        _shoal.DictCore.__init__(obj, source, allow_pickle)
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
        """A new shoal.Dict with the same items (a new shared object, not a plain dict)."""
        new = Dict(allow_pickle=self.allow_pickle)
        new.update(self._list(_ITEMS))
        return new

    def __copy__(self) -> Dict:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Dict:
        # A new shared dict: the stored values are copies already (immutable natives, or
        # pickles that unpickle afresh), so a shallow copy is a deep one.
        return self.copy()

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
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in self._list(_ITEMS)) + "}"

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


# The first word of the block a heap's root names: which object the heap holds
# (src/layout/dict_layout.hpp kDictMagic, src/layout/queue_layout.hpp kQueueMagic).
_DICT_MAGIC = 0x5443444C414F4853  # "SHOALDCT"
_QUEUE_MAGIC = 0x4555514C414F4853  # "SHOALQUE"


def from_heap(heap: _shoal.Heap) -> Any:
    """``shoal.attach``'s opener for kind "heap": the object the heap holds, chosen by the magic
    of the block its root names (a Dict, a Queue), else the heap itself."""
    root = heap.root
    if root == 0:
        return heap
    try:
        magic = int.from_bytes(heap.read(root, 8), "little")
    except _shoal.ShoalError:
        return heap
    try:
        if magic == _DICT_MAGIC:
            return Dict._from(heap, True)
        if magic == _QUEUE_MAGIC:
            from . import _queues

            return _queues.from_heap_queue(heap)
    except _shoal.ShoalError:
        pass
    return heap
