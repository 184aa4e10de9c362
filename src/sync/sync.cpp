// src/sync/sync.cpp — the synchronisation objects of include/shoal/sync.hpp over the layouts
// of src/layout/sync_layout.hpp. Design note: docs/design/sync.md.
#include "shoal/sync.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "layout/sync_layout.hpp"
#include "platform/futex.hpp"
#include "platform/platform.hpp"
#include "sync/recursive_lock.hpp"
#include "sync/robust_mutex.hpp"
#include "sync/sync_header.hpp"

namespace shoal {

using layout::SyncHeader;
using layout::SyncType;

namespace {

// Waits sleep at most this long before re-checking what a dead peer may have left undone (a
// waker that died between changing a word and waking, a dead party or unit holder): the worst
// extra latency after such a death.
constexpr uint64_t kFirstSliceNs = 10'000'000;  // 10 ms
constexpr uint64_t kMaxSliceNs = 200'000'000;   // 200 ms

platform::Deadline pd(Deadline d) noexcept { return platform::Deadline{d.ns}; }

platform::Deadline slice_end(uint64_t slice, Deadline d) noexcept {
  platform::Deadline e = platform::Deadline::after_ns(slice);
  return d.ns < e.ns ? pd(d) : e;
}

const char* type_name(uint32_t t) noexcept {
  switch (static_cast<SyncType>(t)) {
    case SyncType::kMutex: return "mutex";
    case SyncType::kRecursiveMutex: return "recursive mutex";
    case SyncType::kSemaphore: return "semaphore";
    case SyncType::kEvent: return "event";
    case SyncType::kCondition: return "condition";
    case SyncType::kBarrier: return "barrier";
    case SyncType::kValue: return "value";
  }
  return "unknown";
}

// A new sync segment with its header written (before any handle exists).
Segment create_sync(SyncType type, uint32_t p0 = 0, uint32_t p1 = 0, uint32_t p2 = 0) {
  Segment seg = Segment::create(layout::kSyncSegmentBytes, {ObjectKind::kSync, false});
  SyncHeader h{};
  h.magic = layout::kSyncMagic;
  h.version = layout::kSyncVersion;
  h.type = static_cast<uint32_t>(type);
  h.param[0] = p0;
  h.param[1] = p1;
  h.param[2] = p2;
  std::memcpy(seg.data(), &h, sizeof h);
  return seg;
}

// The segment's header checked (H1-H3) and of the wanted type; throws
// IncompatibleSegmentError / CorruptSegmentError, never crashes.
SyncHeader check_sync(const Segment& seg, SyncType want) {
  if (!seg.valid()) throw_error(Errc::kInvalidArgument, "segment is closed");
  if (seg.kind() != ObjectKind::kSync) {
    throw_error(Errc::kIncompatible,
                "segment holds kind " + std::string(kind_name(static_cast<uint32_t>(seg.kind()))) +
                    ", not a sync object");
  }
  Result<SyncHeader> r = sync::parse_sync_header(seg.data(), seg.size());
  if (!r.has_value()) r.status().throw_if_error();
  const SyncHeader h = r.value();
  if (h.type != static_cast<uint32_t>(want)) {
    throw_error(Errc::kIncompatible, std::string("the sync object is a ") + type_name(h.type) +
                                         ", not a " + type_name(static_cast<uint32_t>(want)));
  }
  return h;
}

template <class T>
T* body(const Segment& seg) noexcept {
  return reinterpret_cast<T*>(seg.data() + layout::kSyncBodyOffset);
}

// A robust lock result as a SyncStatus; errors (a corrupt word) throw.
SyncStatus status_of(Result<sync::Locked> r) {
  if (!r.has_value()) {
    if (r.status().code() == Errc::kLockTimeout) return SyncStatus::kTimeout;
    r.status().throw_if_error();
  }
  switch (r.value()) {
    case sync::Locked::kOk: return SyncStatus::kOk;
    case sync::Locked::kOwnerDied: return SyncStatus::kOwnerDied;
    case sync::Locked::kInterrupted: return SyncStatus::kInterrupted;
  }
  return SyncStatus::kOk;
}

// A futex wait error (the word unmapped: a caller bug) as an exception.
platform::FutexWait wait_or_throw(const std::atomic<uint32_t>* w, uint32_t expected,
                                  platform::Deadline d) {
  Result<platform::FutexWait> r = platform::futex_wait(w, expected, d);
  if (!r.has_value()) r.status().throw_if_error();
  return r.value();
}

}  // namespace

namespace sync {

Result<SyncHeader> parse_sync_header(const std::byte* data, uint64_t size) noexcept {
  if (data == nullptr || size < layout::kSyncSegmentBytes) {
    return {Errc::kCorrupt, "sync segment of " + std::to_string(size) +
                                " bytes is smaller than " +
                                std::to_string(layout::kSyncSegmentBytes)};
  }
  SyncHeader h;
  std::memcpy(&h, data, sizeof h);  // a local copy: another process may change the bytes
  if (h.magic != layout::kSyncMagic) return {Errc::kCorrupt, "sync header: bad magic at offset 0"};
  if (h.version != layout::kSyncVersion) {
    return {Errc::kIncompatible, "sync header has version " + std::to_string(h.version) +
                                     ", this build reads " +
                                     std::to_string(layout::kSyncVersion)};
  }
  for (uint32_t r : h.reserved) {
    if (r != 0) {
      return {Errc::kIncompatible, "sync header uses reserved fields: made by a newer shoal"};
    }
  }
  if (h.type < layout::kSyncTypeFirst || h.type > layout::kSyncTypeLast) {
    return {Errc::kCorrupt,
            "sync header at offset 12: type " + std::to_string(h.type) + " is none this build knows"};
  }
  switch (static_cast<SyncType>(h.type)) {
    case SyncType::kSemaphore:
      if (h.param[0] > layout::kSemaphoreMax ||
          (h.param[1] & ~(layout::kSemBounded | layout::kSemTracked)) != 0 ||
          ((h.param[1] & layout::kSemBounded) != 0 && (h.param[1] & layout::kSemTracked) == 0)) {
        return {Errc::kCorrupt, "semaphore header: initial value or flags out of range"};
      }
      break;
    case SyncType::kBarrier: {
      if (h.param[0] < 1 || h.param[0] > layout::kBarrierSlots) {
        return {Errc::kCorrupt, "barrier header: parties " + std::to_string(h.param[0]) +
                                    " outside 1.." + std::to_string(layout::kBarrierSlots)};
      }
      double t;
      std::memcpy(&t, &h.param[2], sizeof t);
      if (std::isnan(t) || t < 0) return {Errc::kCorrupt, "barrier header: bad timeout"};
      break;
    }
    case SyncType::kValue: {
      const uint32_t size = h.param[0];
      const uint32_t kind = h.param[1];
      const bool ok_size = size == 1 || size == 2 || size == 4 || size == 8;
      const bool ok_kind = kind == 'i' || kind == 'u' || (kind == 'f' && (size == 4 || size == 8));
      if (!ok_size || !ok_kind) return {Errc::kCorrupt, "value header: bad item size or kind"};
      break;
    }
    default:
      break;
  }
  return h;
}

}  // namespace sync

const char* sync_status_name(SyncStatus s) noexcept {
  switch (s) {
    case SyncStatus::kOk: return "ok";
    case SyncStatus::kOwnerDied: return "owner_died";
    case SyncStatus::kTimeout: return "timeout";
    case SyncStatus::kInterrupted: return "interrupted";
    case SyncStatus::kBroken: return "broken";
  }
  return "unknown";
}

Deadline Deadline::after(double seconds) {
  return Deadline{platform::Deadline::after(seconds).take().ns};
}

// ---- Mutex ---------------------------------------------------------------------------------

Mutex Mutex::create() { return from_segment(create_sync(SyncType::kMutex)); }
Mutex Mutex::attach(std::string_view handle) { return from_segment(Segment::attach(handle)); }
Mutex Mutex::from_segment(Segment seg) {
  check_sync(seg, SyncType::kMutex);
  layout::MutexState* st = body<layout::MutexState>(seg);
  return Mutex(std::move(seg), st);
}

SyncStatus Mutex::lock(Deadline deadline, bool interruptible) {
  sync::RobustMutex m(&st_->word);
  if (m.try_lock_fast()) {  // the uncontended case: one CAS, no call
    if (st_->owner_died.load(std::memory_order_relaxed) != 0) {
      st_->owner_died.store(0, std::memory_order_relaxed);  // as below
    }
    return SyncStatus::kOk;
  }
  SyncStatus s = status_of(m.lock_quiet(pd(deadline), interruptible));
  if (s == SyncStatus::kOwnerDied) {
    st_->owner_died.store(1, std::memory_order_relaxed);
  } else if (s == SyncStatus::kOk && st_->owner_died.load(std::memory_order_relaxed) != 0) {
    // A holder that took over and died before unlocking left the flag set: its successor was
    // told kOwnerDied by the takeover, not this lock; a plain kOk lock clears it.
    st_->owner_died.store(0, std::memory_order_relaxed);
  }
  return s;
}

void Mutex::unlock() {
  sync::RobustMutex m(&st_->word);
  // The common case in one CAS: held by this process, nobody waiting, no owner-died flag to
  // clear (the flag is cleared only by its holder, so it is read while we hold the lock).
  if (st_->owner_died.load(std::memory_order_relaxed) == 0 && m.unlock_fast()) return;
  if (!m.held_by_this_process()) {
    throw_error(Errc::kInvalidArgument, "Mutex::unlock: this process does not hold the lock");
  }
  st_->owner_died.store(0, std::memory_order_relaxed);
  m.unlock();
}

bool Mutex::owner_died() const noexcept {
  return st_->owner_died.load(std::memory_order_relaxed) != 0;
}
bool Mutex::held_by_this_process() const noexcept {
  return sync::RobustMutex(&st_->word).held_by_this_process();
}
bool Mutex::locked() const noexcept { return sync::RobustMutex(&st_->word).holder_pid() != 0; }

// ---- RecursiveMutex ------------------------------------------------------------------------

RecursiveMutex RecursiveMutex::create() {
  return from_segment(create_sync(SyncType::kRecursiveMutex));
}
RecursiveMutex RecursiveMutex::attach(std::string_view handle) {
  return from_segment(Segment::attach(handle));
}
RecursiveMutex RecursiveMutex::from_segment(Segment seg) {
  check_sync(seg, SyncType::kRecursiveMutex);
  RecursiveMutex m;
  m.st_ = body<layout::RecursiveMutexState>(seg);
  m.seg_ = std::move(seg);
  return m;
}

bool RecursiveMutex::held_by_this_thread() const noexcept {
  return sync::RecursiveLock(st_).held_by_this_thread();
}

SyncStatus RecursiveMutex::lock(Deadline deadline, bool interruptible) {
  return status_of(sync::RecursiveLock(st_).lock(pd(deadline), interruptible));
}

void RecursiveMutex::unlock() {
  if (!sync::RecursiveLock(st_).unlock()) {
    throw_error(Errc::kInvalidArgument, "RecursiveMutex::unlock: this thread does not hold the lock");
  }
}

uint32_t RecursiveMutex::count() const noexcept { return sync::RecursiveLock(st_).depth(); }

// ---- Semaphore -----------------------------------------------------------------------------

namespace {

using layout::SemaphoreState;
using layout::SemSlot;

// Under the table lock: frees the slots of dead processes and recomputes count from capacity
// and the units of the slots left (S2). Returns false when the state breaks S2 (corrupt).
bool sem_reclaim(SemaphoreState* st) noexcept {
  uint64_t held = 0;
  for (SemSlot& s : st->slots) {
    const uint32_t pid = s.pid.load(std::memory_order_relaxed);
    if (pid == 0) continue;
    if (sync::process_gone(pid, s.tag.load(std::memory_order_relaxed))) {
      s.units.store(0, std::memory_order_relaxed);
      s.pid.store(0, std::memory_order_relaxed);
      continue;
    }
    held += s.units.load(std::memory_order_relaxed);
  }
  const uint32_t cap = st->capacity.load(std::memory_order_relaxed);
  if (held > cap) return false;
  st->count.store(cap - static_cast<uint32_t>(held), std::memory_order_release);
  return true;
}

// Takes the table lock; a dead previous holder may have stopped midway through any update, so
// the state is rebuilt from what is authoritative (capacity and the slots' units).
void sem_lock(SemaphoreState* st) {
  Result<sync::Locked> r = sync::RobustMutex(&st->table_lock).lock();
  if (!r.has_value()) r.status().throw_if_error();
  if (r.value() == sync::Locked::kOwnerDied) {
    if (!sem_reclaim(st)) {
      sync::RobustMutex(&st->table_lock).unlock();
      throw_error(Errc::kCorrupt, "semaphore: units held exceed its capacity");
    }
  }
}

void sem_unlock(SemaphoreState* st) noexcept {
  sync::RobustMutex(&st->table_lock).unlock();
}

SemSlot* sem_my_slot(SemaphoreState* st, bool claim) noexcept {
  const uint32_t me = sync::self_pid();
  const uint32_t tag = sync::self_tag();
  SemSlot* free_slot = nullptr;
  for (SemSlot& s : st->slots) {
    const uint32_t pid = s.pid.load(std::memory_order_relaxed);
    if (pid == me && s.tag.load(std::memory_order_relaxed) == tag) return &s;
    if (pid == 0 && free_slot == nullptr) free_slot = &s;
  }
  if (!claim || free_slot == nullptr) return nullptr;
  free_slot->units.store(0, std::memory_order_relaxed);
  free_slot->tag.store(tag, std::memory_order_relaxed);
  free_slot->pid.store(me, std::memory_order_relaxed);
  return free_slot;
}

}  // namespace

Semaphore Semaphore::create(uint32_t value, bool bounded, bool recover) {
  if (value > kMaxValue) {
    throw_error(Errc::kInvalidArgument, "semaphore value " + std::to_string(value) +
                                            " exceeds " + std::to_string(kMaxValue));
  }
  uint32_t flags = 0;
  if (bounded) flags |= layout::kSemBounded | layout::kSemTracked;
  if (recover) flags |= layout::kSemTracked;
  Segment seg = create_sync(SyncType::kSemaphore, value, flags);
  SemaphoreState* st = body<SemaphoreState>(seg);
  st->count.store(value, std::memory_order_relaxed);
  st->capacity.store(value, std::memory_order_relaxed);
  return from_segment(std::move(seg));
}
Semaphore Semaphore::attach(std::string_view handle) {
  return from_segment(Segment::attach(handle));
}
Semaphore Semaphore::from_segment(Segment seg) {
  SyncHeader h = check_sync(seg, SyncType::kSemaphore);
  Semaphore s;
  s.st_ = body<SemaphoreState>(seg);
  s.initial_ = h.param[0];
  s.flags_ = h.param[1];
  s.seg_ = std::move(seg);
  return s;
}

uint32_t Semaphore::value() const {
  if (!tracked()) return st_->count.load(std::memory_order_relaxed);
  // A dead holder's units return only when someone reclaims them (an acquire that finds no
  // unit, or a takeover of the table lock): without this a count read after a death, with
  // units still free, would miss them until the next acquire ran short.
  sem_lock(st_);
  const uint32_t before = st_->count.load(std::memory_order_relaxed);
  const bool ok = sem_reclaim(st_);
  const uint32_t c = st_->count.load(std::memory_order_relaxed);
  sem_unlock(st_);
  if (!ok) throw_error(Errc::kCorrupt, "semaphore: units held exceed its capacity");
  // Units given back: wake as many waiters now rather than at the end of their slices.
  if (c > before) (void)platform::futex_wake(&st_->count, static_cast<int>(c - before));
  return c;
}
uint32_t Semaphore::initial_value() const noexcept { return initial_; }
bool Semaphore::bounded() const noexcept { return (flags_ & layout::kSemBounded) != 0; }
bool Semaphore::tracked() const noexcept { return (flags_ & layout::kSemTracked) != 0; }

uint32_t Semaphore::units_held_by_this_process() const noexcept {
  if (!tracked()) return 0;
  // A snapshot without the lock: exact when no other thread of this process is mid-update.
  SemSlot* s = sem_my_slot(st_, false);
  return s == nullptr ? 0 : s->units.load(std::memory_order_relaxed);
}

SyncStatus Semaphore::acquire(Deadline deadline, bool interruptible) {
  if (tracked()) return acquire_tracked(deadline, interruptible);
  std::atomic<uint32_t>& count = st_->count;
  uint64_t slice = kFirstSliceNs;
  for (;;) {
    uint32_t v = count.load(std::memory_order_relaxed);
    while (v > 0) {
      if (count.compare_exchange_weak(v, v - 1, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
        return SyncStatus::kOk;
      }
    }
    if (platform::Deadline{deadline.ns}.passed()) return SyncStatus::kTimeout;
    // Bounded slices: a releaser that died between its add and its wake must not leave us
    // asleep on a count that is no longer 0.
    platform::FutexWait w = wait_or_throw(&count, 0, slice_end(slice, deadline));
    if (w == platform::FutexWait::kInterrupted && interruptible) return SyncStatus::kInterrupted;
    if (w == platform::FutexWait::kTimedOut) slice = std::min(slice * 2, kMaxSliceNs);
  }
}

SyncStatus Semaphore::acquire_tracked(Deadline deadline, bool interruptible) {
  uint64_t slice = kFirstSliceNs;
  bool reclaim = true;  // on the first look at a count of 0, and after every timed-out slice
  for (;;) {
    sem_lock(st_);
    uint32_t c = st_->count.load(std::memory_order_relaxed);
    if (c == 0 && reclaim) {
      if (!sem_reclaim(st_)) {
        sem_unlock(st_);
        throw_error(Errc::kCorrupt, "semaphore: units held exceed its capacity");
      }
      c = st_->count.load(std::memory_order_relaxed);
      if (c > 1) (void)platform::futex_wake(&st_->count, static_cast<int>(c - 1));
    }
    reclaim = false;
    if (c > 0) {
      SemSlot* mine = sem_my_slot(st_, true);
      if (mine == nullptr && sem_reclaim(st_)) mine = sem_my_slot(st_, true);
      if (mine == nullptr) {
        sem_unlock(st_);
        throw_error(Errc::kOutOfSpace, "semaphore: " + std::to_string(layout::kSemSlots) +
                                           " processes hold units already");
      }
      // Units first, then count: a death between the two is repaired from the units (S2).
      mine->units.store(mine->units.load(std::memory_order_relaxed) + 1,
                        std::memory_order_relaxed);
      st_->count.store(c - 1, std::memory_order_relaxed);
      sem_unlock(st_);
      return SyncStatus::kOk;
    }
    sem_unlock(st_);
    if (platform::Deadline{deadline.ns}.passed()) return SyncStatus::kTimeout;
    platform::FutexWait w = wait_or_throw(&st_->count, 0, slice_end(slice, deadline));
    if (w == platform::FutexWait::kInterrupted && interruptible) return SyncStatus::kInterrupted;
    if (w == platform::FutexWait::kTimedOut) {
      slice = std::min(slice * 2, kMaxSliceNs);
      reclaim = true;
    }
  }
}

void Semaphore::release(uint32_t n) {
  if (n == 0) return;
  if (!tracked()) {
    uint32_t v = st_->count.load(std::memory_order_relaxed);
    do {
      if (v > kMaxValue - std::min(n, kMaxValue) ) {
        throw_error(Errc::kInvalidArgument, "semaphore value would exceed " +
                                                std::to_string(kMaxValue));
      }
    } while (!st_->count.compare_exchange_weak(v, v + n, std::memory_order_release,
                                               std::memory_order_relaxed));
    (void)platform::futex_wake(&st_->count, static_cast<int>(std::min<uint32_t>(n, INT32_MAX)));
    return;
  }
  sem_lock(st_);
  const uint32_t c = st_->count.load(std::memory_order_relaxed);
  SemSlot* mine = sem_my_slot(st_, false);
  const uint32_t my_units = mine == nullptr ? 0 : mine->units.load(std::memory_order_relaxed);
  uint32_t rest = n - std::min(n, my_units);
  if (bounded()) {
    // Units this process did not take are paid from other live holders (a release on their
    // behalf, as threading allows); beyond what anyone holds it is above the initial value.
    uint64_t others = 0;
    for (SemSlot& s : st_->slots) {
      if (&s != mine && s.pid.load(std::memory_order_relaxed) != 0) {
        others += s.units.load(std::memory_order_relaxed);
      }
    }
    if (rest > others) {
      sem_unlock(st_);
      throw_error(Errc::kInvalidArgument, "semaphore released too many times (bounded: value "
                                          "would exceed its initial value " +
                                              std::to_string(initial_) + ")");
    }
  } else if (static_cast<uint64_t>(st_->capacity.load(std::memory_order_relaxed)) + rest >
             kMaxValue) {
    sem_unlock(st_);
    throw_error(Errc::kInvalidArgument, "semaphore value would exceed " + std::to_string(kMaxValue));
  }
  // The authoritative fields first (units, capacity), count last: S2 rebuilds count after a
  // death anywhere in between.
  if (mine != nullptr) {
    const uint32_t left = my_units - std::min(n, my_units);
    mine->units.store(left, std::memory_order_relaxed);
    if (left == 0) mine->pid.store(0, std::memory_order_relaxed);
  }
  if (bounded()) {
    for (SemSlot& s : st_->slots) {
      if (rest == 0) break;
      if (&s == mine || s.pid.load(std::memory_order_relaxed) == 0) continue;
      const uint32_t u = s.units.load(std::memory_order_relaxed);
      const uint32_t take = std::min(u, rest);
      s.units.store(u - take, std::memory_order_relaxed);
      rest -= take;
    }
  } else {
    st_->capacity.store(st_->capacity.load(std::memory_order_relaxed) + rest,
                        std::memory_order_relaxed);
  }
  st_->count.store(c + n, std::memory_order_release);
  sem_unlock(st_);
  (void)platform::futex_wake(&st_->count, static_cast<int>(std::min<uint32_t>(n, INT32_MAX)));
}

// ---- Event ---------------------------------------------------------------------------------

Event Event::create() { return from_segment(create_sync(SyncType::kEvent)); }
Event Event::attach(std::string_view handle) { return from_segment(Segment::attach(handle)); }
Event Event::from_segment(Segment seg) {
  check_sync(seg, SyncType::kEvent);
  Event e;
  e.st_ = body<layout::EventState>(seg);
  e.seg_ = std::move(seg);
  return e;
}

void Event::set() {
  std::atomic<uint32_t>& w = st_->word;
  uint32_t v = w.load(std::memory_order_relaxed);
  do {
    if ((v & 1) != 0) return;  // already set: every waiter has seen it or will
  } while (!w.compare_exchange_weak(v, (v + 2) | 1, std::memory_order_release,
                                    std::memory_order_relaxed));
  (void)platform::futex_wake_all(&w);
}

void Event::clear() { st_->word.fetch_and(~1u, std::memory_order_relaxed); }

bool Event::is_set() const noexcept { return (st_->word.load(std::memory_order_acquire) & 1) != 0; }

SyncStatus Event::wait(Deadline deadline, bool interruptible) {
  std::atomic<uint32_t>& w = st_->word;
  uint32_t v0 = w.load(std::memory_order_acquire);
  if ((v0 & 1) != 0) return SyncStatus::kOk;
  uint64_t slice = kFirstSliceNs;
  for (;;) {
    platform::FutexWait r = wait_or_throw(&w, v0, slice_end(slice, deadline));
    const uint32_t v = w.load(std::memory_order_acquire);
    // The set count moved: a set happened since we looked, even if a clear followed it.
    if ((v >> 1) != (v0 >> 1) || (v & 1) != 0) return SyncStatus::kOk;
    v0 = v;
    if (r == platform::FutexWait::kInterrupted && interruptible) return SyncStatus::kInterrupted;
    if (r == platform::FutexWait::kTimedOut) {
      if (platform::Deadline{deadline.ns}.passed()) return SyncStatus::kTimeout;
      slice = std::min(slice * 2, kMaxSliceNs);
    }
  }
}

// ---- Condition -----------------------------------------------------------------------------

Condition Condition::create() { return from_segment(create_sync(SyncType::kCondition)); }
Condition Condition::attach(std::string_view handle) {
  return from_segment(Segment::attach(handle));
}
Condition Condition::from_segment(Segment seg) {
  check_sync(seg, SyncType::kCondition);
  Condition c;
  c.st_ = body<layout::ConditionState>(seg);
  c.m_ = Mutex(seg, &c.st_->lock);
  c.seg_ = std::move(seg);
  return c;
}

SyncStatus Condition::wait(Deadline deadline, bool interruptible) {
  if (!m_.held_by_this_process()) {
    throw_error(Errc::kInvalidArgument, "Condition::wait: this process does not hold the lock");
  }
  std::atomic<uint32_t>& seq = st_->seq;
  // Read under the lock: a notifier (holding the lock, as it must) bumps seq after this, so
  // the futex wait below sees the change or is asleep when the wake comes.
  const uint32_t s0 = seq.load(std::memory_order_relaxed);
  m_.unlock();
  SyncStatus out = SyncStatus::kTimeout;
  uint64_t slice = kFirstSliceNs;
  for (;;) {
    platform::FutexWait r = platform::FutexWait::kTimedOut;
    Result<platform::FutexWait> fw = platform::futex_wait(&seq, s0, slice_end(slice, deadline));
    if (fw.has_value()) r = fw.value();
    if (seq.load(std::memory_order_acquire) != s0) {
      out = SyncStatus::kOk;
      break;
    }
    if (r == platform::FutexWait::kInterrupted && interruptible) {
      out = SyncStatus::kInterrupted;
      break;
    }
    if (r == platform::FutexWait::kTimedOut || !fw.has_value()) {
      if (platform::Deadline{deadline.ns}.passed()) break;
      slice = std::min(slice * 2, kMaxSliceNs);
    }
  }
  // Re-take the lock whatever happened (as threading.Condition.wait does), not interruptible.
  SyncStatus l = m_.lock();
  return l == SyncStatus::kOwnerDied ? l : out;
}

void Condition::notify(uint32_t n) {
  if (n == 0) return;
  // No waiter count to keep right across deaths: every notify bumps the sequence and wakes
  // up to n sleepers; a waiter that died is no longer asleep in the kernel, so it takes no
  // wake from a live one.
  st_->seq.fetch_add(1, std::memory_order_release);
  (void)platform::futex_wake(&st_->seq, static_cast<int>(std::min<uint32_t>(n, INT32_MAX)));
}

void Condition::notify_all() {
  st_->seq.fetch_add(1, std::memory_order_release);
  (void)platform::futex_wake_all(&st_->seq);
}

namespace {

// The sleep of a wait over a given lock (the lock released already): until seq moves from s0
// (kOk), the deadline (kTimeout) or, interruptible, a signal (kInterrupted); in slices, so a
// notifier that died between its bump and its wake costs one slice.
SyncStatus cond_sleep(std::atomic<uint32_t>& seq, uint32_t s0, Deadline deadline,
                      bool interruptible) {
  uint64_t slice = kFirstSliceNs;
  for (;;) {
    platform::FutexWait r = platform::FutexWait::kTimedOut;
    Result<platform::FutexWait> fw = platform::futex_wait(&seq, s0, slice_end(slice, deadline));
    if (fw.has_value()) r = fw.value();
    if (seq.load(std::memory_order_acquire) != s0) return SyncStatus::kOk;
    if (r == platform::FutexWait::kInterrupted && interruptible) return SyncStatus::kInterrupted;
    if (r == platform::FutexWait::kTimedOut || !fw.has_value()) {
      if (platform::Deadline{deadline.ns}.passed()) return SyncStatus::kTimeout;
      slice = std::min(slice * 2, kMaxSliceNs);
    }
  }
}

}  // namespace

SyncStatus Condition::wait(Mutex& lock, Deadline deadline, bool interruptible) {
  if (!lock.held_by_this_process()) {
    throw_error(Errc::kInvalidArgument, "Condition::wait: this process does not hold the lock");
  }
  // Read under the given lock, which every notifier holds while it bumps seq (as wait()).
  const uint32_t s0 = st_->seq.load(std::memory_order_relaxed);
  lock.unlock();
  const SyncStatus out = cond_sleep(st_->seq, s0, deadline, interruptible);
  const SyncStatus l = lock.lock();  // whatever happened, not interruptible (as wait())
  return l == SyncStatus::kOwnerDied ? l : out;
}

SyncStatus Condition::wait(RecursiveMutex& lock, Deadline deadline, bool interruptible) {
  if (!lock.held_by_this_thread()) {
    throw_error(Errc::kInvalidArgument, "Condition::wait: this thread does not hold the lock");
  }
  const uint32_t depth = lock.count();
  const uint32_t s0 = st_->seq.load(std::memory_order_relaxed);
  // Released fully (threading's _release_save): only the last unlock frees the word; a death
  // before it leaves the word held by a dead process, which the next locker takes over.
  for (uint32_t i = 0; i < depth; ++i) lock.unlock();
  const SyncStatus out = cond_sleep(st_->seq, s0, deadline, interruptible);
  // Restored (_acquire_restore): the first lock takes the word (a takeover gives depth 1), the
  // others only count, so the depth is n again on every return.
  const SyncStatus l = lock.lock();
  for (uint32_t i = 1; i < depth; ++i) (void)lock.lock();
  return l == SyncStatus::kOwnerDied ? l : out;
}

// ---- Barrier -------------------------------------------------------------------------------

namespace {

using layout::BarrierState;
using layout::kBarrierBroken;

void bar_lock(BarrierState* st) {
  Result<sync::Locked> r = sync::RobustMutex(&st->lock).lock();
  if (!r.has_value()) r.status().throw_if_error();
  if (r.value() == sync::Locked::kOwnerDied) {
    // A party died midway through an update: nothing says how far it got, so the current
    // generation is broken (as a party that died while waiting would break it).
    st->gen.fetch_or(kBarrierBroken, std::memory_order_release);
    st->count.store(0, std::memory_order_relaxed);
    (void)platform::futex_wake_all(&st->gen);
  }
}
void bar_unlock(BarrierState* st) noexcept { sync::RobustMutex(&st->lock).unlock(); }

// Under the lock: breaks the current generation and wakes every waiter.
void bar_break(BarrierState* st) noexcept {
  st->count.store(0, std::memory_order_relaxed);
  st->gen.fetch_or(kBarrierBroken, std::memory_order_release);
  (void)platform::futex_wake_all(&st->gen);
}

// Under the lock: whether a waiting party's process died.
bool bar_party_died(BarrierState* st) noexcept {
  const uint32_t n = std::min(st->count.load(std::memory_order_relaxed), layout::kBarrierSlots);
  for (uint32_t i = 0; i < n; ++i) {
    if (sync::process_gone(st->slots[i].pid.load(std::memory_order_relaxed),
                           st->slots[i].tag.load(std::memory_order_relaxed))) {
      return true;
    }
  }
  return false;
}

}  // namespace

Barrier Barrier::create(uint32_t parties, double timeout) {
  if (parties < 1 || parties > kMaxParties) {
    throw_error(Errc::kInvalidArgument, "a barrier has 1 to " + std::to_string(kMaxParties) +
                                            " parties, got " + std::to_string(parties));
  }
  if (std::isnan(timeout) || timeout < 0) {
    throw_error(Errc::kInvalidArgument, "a barrier's timeout is a number of seconds >= 0");
  }
  uint32_t t[2];
  std::memcpy(t, &timeout, sizeof timeout);
  Segment seg = create_sync(SyncType::kBarrier, parties, 0, t[0]);
  std::memcpy(seg.data() + offsetof(SyncHeader, param) + 3 * sizeof(uint32_t), &t[1], sizeof t[1]);
  return from_segment(std::move(seg));
}
Barrier Barrier::attach(std::string_view handle) { return from_segment(Segment::attach(handle)); }
Barrier Barrier::from_segment(Segment seg) {
  SyncHeader h = check_sync(seg, SyncType::kBarrier);
  Barrier b;
  b.st_ = body<BarrierState>(seg);
  b.parties_ = h.param[0];
  std::memcpy(&b.timeout_, &h.param[2], sizeof b.timeout_);
  b.seg_ = std::move(seg);
  return b;
}

bool Barrier::broken() const noexcept {
  return (st_->gen.load(std::memory_order_acquire) & kBarrierBroken) != 0;
}
uint32_t Barrier::n_waiting() const noexcept { return st_->count.load(std::memory_order_relaxed); }

SyncStatus Barrier::wait(Deadline deadline, bool interruptible, uint32_t* index) {
  bar_lock(st_);
  const uint32_t g = st_->gen.load(std::memory_order_relaxed);
  if ((g & kBarrierBroken) != 0) {
    bar_unlock(st_);
    return SyncStatus::kBroken;
  }
  const uint32_t arrived = st_->count.load(std::memory_order_relaxed);
  if (arrived >= parties_) {  // only a corrupt count; never written by this protocol
    bar_break(st_);
    bar_unlock(st_);
    return SyncStatus::kBroken;
  }
  if (index != nullptr) *index = arrived;
  if (arrived + 1 == parties_) {  // the last party: the next generation starts
    st_->count.store(0, std::memory_order_relaxed);
    st_->gen.store((g + 2) & ~kBarrierBroken, std::memory_order_release);
    bar_unlock(st_);
    (void)platform::futex_wake_all(&st_->gen);
    return SyncStatus::kOk;
  }
  st_->slots[arrived].tag.store(sync::self_tag(), std::memory_order_relaxed);
  st_->slots[arrived].pid.store(sync::self_pid(), std::memory_order_relaxed);
  st_->count.store(arrived + 1, std::memory_order_relaxed);
  bar_unlock(st_);

  // What a wake-up means: our generation passed (gen moved on, and no reset() broke it), or
  // it is broken.
  auto outcome = [&](uint32_t v) -> SyncStatus {
    if ((v >> 1) != (g >> 1)) {
      return st_->reset_gen.load(std::memory_order_acquire) == (g >> 1) + 1 ? SyncStatus::kBroken
                                                                            : SyncStatus::kOk;
    }
    return (v & kBarrierBroken) != 0 ? SyncStatus::kBroken : SyncStatus::kTimeout;
  };
  uint64_t slice = kFirstSliceNs;
  for (;;) {
    platform::FutexWait r = wait_or_throw(&st_->gen, g, slice_end(slice, deadline));
    SyncStatus o = outcome(st_->gen.load(std::memory_order_acquire));
    if (o != SyncStatus::kTimeout) return o;
    const bool expired = platform::Deadline{deadline.ns}.passed();
    const bool interrupted = r == platform::FutexWait::kInterrupted && interruptible;
    if (r != platform::FutexWait::kTimedOut && !interrupted) continue;
    bar_lock(st_);
    o = outcome(st_->gen.load(std::memory_order_relaxed));
    if (o != SyncStatus::kTimeout) {
      bar_unlock(st_);
      return o;
    }
    if (interrupted) {
      // Withdraw: remove one slot of this process (all of them are alike) by moving the last
      // one into it, so that the others keep waiting for a full set of parties.
      // Bounded by parties (checked at attach): a count another process overwrote must not
      // index past the table.
      const uint32_t n = std::min(st_->count.load(std::memory_order_relaxed), parties_);
      for (uint32_t i = 0; i < n; ++i) {
        if (st_->slots[i].pid.load(std::memory_order_relaxed) == sync::self_pid()) {
          st_->slots[i].pid.store(st_->slots[n - 1].pid.load(std::memory_order_relaxed),
                                  std::memory_order_relaxed);
          st_->slots[i].tag.store(st_->slots[n - 1].tag.load(std::memory_order_relaxed),
                                  std::memory_order_relaxed);
          st_->count.store(n - 1, std::memory_order_relaxed);
          break;
        }
      }
      bar_unlock(st_);
      return SyncStatus::kInterrupted;
    }
    if (expired) {  // threading.Barrier: a wait that times out breaks the barrier
      bar_break(st_);
      bar_unlock(st_);
      return SyncStatus::kTimeout;
    }
    if (bar_party_died(st_)) {
      bar_break(st_);
      bar_unlock(st_);
      return SyncStatus::kBroken;
    }
    bar_unlock(st_);
    slice = std::min(slice * 2, kMaxSliceNs);
  }
}

void Barrier::abort() {
  bar_lock(st_);
  bar_break(st_);
  bar_unlock(st_);
}

void Barrier::reset() {
  bar_lock(st_);
  const uint32_t g = st_->gen.load(std::memory_order_relaxed);
  if (st_->count.load(std::memory_order_relaxed) > 0 && (g & kBarrierBroken) == 0) {
    // Those waiting now are told kBroken (threading.Barrier.reset), then a new generation.
    st_->reset_gen.store((g >> 1) + 1, std::memory_order_relaxed);
  }
  st_->count.store(0, std::memory_order_relaxed);
  st_->gen.store((g + 2) & ~kBarrierBroken, std::memory_order_release);
  bar_unlock(st_);
  (void)platform::futex_wake_all(&st_->gen);
}

// ---- SharedValue ---------------------------------------------------------------------------

namespace detail {

Segment create_value_segment(uint32_t itemsize, char kind, char typecode, const void* initial) {
  Segment seg = create_sync(SyncType::kValue, itemsize, static_cast<uint32_t>(kind),
                            static_cast<uint32_t>(static_cast<unsigned char>(typecode)));
  std::memcpy(body<layout::ValueState>(seg)->value, initial, itemsize);
  return seg;
}

layout::ValueState* value_state(const Segment& seg, uint32_t itemsize, char kind) {
  SyncHeader h = check_sync(seg, SyncType::kValue);
  if (h.param[0] != itemsize || h.param[1] != static_cast<uint32_t>(kind)) {
    throw_error(Errc::kIncompatible,
                "the shared value holds " + std::to_string(h.param[0]) + "-byte '" +
                    std::string(1, static_cast<char>(h.param[1])) + "' items, not " +
                    std::to_string(itemsize) + "-byte '" + std::string(1, kind) + "'");
  }
  return body<layout::ValueState>(seg);
}

Mutex value_mutex(const Segment& seg, layout::ValueState* st) { return Mutex(seg, &st->lock); }

void* value_bytes(layout::ValueState* st) noexcept { return st->value; }

char value_typecode(const Segment& seg) noexcept {
  SyncHeader h;
  std::memcpy(&h, seg.data(), sizeof h);
  return static_cast<char>(h.param[2]);
}

}  // namespace detail

}  // namespace shoal
