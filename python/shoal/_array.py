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
from typing import Any, SupportsIndex

import numpy as np
from numpy.lib import format as _npformat

from . import _shoal

_ShapeLike = SupportsIndex | tuple[SupportsIndex, ...] | list[SupportsIndex]


def _descr_of(dtype: np.dtype[Any]) -> str:
    if dtype.hasobject:
        raise TypeError(
            f"shoal.Array cannot hold dtype {dtype} (Python objects are per-process); "
            "use shoal.freeze() for trees of Python objects"
        )
    return repr(_npformat.dtype_to_descr(dtype))


def _dtype_from_descr(descr: str) -> np.dtype[Any]:
    try:
        return np.dtype(_npformat.descr_to_dtype(ast.literal_eval(descr)))
    except (ValueError, SyntaxError, TypeError) as e:
        raise _shoal.DecodeError(f"array segment has an unreadable dtype description {descr!r}") from e


def _normalize_shape(shape: _ShapeLike) -> tuple[int, ...]:
    if isinstance(shape, (tuple, list)):
        dims = tuple(int(d) for d in shape)
    else:
        dims = (int(shape),)
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimensions are not allowed: {dims}")
    return dims


class Array(np.ndarray):  # type: ignore[type-arg]
    """An ndarray in shared memory; see the module docstring."""

    _shoal_segment: _shoal.Segment | None = None
    _shoal_base: int = 0  # address of the segment's element area in this process

    def __array_finalize__(self, obj: Any) -> None:
        # A view of a shared array shares its segment; anything else (a new result) does not.
        seg = getattr(obj, "_shoal_segment", None)
        if seg is not None and np.may_share_memory(self, obj):
            self._shoal_segment = seg
            self._shoal_base = obj._shoal_base
        else:
            self._shoal_segment = None
            self._shoal_base = 0

    def __array_wrap__(self, arr: Any, context: Any = None, return_scalar: bool = False) -> Any:
        arr = super().__array_wrap__(arr, context, return_scalar)
        if self is arr or type(self) is not Array:
            return arr
        if return_scalar:
            return arr[()]
        return arr.view(np.ndarray)

    def __getitem__(self, index: Any) -> Any:
        res = super().__getitem__(index)
        if type(res) is Array and res._shoal_segment is None:
            return res.view(np.ndarray)
        return res

    def copy(self, order: Any = "C") -> np.ndarray:  # type: ignore[override]
        """A private copy, as a plain ndarray."""
        return np.array(self, order=order, copy=True, subok=False)

    @property
    def segment(self) -> _shoal.Segment | None:
        """The shared segment holding the elements (None for a detached result)."""
        return self._shoal_segment

    def handle(self) -> str:
        """The segment's handle (pinned), for passing to a non-Python or unrelated process."""
        if self._shoal_segment is None:
            raise ValueError("this array does not live in shared memory")
        return self._shoal_segment.handle()

    def _shoal_args(self) -> tuple[Any, ...]:
        assert self._shoal_segment is not None
        offset = self.__array_interface__["data"][0] - self._shoal_base
        return (
            self._shoal_segment.handle(),
            offset,
            self.shape,
            self.strides,
            _descr_of(self.dtype),
        )

    def __reduce__(self) -> Any:
        if self._shoal_segment is None:
            return self.view(np.ndarray).__reduce__()
        from . import _glue

        return (_glue.rebuild_array, self._shoal_args())

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        # ndarray's own __reduce_ex__ would pickle the bytes (out of band for protocol 5).
        if self._shoal_segment is None:
            return self.view(np.ndarray).__reduce_ex__(protocol)
        return self.__reduce__()

    def __repr__(self) -> str:
        body = np.array2string(self.view(np.ndarray), separator=", ", prefix="shoal.Array(")
        return f"shoal.Array({body}, dtype={self.dtype})"


def _view(seg: _shoal.Segment, offset: int | None = None, shape: Any = None,
          strides: Any = None, dtype: np.dtype[Any] | None = None) -> Array:
    descr, itemsize, hshape, fortran, nbytes, data_offset = _shoal.array_info(seg)
    # A pickled view carries its own dtype (a field of a structured array, a .view(dtype));
    # numpy checks that its extent fits the buffer.
    dt = _dtype_from_descr(descr) if dtype is None else dtype
    if dtype is None and dt.itemsize != itemsize:
        raise _shoal.DecodeError(
            f"array segment says itemsize {itemsize}, its dtype {dt} has {dt.itemsize}"
        )
    buf = memoryview(seg)
    base_arr = np.ndarray((len(buf),), np.uint8, buffer=buf)
    base_addr = base_arr.__array_interface__["data"][0] + data_offset
    if shape is None:
        arr = np.ndarray(tuple(hshape), dt, buffer=buf, offset=data_offset,
                         order="F" if fortran else "C")
    else:
        if offset is None or offset < 0 or offset > nbytes:
            raise _shoal.DecodeError(f"array view offset {offset} is outside the {nbytes}-byte array")
        arr = np.ndarray(tuple(shape), dt, buffer=buf, offset=data_offset + offset,
                         strides=tuple(strides))
    out = arr.view(Array)
    out._shoal_segment = seg
    out._shoal_base = base_addr
    return out


def _create(shape: _ShapeLike, dtype: Any, order: str, writable: bool = True) -> Array:
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


def share_array(x: np.ndarray, writable: bool = False) -> Array:  # type: ignore[type-arg]
    """Copy `x` once into shared memory. Read-only (sealed) unless `writable`."""
    if isinstance(x, Array) and x._shoal_segment is not None and not writable and not x.flags.writeable:
        return x  # already a shared snapshot
    order = "F" if (x.flags.f_contiguous and not x.flags.c_contiguous) else "C"
    dt = x.dtype
    seg = _shoal.array_create(_descr_of(dt), dt.itemsize, list(x.shape), order == "F")
    tmp = _view(seg)
    np.copyto(tmp, x, casting="no")
    if writable:
        return tmp
    # Seal: every buffer exported so far must be released first (BufferError otherwise).
    del tmp
    seg.seal()
    return _view(seg)
Array.__module__ = "shoal"
