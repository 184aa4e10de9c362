// include/shoal/sync.hpp — synchronisation between processes that survives a dead holder:
// Mutex, RecursiveMutex, Semaphore, Event, Condition, Barrier and SharedValue<T>.
//
// Each object is a shoal object of kind `sync` in its own small segment (4 KiB): create() it in
// one process, send handle() to another, attach() there. Every wait takes an absolute
// Deadline (never() by default) and, with `interruptible`, returns SyncStatus::kInterrupted when
// a signal interrupts it (the Python layer then runs its signal handlers and waits again with
// the same deadline); otherwise an interrupted wait goes on until its deadline.
//
//   shoal::Mutex m = shoal::Mutex::create();
//   std::string h = m.handle();                 // to another process:
//   shoal::Mutex same = shoal::Mutex::attach(h);
//   if (same.lock() == shoal::SyncStatus::kOwnerDied) { /* repair what it guards */ }
//   same.unlock();
//
// A process that dies holding a Mutex (or RecursiveMutex) hands it to the next acquirer, who is
// told (kOwnerDied). Owner death is judged by pid and process start time, so a pid reused by
// an unrelated process is not taken for the dead holder. A tracked Semaphore (bounded, or
// recover) gives back the units a dead process held; a Barrier with a dead waiting party
// breaks (kBroken). Nothing uses process-shared pthread objects. Layout and invariants:
// src/layout/sync_layout.hpp; design note: docs/design/sync.md.
//
// Concurrency: every method may be called from any thread of any process that attached.
// Errors on shared state (a corrupt word) throw CorruptSegmentError; waits return a status.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "shoal/error.hpp"
#include "shoal/segment.hpp"

namespace shoal {

namespace layout {
struct MutexState;
struct RecursiveMutexState;
struct SemaphoreState;
struct EventState;
struct ConditionState;
struct BarrierState;
struct ValueState;
}  // namespace layout

class Mutex;
namespace detail {
Mutex value_mutex(const Segment& seg, layout::ValueState* st);
}

/// How a wait ended.
enum class SyncStatus : uint8_t {
  kOk,           // acquired / the event was set / the barrier passed / notified
  kOwnerDied,    // acquired, but the previous holder died holding it: repair, then unlock
  kTimeout,      // the deadline passed first (nothing acquired)
  kInterrupted,  // only with interruptible: a signal interrupted the wait (nothing acquired)
  kBroken,       // a barrier is broken (a party died, abort(), or reset() while waiting)
};
/// "ok", "owner_died", "timeout", "interrupted", "broken".
const char* sync_status_name(SyncStatus s) noexcept;

/// An absolute point on CLOCK_MONOTONIC in nanoseconds (the same clock as the futex layer), so
/// that a wait retried after an interruption ends when first meant to.
struct Deadline {
  static constexpr uint64_t kNeverNs = UINT64_MAX;
  uint64_t ns = kNeverNs;
  static constexpr Deadline never() noexcept { return Deadline{kNeverNs}; }
  /// `seconds` from now: +inf and huge values are never(), zero and negative values have
  /// passed already; NaN throws InvalidArgumentError.
  static Deadline after(double seconds);
  bool is_never() const noexcept { return ns == kNeverNs; }
};

/// What every sync object has: its segment, and handles to send it.
class SyncObject {
 public:
  std::string handle(bool pin = true) const { return seg_.handle(pin); }
  const Segment& segment() const noexcept { return seg_; }
  bool valid() const noexcept { return seg_.valid(); }

 protected:
  SyncObject() = default;
  explicit SyncObject(Segment s) noexcept : seg_(std::move(s)) {}
  Segment seg_;
};

/// A lock: one holder process at a time (every thread of it counts as the holder, as with
/// RobustMutex; not recursive).
class Mutex : public SyncObject {
 public:
  static Mutex create();
  static Mutex attach(std::string_view handle);
  static Mutex from_segment(Segment seg);
  Mutex() = default;

  /// kOk, kOwnerDied (the previous holder died holding it; owner_died() stays true until
  /// unlock), kTimeout, or kInterrupted (only when `interruptible`).
  SyncStatus lock(Deadline deadline = Deadline::never(), bool interruptible = false);
  /// lock() with a deadline that has passed: kTimeout at once when a live process holds it.
  SyncStatus try_lock() { return lock(Deadline{0}); }
  /// InvalidArgumentError when this process does not hold it.
  void unlock();
  bool owner_died() const noexcept;
  bool held_by_this_process() const noexcept;
  bool locked() const noexcept;

 private:
  friend class Condition;
  friend Mutex detail::value_mutex(const Segment& seg, layout::ValueState* st);
  Mutex(Segment s, layout::MutexState* st) noexcept : SyncObject(std::move(s)), st_(st) {}
  layout::MutexState* st_ = nullptr;
};

/// A lock the holding thread may take again; released when unlocked as often as locked. The
/// owner (process and thread id) and the depth live in shared memory: if the holder dies the
/// next owner gets kOwnerDied and depth 1.
class RecursiveMutex : public SyncObject {
 public:
  static RecursiveMutex create();
  static RecursiveMutex attach(std::string_view handle);
  static RecursiveMutex from_segment(Segment seg);
  RecursiveMutex() = default;

  SyncStatus lock(Deadline deadline = Deadline::never(), bool interruptible = false);
  SyncStatus try_lock() { return lock(Deadline{0}); }
  /// InvalidArgumentError when the calling thread does not hold it.
  void unlock();
  /// The depth when the calling thread holds it, else 0.
  uint32_t count() const noexcept;
  bool held_by_this_thread() const noexcept;

 private:
  layout::RecursiveMutexState* st_ = nullptr;
};

/// A counting semaphore. Plain (bounded=false, recover=false): the stdlib's meaning, a release
/// from any process adds a unit. Tracked (bounded or recover): units acquired are recorded per
/// process (at most 128 processes hold units at once: OutOfSpaceError beyond), and the units of
/// a process that died are given back. bounded: releasing above the initial value is
/// InvalidArgumentError (as threading.BoundedSemaphore's ValueError).
class Semaphore : public SyncObject {
 public:
  static constexpr uint32_t kMaxValue = 0x7fff'ffff;
  static Semaphore create(uint32_t value = 1, bool bounded = false, bool recover = false);
  static Semaphore attach(std::string_view handle);
  static Semaphore from_segment(Segment seg);
  Semaphore() = default;

  /// kOk (one unit taken), kTimeout or kInterrupted.
  SyncStatus acquire(Deadline deadline = Deadline::never(), bool interruptible = false);
  SyncStatus try_acquire() { return acquire(Deadline{0}); }
  void release(uint32_t n = 1);
  /// Units free now (may be stale at once). Tracked: the units of processes that died holding
  /// them are given back first, so they count as free (takes the table lock; CorruptSegmentError
  /// when the units held exceed the capacity).
  uint32_t value() const;
  uint32_t initial_value() const noexcept;
  bool bounded() const noexcept;
  bool tracked() const noexcept;
  /// Tracked only: the units this process holds.
  uint32_t units_held_by_this_process() const noexcept;

 private:
  SyncStatus acquire_tracked(Deadline deadline, bool interruptible);
  layout::SemaphoreState* st_ = nullptr;
  uint32_t initial_ = 0;
  uint32_t flags_ = 0;
};

/// A flag processes wait for. A waiter never misses a set(): a set() and clear() while it
/// sleeps still wake it with kOk.
class Event : public SyncObject {
 public:
  static Event create();
  static Event attach(std::string_view handle);
  static Event from_segment(Segment seg);
  Event() = default;

  void set();
  void clear();
  bool is_set() const noexcept;
  /// kOk once set (or it was set meanwhile), kTimeout, kInterrupted.
  SyncStatus wait(Deadline deadline = Deadline::never(), bool interruptible = false);

 private:
  layout::EventState* st_ = nullptr;
};

/// A condition variable over its own Mutex (lock() it, wait(), notify()), on a sequence-number
/// futex: no pthread condition variable.
class Condition : public SyncObject {
 public:
  static Condition create();
  static Condition attach(std::string_view handle);
  static Condition from_segment(Segment seg);
  Condition() = default;

  /// The condition's lock (shares this object's segment).
  Mutex& mutex() noexcept { return m_; }
  SyncStatus lock(Deadline deadline = Deadline::never(), bool interruptible = false) {
    return m_.lock(deadline, interruptible);
  }
  void unlock() { m_.unlock(); }
  /// Releases the lock (InvalidArgumentError when this process does not hold it), sleeps
  /// until a notify, the deadline or (interruptible) a signal, and re-takes the lock whatever
  /// happened: kOk (notified; possibly spurious, as with every condition variable), kTimeout,
  /// kInterrupted; kOwnerDied when re-taking found the lock's holder dead (the lock is held).
  SyncStatus wait(Deadline deadline = Deadline::never(), bool interruptible = false);
  /// Wakes up to n waiters (each sleeper woken counts once).
  void notify(uint32_t n = 1);
  void notify_all();

  /// wait() over another lock instead of the condition's own (threading.Condition(lock)): the
  /// caller holds `lock` (InvalidArgumentError otherwise), which is released, slept on and
  /// re-taken as the own lock is; outcomes as wait(), kOwnerDied meaning that re-taking `lock`
  /// found its holder dead. Every waiter and notifier of this condition must use the same lock,
  /// and notify while holding it: that is what orders a waiter's read of the sequence (under
  /// the lock) before the notify's bump, so that no notify is lost.
  SyncStatus wait(Mutex& lock, Deadline deadline = Deadline::never(), bool interruptible = false);
  /// The same over a RecursiveMutex that the calling thread holds at depth n: released fully
  /// (n unlocks), and held at depth n again on every return (after a takeover too).
  SyncStatus wait(RecursiveMutex& lock, Deadline deadline = Deadline::never(),
                  bool interruptible = false);

 private:
  layout::ConditionState* st_ = nullptr;
  Mutex m_;
};

/// A barrier for `parties` processes or threads (at most 128). A waiting party that dies breaks
/// it (kBroken for the others, found by the live waiters checking the waiting parties in
/// bounded slices); so do abort() and a timeout in wait(). reset() makes it usable again.
class Barrier : public SyncObject {
 public:
  static constexpr uint32_t kMaxParties = 128;
  /// `timeout`: the default a caller's wait uses when it gives none (threading.Barrier's
  /// timeout; +inf for none), recorded for every process that attaches; NaN or negative is
  /// InvalidArgumentError.
  static Barrier create(uint32_t parties, double timeout = HUGE_VAL);
  static Barrier attach(std::string_view handle);
  static Barrier from_segment(Segment seg);
  Barrier() = default;

  /// kOk (with *index set to this party's arrival index, 0 .. parties-1, when not null),
  /// kBroken (the barrier is broken now), kTimeout (this wait's deadline passed: the barrier
  /// is broken for the others, as in threading.Barrier), kInterrupted (the party withdraws;
  /// the barrier is not broken).
  SyncStatus wait(Deadline deadline = Deadline::never(), bool interruptible = false,
                  uint32_t* index = nullptr);
  void abort();
  void reset();
  bool broken() const noexcept;
  uint32_t parties() const noexcept { return parties_; }
  /// The default timeout given to create() (seconds; +inf for none).
  double timeout() const noexcept { return timeout_; }
  uint32_t n_waiting() const noexcept;

 private:
  layout::BarrierState* st_ = nullptr;
  uint32_t parties_ = 0;
  double timeout_ = HUGE_VAL;
};

namespace detail {
/// The type tag of SharedValue<T>: itemsize and kind ('i' signed, 'u' unsigned, 'f' float).
template <class T>
constexpr char value_kind_of() {
  if constexpr (std::is_floating_point_v<T>) return 'f';
  else if constexpr (std::is_signed_v<T>) return 'i';
  else return 'u';
}
/// The typecode of the array module / multiprocessing.Value for T on this platform.
template <class T>
constexpr char default_typecode_of() {
  if constexpr (std::is_same_v<T, float>) return 'f';
  else if constexpr (std::is_same_v<T, double>) return 'd';
  else if constexpr (sizeof(T) == 1) return std::is_signed_v<T> ? 'b' : 'B';
  else if constexpr (sizeof(T) == 2) return std::is_signed_v<T> ? 'h' : 'H';
  else if constexpr (sizeof(T) == 4) return std::is_signed_v<T> ? 'i' : 'I';
  else return std::is_signed_v<T> ? 'q' : 'Q';
}
/// Creates / attaches a value segment and returns its state (throws on a mismatch).
layout::ValueState* value_state(const Segment& seg, uint32_t itemsize, char kind);
Segment create_value_segment(uint32_t itemsize, char kind, char typecode, const void* initial);
void* value_bytes(layout::ValueState* st) noexcept;
/// The typecode a value segment was created with ('i', 'l', 'q', 'd', ...).
char value_typecode(const Segment& seg) noexcept;
}  // namespace detail

/// One number in shared memory, as multiprocessing.Value: T is one of the fixed-size integer
/// types or float/double (typecodes b B h H i I l L q Q f d). Every operation is atomic;
/// get_lock() is a Mutex beside it for compound updates (as Value's get_lock()).
template <class T>
class SharedValue : public SyncObject {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool> &&
                    (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8),
                "SharedValue holds a fixed-size integer, float or double");

 public:
  static SharedValue create(T initial = T{}, char typecode = detail::default_typecode_of<T>()) {
    return from_segment(
        detail::create_value_segment(sizeof(T), detail::value_kind_of<T>(), typecode, &initial));
  }
  static SharedValue attach(std::string_view handle) {
    return from_segment(Segment::attach(handle));
  }
  /// IncompatibleSegmentError when the segment holds a value of another type.
  static SharedValue from_segment(Segment seg) {
    layout::ValueState* st = detail::value_state(seg, sizeof(T), detail::value_kind_of<T>());
    SharedValue v;
    v.p_ = static_cast<T*>(detail::value_bytes(st));
    v.lock_ = detail::value_mutex(seg, st);
    v.seg_ = std::move(seg);
    return v;
  }
  SharedValue() = default;

  T load() const noexcept { return ref().load(std::memory_order_seq_cst); }
  void store(T v) noexcept { ref().store(v, std::memory_order_seq_cst); }
  /// Adds `d` and returns the new value (integers wrap as their unsigned form does).
  T add(T d) noexcept {
    if constexpr (std::is_floating_point_v<T>) {
      T old = ref().load(std::memory_order_relaxed);
      while (!ref().compare_exchange_weak(old, old + d, std::memory_order_seq_cst,
                                          std::memory_order_relaxed)) {
      }
      return old + d;
    } else {
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(ref().fetch_add(d, std::memory_order_seq_cst)) +
                            static_cast<U>(d));
    }
  }
  /// Stores `v` and returns the old value.
  T exchange(T v) noexcept { return ref().exchange(v, std::memory_order_seq_cst); }
  /// If the value equals *expected, stores `desired` and returns true; else writes the value
  /// into *expected and returns false. Floats compare by bits.
  bool compare_exchange(T& expected, T desired) noexcept {
    return ref().compare_exchange_strong(expected, desired, std::memory_order_seq_cst);
  }
  Mutex& get_lock() noexcept { return lock_; }
  char typecode() const noexcept { return detail::value_typecode(seg_); }

 private:
  std::atomic_ref<T> ref() const noexcept { return std::atomic_ref<T>(*p_); }
  T* p_ = nullptr;
  Mutex lock_;
};

}  // namespace shoal
