from collections.abc import Sequence
from typing import overload

from shoal import (
    AccessDeniedError as AccessDeniedError,
    CorruptSegmentError as CorruptSegmentError,
    DecodeError as DecodeError,
    IncompatibleSegmentError as IncompatibleSegmentError,
    InvalidArgumentError as InvalidArgumentError,
    LockTimeoutError as LockTimeoutError,
    OutOfSpaceError as OutOfSpaceError,
    OwnerDiedError as OwnerDiedError,
    OwnerDiedWarning as OwnerDiedWarning,
    SegmentExistsError as SegmentExistsError,
    SegmentNotFoundError as SegmentNotFoundError,
    SessionGoneError as SessionGoneError,
    ShoalError as ShoalError,
    ShoalOSError as ShoalOSError,
    ShoalTimeoutError as ShoalTimeoutError,
    StaleHandleError as StaleHandleError
)


class Segment:
    """An anonymous shared-memory segment (see shoal/segment.hpp)."""

    @staticmethod
    def create(size: int, populate: bool = False, kind: int = 0) -> Segment:
        """
        Create a zero-filled segment of `size` bytes in this process's session.
        """

    @staticmethod
    def attach(handle: object | None) -> Segment:
        """Map the segment a handle names (from handle() in any process)."""

    @staticmethod
    def create_named(name: str, size: int) -> Segment:
        """
        Create a persistent named segment (a file in named_dir()); lives until removed.
        """

    @staticmethod
    def open_named(name: str, writable: bool = False) -> Segment:
        """Map an existing named segment."""

    def handle(self, pin: bool = True) -> str:
        """
        A handle: 133 characters, or 163 when pinned (the hint for a fast attach). pin=True keeps the object alive until one process attaches with it or SHOAL_PIN_TTL seconds pass.
        """

    def hold(self) -> Hold:
        """
        A Hold: while it is active, pickling this segment (or any object over it) writes a held handle: no pin, no round trip, valid while this process holds the object.
        """

    @property
    def held(self) -> bool:
        """True while a Hold of this object is active in this process."""

    def send_handle(self) -> str:
        """The handle pickling writes: held while a Hold is active, else pinned."""

    def seal(self) -> None:
        """Make the segment read-only for this and every future process."""

    def add_reference(self, target: Segment) -> None:
        """
        Keep `target` (a segment of the same session) alive while this object lives: the broker frees the whole group when the last outside reference goes, SIGKILL included. Counted: n calls need n drop_reference calls. Cycles are allowed.
        """

    @overload
    def drop_reference(self, target: Segment) -> None:
        """
        Undo one add_reference(target) (no round trip; a reference never added: nothing happens).
        """

    @overload
    def drop_reference(self, target_id: str) -> None:
        """
        Undo one add_reference of the segment whose id (Segment.id) is given, for a target this process no longer maps.
        """

    def close(self) -> None:
        """Drop this process's reference now (idempotent)."""

    @property
    def size(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    @property
    def read_only(self) -> bool: ...

    @property
    def id(self) -> str: ...

    @property
    def session(self) -> str: ...

    @property
    def kind(self) -> int: ...

    @property
    def exports(self) -> int: ...

    @property
    def address(self) -> int:
        """
        Address of the data area in this process (for building views; not for sending).
        """

    @property
    def name(self) -> str | None: ...

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...

    def __enter__(self) -> object: ...

    def __exit__(self, *args) -> None: ...

    def __reduce__(self) -> tuple: ...

    def __repr__(self) -> str: ...

class Hold:
    """
    A hold on a shared object (shoal.hold): while it is active, pickling the object writes a held handle (no pin, no broker round trip), valid while this process holds the object. A context manager; release() ends it.
    """

    def release(self) -> None:
        """End the hold now (idempotent). Pickling the object pins again."""

    @property
    def active(self) -> bool:
        """True until release() or the end of the with block."""

    def __enter__(self) -> object: ...

    def __exit__(self, *args) -> None: ...

    def __repr__(self) -> str: ...

def set_broker_path(path: str) -> None: ...

def broker_path() -> str: ...

def current_session() -> str | None: ...

def after_fork_child() -> None:
    """Re-register this forked child's inherited mappings with their brokers."""

def list_sessions() -> list: ...

def gc() -> int:
    """
    Remove the runtime files of dead sessions; returns how many were removed.
    """

def drop_orphan_pins(session: str) -> int:
    """
    Drop the pins of a session whose sender died (shoal gc --pins); returns how many.
    """

def collect_cycles(session: str) -> int:
    """
    Free a session's objects that only unreachable reference cycles keep alive (shoal gc --cycles); returns how many.
    """

def runtime_dir(create: bool = False) -> str: ...

def named_dir(create: bool = False) -> str: ...

def memory_info() -> dict: ...

def remove_named(name: str) -> None:
    """Delete a named segment (processes that map it keep their mapping)."""

def list_named() -> list:
    """Every named segment of this user."""

def check_capacity(bytes: int) -> None: ...

def memfd_supported() -> bool: ...

def pin_ttl() -> float: ...

def object_kinds() -> list[tuple[int, str, str]]:
    """
    Every object kind this build knows: (id, short name, description), in id order.
    """

def decode_handle(text: str) -> dict:
    """Parse a handle (DecodeError if malformed)."""

def validate_segment_header(data: bytes) -> None:
    """Check the bytes of a segment header (raises on anything invalid)."""

def array_install(array_type: object, dtype_from_descr: object) -> None:
    """
    Install shoal.Array's C hooks (__array_finalize__, __getitem__); shoal._array calls it.
    """

def array_adopt(array: object, source: object) -> bool:
    """
    Make `array` share `source`'s segment if its elements lie in it; True if it does.
    """

def array_create(descr: str, itemsize: int, shape: Sequence[int], fortran: bool = False) -> Segment:
    """Create a zero-filled array segment; returns the Segment."""

def array_share(descr: str, itemsize: int, shape: Sequence[int], fortran: bool, data: object, seal: bool = True) -> Segment:
    """
    Create an array segment holding a copy of `data` (sealed read-only when `seal`).
    """

def rebuild_array(handle: str, offset: int | None = None, shape: Sequence[int] | None = None, strides: Sequence[int] | None = None, descr: str | None = None) -> Any:
    """
    Attach the array segment a handle names and return the shoal.Array over it: the whole
    array, or the view that (offset, shape, strides, descr) describe (a pickled view).
    """

def array_view(segment: Segment, offset: int | None = None, shape: Sequence[int] | None = None, strides: Sequence[int] | None = None, descr: str | None = None) -> Any:
    """The shoal.Array over an array segment already attached (see rebuild_array)."""

from collections.abc import Iterator
from typing import Any

def _frozen_init(*args: object) -> None: ...

class FrozenImage:
    """The mapping behind frozen views (a segment or a file); read-only buffer."""
    def __buffer__(self, flags: int, /) -> memoryview: ...

class _FrozenViewBase:
    @property
    def _owner(self) -> FrozenImage: ...
    @property
    def _ref(self) -> int: ...
    def thaw(self) -> Any: ...
    def _iter(self, what: int, /) -> Iterator[Any]: ...
    def _entry(self, i: int, what: int = 0, /) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __contains__(self, key: object, /) -> bool: ...

class _FrozenDictBase(_FrozenViewBase):
    def __getitem__(self, key: Any, /) -> Any: ...
    def get(self, key: Any, default: Any = None, /) -> Any: ...

class _FrozenSetBase(_FrozenViewBase): ...

class _FrozenListBase(_FrozenViewBase):
    def __getitem__(self, index: Any, /) -> Any: ...

class _FrozenTupleBase(_FrozenViewBase):
    def __getitem__(self, index: Any, /) -> Any: ...

def frozen_freeze(obj: object | None, allow_pickle: bool = True) -> object:
    """
    Encode obj into a new sealed frozen segment; return its view (or leaf value).
    """

def frozen_save(obj: object | None, path: str, allow_pickle: bool = True) -> None:
    """Encode obj into a file (see shoal.save)."""

def frozen_remove_dead_temps(dir: str) -> list[str]:
    """
    Remove the temporary files that shoal.save calls killed mid-write left in dir (never one being written); returns their paths.
    """

def frozen_owner_attach(handle: str) -> object:
    """The FrozenImage a segment handle names."""

def frozen_owner_from_segment(segment: object) -> object:
    """The FrozenImage of an attached kFrozen segment."""

def frozen_owner_load(path: str, allow_pickle: bool = False) -> object:
    """The FrozenImage of a file written by shoal.save."""

def frozen_view(owner: object, ref: int) -> object:
    """
    The view of container `ref`, or the shoal.Array of ndarray leaf `ref`, in an image (unpickling).
    """

def check_stack() -> None:
    """
    RecursionError when the C stack is nearly used up, whatever sys.setrecursionlimit() says (the views' Python methods that recurse call it on entry).
    """

def frozen_root(owner: object) -> object:
    """The root of an image: a view, or the leaf value."""

def frozen_owner_info(owner: object, pin: bool = False, send: bool = False) -> dict:
    """
    nbytes, allow_pickle, path, dev, ino and size (files: which file was loaded) and handle (segments; pin=True pins it for transit; send=True: what pickling writes, held while shoal.hold holds the image, else pinned).
    """

def frozen_owner_hold(owner: object) -> Hold:
    """A Hold of the segment holding an image (shoal.hold)."""

def frozen_owner_segment(owner: object) -> object:
    """
    The segment holding an image; None for an image loaded from a file (a container stores a frozen root by reference to its segment).
    """

def frozen_validate(owner: object, max_depth: int = 1000) -> None:
    """Check every node of the image (DecodeError if corrupt)."""

def frozen_hash(key: object | None, seed: int = 6001133645340942374) -> int:
    """The table hash of a key (the same in every process)."""

class Heap:
    """
    A growable shared object with an allocator of variable-sized blocks (C++ shoal::Heap). Blocks are named by int Refs, the same in every process.
    """

    @staticmethod
    def create(initial_bytes: int = 262144) -> Heap:
        """A new, empty heap in this process's session."""

    @staticmethod
    def attach(handle: str) -> Heap:
        """The heap a handle names."""

    @staticmethod
    def from_segment(segment: Segment) -> Heap:
        """
        The heap whose root is this segment (what shoal.attach does for kind "heap").
        """

    def __reduce__(self) -> tuple: ...

    def handle(self, pin: bool = True) -> str:
        """A handle for sending (the root's)."""

    @property
    def id(self) -> str:
        """The root object's id (32 hex digits)."""

    @property
    def extent_count(self) -> int:
        """Extents published so far."""

    def allocate(self, n: int) -> int:
        """A block of at least n usable bytes; its Ref."""

    def allocate_pending(self, n: int) -> int:
        """
        allocate(), but freed by the next check if this process dies before commit().
        """

    def commit(self, ref: int) -> None:
        """Ends a pending block's probation."""

    def free(self, ref: int) -> None:
        """Frees a block (a double free raises InvalidArgumentError)."""

    def usable_size(self, ref: int) -> int:
        """The usable bytes of a block."""

    def write(self, ref: int, data: bytes, offset: int = 0) -> None:
        """Copies bytes into a block at offset."""

    def read(self, ref: int, n: int, offset: int = 0) -> bytes:
        """n bytes of a block from offset."""

    @property
    def root(self) -> int:
        """A word for the user's root Ref (0 at first)."""

    @root.setter
    def root(self, arg: int, /) -> None: ...

    def stats(self) -> dict:
        """
        Counters: extents, live blocks and bytes, reserved bytes, recoveries, reclaimed.
        """

    def check(self) -> dict:
        """
        Walks every block and checks the heap's invariants; frees pending blocks of dead processes first. CorruptSegmentError names the first failure.
        """

def sync_type(segment: Segment) -> int:
    """
    The type of a sync object's segment: 1 mutex, 2 recursive mutex, 3 semaphore, 4 event, 5 condition, 6 barrier, 7 value.
    """

class SyncMutex:
    """shoal::Mutex (private: the core of a shoal.Lock)."""

    @staticmethod
    def create() -> SyncMutex: ...

    @staticmethod
    def from_segment(arg: Segment, /) -> SyncMutex: ...

    def send_handle(self) -> str: ...

    def segment(self) -> Segment: ...

class SyncRecursiveMutex:
    """shoal::RecursiveMutex (private: the core of a shoal.RLock)."""

    @staticmethod
    def create() -> SyncRecursiveMutex: ...

    @staticmethod
    def from_segment(arg: Segment, /) -> SyncRecursiveMutex: ...

    def send_handle(self) -> str: ...

    def segment(self) -> Segment: ...

class SyncSemaphore:
    """shoal::Semaphore (private)."""

    @staticmethod
    def create(value: int, bounded: bool, recover: bool) -> SyncSemaphore: ...

    @staticmethod
    def from_segment(arg: Segment, /) -> SyncSemaphore: ...

    def acquire(self, arg0: bool, arg1: float, /) -> int: ...

    def release(self, arg: int, /) -> None: ...

    @property
    def value(self) -> int: ...

    @property
    def initial_value(self) -> int: ...

    @property
    def bounded(self) -> bool: ...

    def send_handle(self) -> str: ...

    def segment(self) -> Segment: ...

class SyncEvent:
    """shoal::Event (private)."""

    @staticmethod
    def create() -> SyncEvent: ...

    @staticmethod
    def from_segment(arg: Segment, /) -> SyncEvent: ...

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, arg: float, /) -> int: ...

    def send_handle(self) -> str: ...

    def segment(self) -> Segment: ...

class SyncCondition:
    """shoal::Condition (private: the core of a shoal.Condition)."""

    @staticmethod
    def create() -> SyncCondition: ...

    @staticmethod
    def from_segment(arg: Segment, /) -> SyncCondition: ...

    def send_handle(self) -> str: ...

    def segment(self) -> Segment: ...

class SyncLock:
    """The base of shoal.Lock, RLock and Condition (private): their lock methods, in C."""
    def __init__(self, core: SyncMutex | SyncRecursiveMutex | SyncCondition, raise_on_died: bool, lock: SyncLock | None = None) -> None: ...
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc: object) -> None: ...
    def _locked(self) -> bool: ...
    @property
    def owner_died(self) -> bool: ...
    @property
    def _policy(self) -> str: ...
    @property
    def _held(self) -> bool: ...
    @property
    def _count(self) -> int: ...
    @property
    def _given(self) -> SyncLock | None: ...
    def send_handle(self) -> str: ...
    def segment(self) -> Segment: ...
    def _wait(self, timeout: float) -> bool: ...
    def _notify(self, n: int) -> None: ...
    def _notify_all(self) -> None: ...

class SyncBarrier:
    """shoal::Barrier (private)."""

    @staticmethod
    def create(parties: int, timeout: float) -> SyncBarrier: ...

    @staticmethod
    def from_segment(arg: Segment, /) -> SyncBarrier: ...

    def wait(self, arg: float, /) -> tuple[int, int]: ...

    def abort(self) -> None: ...

    def reset(self) -> None: ...

    @property
    def broken(self) -> bool: ...

    @property
    def parties(self) -> int: ...

    @property
    def timeout(self) -> float: ...

    @property
    def n_waiting(self) -> int: ...

    def send_handle(self) -> str: ...

    def segment(self) -> Segment: ...

class SyncValue:
    """shoal::SharedValue<T> (private: shoal.Value wraps it)."""

    @staticmethod
    def create(typecode: str, initial: object | None) -> SyncValue: ...

    @staticmethod
    def from_segment(arg: Segment, /) -> SyncValue: ...

    def load(self) -> object: ...

    @property
    def value(self) -> object:
        """load() as a property: shoal.Value.value reads it with no Python frame."""

    def store(self, arg: object, /) -> None: ...

    def add(self, arg: object, /) -> object: ...

    def exchange(self, arg: object, /) -> object: ...

    def compare_exchange(self, arg0: object, arg1: object, /) -> bool: ...

    @property
    def typecode(self) -> str: ...

    @property
    def address(self) -> int: ...

    def lock(self) -> SyncMutex: ...

    def send_handle(self) -> str: ...

    def segment(self) -> Segment: ...

class DictIterator:
    """An iterator over a shoal.Dict (private)."""
    def __iter__(self) -> DictIterator: ...
    def __next__(self) -> Any: ...

class DictCore:
    """The C++ shoal::Dict behind shoal.Dict (private): its hot methods, in C."""
    def __init__(self, source: str | Heap | None, allow_pickle: bool) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, key: Any, /) -> Any: ...
    def __setitem__(self, key: Any, value: Any, /) -> None: ...
    def __delitem__(self, key: Any, /) -> None: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __iter__(self) -> Iterator[Any]: ...
    def get(self, key: Any, default: Any = None, /) -> Any: ...
    def pop(self, key: Any, default: Any = ..., /) -> Any: ...
    def popitem(self) -> tuple[Any, Any]: ...
    def setdefault(self, key: Any, default: Any = None, /) -> Any: ...
    def clear(self) -> None: ...
    @property
    def allow_pickle(self) -> bool: ...
    def _iter(self, mode: int) -> Iterator[Any]: ...
    def _list(self, mode: int) -> list[Any]: ...
    def _lock(self, block: bool, timeout: float) -> int: ...
    def _unlock(self) -> None: ...
    @property
    def _lock_depth(self) -> int: ...
    def send_handle(self) -> str: ...
    def handle(self, pin: bool = True) -> str: ...
    def segment(self) -> Segment: ...
    def _stats(self) -> dict[str, int]: ...
    def _check(self) -> tuple[int, int, int]: ...

class ListIterator:
    """An iterator over a shoal.List (private): by index, weakly consistent across processes."""
    def __iter__(self) -> ListIterator: ...
    def __next__(self) -> Any: ...

class ListCore:
    """The C++ shoal::List behind shoal.List (private): its hot methods, in C."""
    def __init__(self, source: str | Heap | None, allow_pickle: bool) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: Any, /) -> Any: ...
    def __setitem__(self, index: Any, value: Any, /) -> None: ...
    def __delitem__(self, index: Any, /) -> None: ...
    def __contains__(self, value: object, /) -> bool: ...
    def __iter__(self) -> Iterator[Any]: ...
    def append(self, value: Any, /) -> None: ...
    def clear(self) -> None: ...
    def reverse(self) -> None: ...
    @property
    def allow_pickle(self) -> bool: ...
    def _items(self) -> list[Any]: ...
    def _extend(self, values: Any) -> None: ...
    def _insert(self, index: int, value: Any) -> None: ...
    def _pop(self, index: int) -> tuple[Any] | None: ...
    def _permute(self, perm: list[int]) -> None: ...
    def _set_all(self, values: Any) -> None: ...
    def _lock(self, block: bool, timeout: float) -> int: ...
    def _unlock(self) -> None: ...
    @property
    def _lock_depth(self) -> int: ...
    def send_handle(self) -> str: ...
    def handle(self, pin: bool = True) -> str: ...
    def segment(self) -> Segment: ...
    def _stats(self) -> dict[str, int]: ...
    def _check(self) -> tuple[int, int, int]: ...

class PipeQueue:
    """One direction of a shoal.Pipe (private)"""

    @staticmethod
    def create(ring_bytes: int) -> PipeQueue: ...

    @staticmethod
    def attach(handle: str) -> PipeQueue: ...

    def handle(self) -> str: ...

    def ident(self) -> str: ...

    def open_end(self, side: int) -> None: ...

    def close_end(self, side: int) -> None: ...

    def lend_end(self, side: int) -> int: ...

    def claim_lent(self, side: int, lender: int) -> None: ...

    def end_closed(self, side: int) -> bool: ...

    def lent_holds(self, side: int) -> int: ...

    def holders(self, side: int) -> int: ...

    def set_watched(self, side: int, on: bool) -> None: ...

    def watched(self, side: int) -> bool: ...

    def size(self) -> int: ...

    def send(self, data: object, timeout: float) -> int: ...

    def send_value(self, obj: object | None, timeout: float) -> object: ...

    def recv(self, timeout: float) -> object: ...

class QueueBlock:
    """An out-of-band message's heap block, handed to its receiver (private); buffer."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

def queue_before_fork() -> None:
    """
    os.register_at_fork(before=...) of _queues.py: each live QueueBlock this process holds gets a kept hand-out slot for the child.
    """

def queue_after_fork_parent() -> None:
    """os.register_at_fork(after_in_parent=...) of _queues.py."""

def queue_after_fork_child() -> None:
    """
    os.register_at_fork(after_in_child=...) of _queues.py: the child adopts the slots its parent shared, so its QueueBlocks release their own claims.
    """

class QueueCore:
    """The C++ shoal::Queue behind shoal.Queue (private): its hot methods, in C."""
    def __init__(self, source: str | Heap | None, ring_bytes: int = 1048576, max_messages: int = 0, max_bytes: int = 0, joinable: bool = False) -> None: ...
    def _put(self, payload: Any, encoding: int, timeout: float | None, /) -> bool: ...
    def _get(self, timeout: float | None, hand_out: bool, end_of_stream: bool = False, /) -> tuple[int, Any] | int | None: ...
    def _put_value(self, obj: Any, timeout: float | None, /) -> Any: ...
    def _put_parts(self, parts: Sequence[Any], encoding: int, timeout: float | None) -> bool: ...
    def _encode_value(self, obj: Any) -> Any: ...
    def _put_many(self, payloads: Sequence[Any], encodings: Sequence[int], timeout: float | None) -> bool: ...
    def _get_many(self, max_messages: int, max_bytes: int, timeout: float | None, hand_out: bool, end_of_stream: bool = False) -> list[tuple[int, Any]] | int: ...
    def _open_end(self, side: int) -> None: ...
    def _close_end(self, side: int) -> None: ...
    def qsize(self) -> int: ...
    def _full(self, length: int = 0) -> bool: ...
    @property
    def joinable(self) -> bool: ...
    def _task_done(self) -> None: ...
    def _join(self, timeout: float | None) -> bool: ...
    def _unfinished(self) -> int: ...
    @property
    def ring_bytes(self) -> int: ...
    @property
    def max_messages(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    def send_handle(self) -> str: ...
    def handle(self, pin: bool = True) -> str: ...
    def segment(self) -> Segment: ...
    def _stats(self) -> dict[str, int]: ...
    def _check(self) -> dict[str, int]: ...

def remember_object(segment: Segment, obj: object) -> None:
    """
    Private: make `obj` what a reference to `segment`'s object reads back as in this process while it lives (a Dict made here is `d[k]` for a k that refers to it).
    """

def set_container_hooks(to_ref: object, from_ref: object) -> None:
    """
    Private: what the containers store by reference, to_ref(value, allow_pickle) -> Segment or None, and what a reference reads back as, from_ref(segment) -> object.
    """

def run_tasks(fn: object, args: list, pos: int, end: int, star: bool, slot: Segment, at: int, index: int, out: list) -> tuple:
    """
    Private (shoal.Pool's worker): call fn(a), or fn(*a) when star, for a in args[pos:end],
    appending each result to out; before each call store the task's index (index for
    args[pos], then one more each) into int64 word `at` of the slot table segment.
    Returns (end, None), or (i, exc) when the task at position i raised the Exception exc
    (its traceback kept; the tasks before it have their results in out). A BaseException
    that is not an Exception propagates.
    """
