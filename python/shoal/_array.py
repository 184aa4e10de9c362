"""shoal.Array: a numpy.ndarray whose elements live in one shared segment.

Modelled on numpy.memmap: views and slices of a shoal.Array stay shoal.Array and keep the
segment alive; results that own new memory (``a + 1``, ``a.copy()``) are plain ndarrays. Pickling
a shoal.Array (or any view of one) sends a small handle -- segment, offset, shape, strides,
dtype -- never the data, so it can be a Process/Pool argument or result, or travel through any
queue or pipe, under fork, spawn and forkserver alike.

``share(x)`` makes a read-only snapshot: the segment is sealed (F_SEAL_FUTURE_WRITE) and mapped
PROT_READ in every process, and numpy's writeable flag is off and cannot be turned back on.
Writable arrays are explicit: ``empty/zeros/full`` or ``share(x, writable=True)``; concurrent
writers coordinate themselves, as with multiprocessing.RawArray.
"""

from __future__ import annotations

import ast
import functools
import operator
from typing import Any, SupportsIndex, cast

import numpy as np
from numpy.lib import format as _npformat

from . import _shoal

_ShapeLike = SupportsIndex | tuple[SupportsIndex, ...] | list[SupportsIndex]

# pyproject allows numpy >= 1.24; the two majors call Array.__array_wrap__ differently.
_NUMPY2 = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


def _descr_of(dtype: np.dtype[Any]) -> str:
    if dtype.hasobject:
        raise TypeError(
            f"shoal.Array cannot hold dtype {dtype} (Python objects are per-process); "
            "use shoal.freeze() for trees of Python objects"
        )
    return repr(_npformat.dtype_to_descr(dtype))


@functools.lru_cache(maxsize=256)
def _dtype_from_descr(descr: str) -> np.dtype[Any]:
    # Cached: every attach of an array names its dtype, and literal_eval, which parses it,
    # costs far more than a cache lookup (bench/python/arrays.py times attach).
    try:
        return np.dtype(_npformat.descr_to_dtype(ast.literal_eval(descr)))
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as e:
        raise _shoal.DecodeError(
            f"array segment has an unreadable dtype description {descr!r}"
        ) from e


def _normalize_shape(shape: _ShapeLike) -> tuple[int, ...]:
    # operator.index, as numpy: 2.5, "3" and 2.0 are refused (TypeError), never truncated.
    try:
        if isinstance(shape, (tuple, list)):
            dims = tuple(operator.index(d) for d in shape)
        else:
            dims = (operator.index(shape),)
    except TypeError:
        bad = (
            shape
            if not isinstance(shape, (tuple, list))
            else next(d for d in shape if not hasattr(type(d), "__index__"))
        )
        raise TypeError(
            f"'{type(bad).__name__}' object cannot be interpreted as an integer "
            f"(shoal.Array shape {shape!r})"
        ) from None
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimensions are not allowed: {dims}")
    return dims


class Array(np.ndarray):
    """A numpy.ndarray whose elements live in shared memory.

    Views and slices stay shoal.Array and keep the memory alive; results that own new memory
    (``a + 1``, ``a.copy()``, ``a[mask]``) are plain ndarrays. Pickling sends a small handle,
    never the data, so an Array is a cheap Process or Pool argument under every start method.
    Made by ``shoal.share`` (a read-only snapshot, or ``writable=True``), ``zeros``, ``empty``
    and ``full`` (writable), and read out of frozen objects (read-only).
    """

    # (origin, address of its element area in this process, that address + the area's size),
    # or None for a result that owns new memory. One attribute, set in C (array_bind.cpp) and,
    # for an ndarray read out of a frozen object, in shoal._frozen. The origin is the array's
    # Segment, or a frozen leaf (shoal._frozen._Leaf), which pickles views of itself.
    _shoal_ref: tuple[Any, int, int] | None = None

    # __array_finalize__ and __getitem__ are C functions (python/bindings/array_bind.cpp),
    # installed below: numpy calls __array_finalize__ for every slice and every unpickled
    # array, and in Python the two took ten times as long as ndarray's own slicing.

    def _shoal_adopt(self, src: Any) -> bool:
        """Share `src`'s segment if this array's elements lie in it (a view); True if so."""
        return _shoal.array_adopt(self, src)

    def __array_wrap__(self, arr: Any, context: Any = None, return_scalar: bool = False) -> Any:
        # numpy.memmap's rules, which make results what they are for an ndarray: numpy 2 says
        # when a 0-d result is a scalar (return_scalar); numpy 1.x neither passes it nor takes
        # it, and there every 0-d result is one (`a.sum()` is a float64, not a 0-d array).
        if _NUMPY2:
            arr = super().__array_wrap__(arr, context, return_scalar)
        else:
            arr = super().__array_wrap__(arr, context)
            return_scalar = arr.ndim == 0
        if self is arr or type(self) is not Array:
            return arr
        if return_scalar:
            return arr[()]
        # Some views come through here too (ndarray.squeeze): they stay shared.
        if type(arr) is Array and (arr._shoal_ref is not None or arr._shoal_adopt(self)):
            return arr
        return arr.view(np.ndarray)

    def copy(self, order: Any = "C") -> np.ndarray:  # type: ignore[override]
        """A private copy, as a plain ndarray."""
        return np.array(self, order=order, copy=True, subok=False)

    @property
    def segment(self) -> _shoal.Segment | None:
        """The array segment holding the elements (None for a detached result, and for an
        array read out of a frozen object, which lives in that object's image)."""
        origin = None if self._shoal_ref is None else self._shoal_ref[0]
        return origin if isinstance(origin, _shoal.Segment) else None

    def handle(self) -> str:
        """The segment's handle (pinned), for passing to a non-Python or unrelated process."""
        if self._shoal_ref is None:
            raise ValueError("this array does not live in shared memory")
        origin = self._shoal_ref[0]
        if not isinstance(origin, _shoal.Segment):  # a state of the array, as above: ValueError
            raise ValueError(  # noqa: TRY004
                "this array is part of a frozen object: pickle it (a small reference, not the "
                "data), or pass the frozen object's handle()"
            )
        return origin.handle()

    def _shoal_args(self) -> tuple[Any, ...]:
        assert self._shoal_ref is not None
        seg, base, _ = self._shoal_ref
        offset = self.__array_interface__["data"][0] - base
        return (
            seg.send_handle(),  # held inside shoal.hold (no round trip), else pinned
            offset,
            self.shape,
            self.strides,
            _descr_of(self.dtype),
        )

    def __reduce__(self) -> Any:
        if self._shoal_ref is None:
            return self.view(np.ndarray).__reduce__()
        origin, base, _ = self._shoal_ref
        if not isinstance(origin, _shoal.Segment):
            return origin.reduce(self, base)
        return (_shoal.rebuild_array, self._shoal_args())

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        # ndarray's own __reduce_ex__ would pickle the bytes (out of band for protocol 5).
        if self._shoal_ref is None:
            return self.view(np.ndarray).__reduce_ex__(protocol)
        return self.__reduce__()

    def __repr__(self) -> str:
        body = np.array2string(self.view(np.ndarray), separator=", ", prefix="shoal.Array(")
        shape = f", shape={self.shape}" if self.size == 0 and self.shape != (0,) else ""
        return f"shoal.Array({body}{shape}, dtype={self.dtype})"

    @classmethod
    def attach(cls, handle: str) -> Array:
        """The whole array a handle names (from ``Array.handle()`` or C++ ``shoal::Array``)."""
        return cast(Array, _shoal.rebuild_array(handle))


def _plain(res: Any) -> Any:
    """A result that owns new memory is a plain ndarray, as ``a + 1`` is."""
    if type(res) is Array and res._shoal_ref is None:
        return res.view(np.ndarray)
    return res


def _returning_plain(name: str) -> Any:
    method = getattr(np.ndarray, name)

    def wrapper(self: Array, *args: Any, **kwargs: Any) -> Any:
        return _plain(method(self, *args, **kwargs))

    wrapper.__name__ = name
    wrapper.__qualname__ = f"Array.{name}"
    wrapper.__doc__ = method.__doc__
    return wrapper


# ndarray methods that may allocate a result of the caller's type without numpy calling
# __array_wrap__ (ufunc-like methods such as round, clip, cumsum already come back plain).
# Views they return (reshape, ravel, astype(copy=False)) stay shared.
for _name in (
    "astype",
    "flatten",
    "ravel",
    "reshape",
    "repeat",
    "take",
    "compress",
    "choose",
    "dot",
    "argsort",
    "argmax",
    "argmin",
    "argpartition",
    "byteswap",
    "__copy__",
    "__deepcopy__",
):
    setattr(Array, _name, _returning_plain(_name))
del _name


def _view(seg: _shoal.Segment) -> Array:
    """The whole array over an array segment (built in C++: _shoal.array_view checks the
    header and makes the ndarray; a pickled view goes through _shoal.rebuild_array)."""
    return cast(Array, _shoal.array_view(seg))


def _create(shape: _ShapeLike, dtype: Any, order: str) -> Array:
    dims = _normalize_shape(shape)
    dt = np.dtype(dtype)
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    seg = _shoal.array_create(_descr_of(dt), dt.itemsize, list(dims), order == "F")
    return _view(seg)


def empty(shape: _ShapeLike, dtype: Any = float, order: str = "C") -> Array:
    """A writable shared array (zero-filled: shared pages start zeroed)."""
    return _create(shape, dtype, order)


def zeros(shape: _ShapeLike, dtype: Any = float, order: str = "C") -> Array:
    """A writable shared array of zeros."""
    return _create(shape, dtype, order)


def full(shape: _ShapeLike, fill_value: Any, dtype: Any = None, order: str = "C") -> Array:
    """A writable shared array filled with `fill_value`."""
    if dtype is None:
        dtype = np.array(fill_value).dtype
    a = _create(shape, dtype, order)
    a.fill(fill_value)
    return a


def share_array(x: np.ndarray, writable: bool = False) -> Array:
    """Copy `x` once into shared memory. Read-only (sealed) unless `writable`."""
    if isinstance(x, Array) and x.segment is not None and x.segment.read_only and not writable:
        return x  # already a shared snapshot (sealed: nobody can change it)
    order = "F" if (x.flags.f_contiguous and not x.flags.c_contiguous) else "C"
    dt = x.dtype
    descr = _descr_of(dt)
    if x.flags.c_contiguous or x.flags.f_contiguous:
        # The fast path: the kernel copies the bytes into fresh pages (pwrite), with no page
        # faults and no zero-filling first, and the segment is sealed before anyone maps it.
        raw = x.ravel(order="K").view(np.uint8) if x.size else np.empty(0, np.uint8)
        seg = _shoal.array_share(descr, dt.itemsize, list(x.shape), order == "F", raw, not writable)
        return _view(seg)
    # Non-contiguous input: copied once, element by element, into a fresh writable segment.
    seg = _shoal.array_create(descr, dt.itemsize, list(x.shape), order == "F")
    tmp = _view(seg)
    np.copyto(tmp, x, casting="no")
    if writable:
        return tmp
    # Seal: every buffer exported so far must be released first (BufferError otherwise).
    del tmp
    seg.seal()
    return _view(seg)


_shoal.array_install(Array, _dtype_from_descr)
Array.__module__ = "shoal"
