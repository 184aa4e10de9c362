// src/channels/queue.cpp — shoal::Queue (include/shoal/queue.hpp) over a heap block holding a
// QueueHeader and a byte ring (src/layout/queue_layout.hpp). Protocol: docs/design/queue.md.
#include "shoal/queue.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "channels/queue_core.hpp"
#include "layout/queue_layout.hpp"
#include "platform/futex.hpp"
#include "platform/platform.hpp"
#include "platform/spin.hpp"
#include "sync/robust_mutex.hpp"

namespace shoal {

using layout::kSeqMask;
using layout::kSeqWaiters;
using layout::QueueHeader;

const char* queue_status_name(QueueStatus s) noexcept {
  switch (s) {
    case QueueStatus::kOk:
      return "ok";
    case QueueStatus::kFull:
      return "full";
    case QueueStatus::kEmpty:
      return "empty";
    case QueueStatus::kInterrupted:
      return "interrupted";
    case QueueStatus::kTimeout:
      return "timeout";
    case QueueStatus::kClosed:
      return "closed";
  }
  return "?";
}

namespace {

// A lock hold is one copy of a message: microseconds. A put or get whose own deadline has
// passed (try_put, try_get) still waits this long for the lock, so that a non-blocking call
// does not fail because another process held the lock for a moment, while a holder that is
// stopped (SIGSTOP) cannot make it block for ever. A dead holder is detected by the lock itself
// within its first sleep slice (10 ms), well inside this.
constexpr uint64_t kLockGraceNs = 1'000'000'000;
// A side that finds the queue full (empty) first spins watching the other side's futex word,
// without the lock and without announcing itself, so that a peer that is awake hands over
// without any system call on either side; then it sets the waiters bit and sleeps. The spin's
// budget adapts (platform::AdaptiveSpin, one per process for every queue): up to 50 us, which
// covers a Python peer's get-and-put round (several us) with room to spare, so on a machine with
// idle cores a ping-pong never sleeps; down to 2 us (about the fixed 100 pauses this used to
// spin on x86-64) when spins keep failing, because the peer is not running (more runnable
// processes than cores) or has nothing to send (an idle consumer burns 2 us per wait, not
// 50). Measured trade-offs: docs/design/queue.md, "Waiting".
constexpr uint64_t kSpinMinNs = 2'000;
constexpr uint64_t kSpinMaxNs = 50'000;
constinit platform::AdaptiveSpin g_spin(kSpinMinNs, kSpinMaxNs);
// Sleeps are bounded slices, doubling from the first to the last: a waker that died between
// changing the queue and calling futex_wake strands a sleeper for one slice at most.
constexpr uint64_t kFirstSliceNs = 5'000'000;
constexpr uint64_t kMaxSliceNs = 100'000'000;

platform::Deadline pd(Deadline d) noexcept { return platform::Deadline{d.ns}; }

[[noreturn]] void corrupt(const std::string& what) { throw_error(Errc::kCorrupt, what); }

enum class LockOutcome { kHeld, kTimeout, kInterrupted };

// Owner words of the end table and the hand-out table: pid << 32 | tag (sync::self_tag), so a
// dead owner is told from a process that was given its pid (sync::process_gone).
uint64_t owner_word(uint32_t pid, uint32_t tag) noexcept { return uint64_t{pid} << 32 | tag; }
uint64_t self_owner() noexcept { return owner_word(sync::self_pid(), sync::self_tag()); }
bool owner_gone(uint64_t owner) noexcept {
  return sync::process_gone(static_cast<uint32_t>(owner >> 32), static_cast<uint32_t>(owner));
}

// ---- the hand-out table (Q9; docs/design/queue.md "Zero-copy receive") ----------------------
// Every function here runs under the queue's lock. A slot is claimed (block, then owner) before
// the consume store of the get that hands the block out, or by a holder about to fork for its
// child (kept, then adopted: share_handout, adopt_handout); it is cleared (owner 0) by its holder
// (Queue::release) or by a reclaim once the holder is gone, after the block is freed when no
// other slot names it (the last co-owner frees). Under the lock a committed block that an owned
// slot names can only be those slots': blocks are committed only under this lock, so memory
// freed and allocated again meanwhile is pending.

constexpr uint32_t kNoSlot = layout::kQueueHandoutSlots;

// Frees `b` if it is still the start of a committed block (never a second time); a heap that
// refuses (corrupt) leaves it: leaking is the safe side, check() reports it.
void free_if_committed(Heap& heap, HeapRef b) noexcept {
  try {
    if (heap.committed_block(b)) heap.free(b);
  } catch (...) {
  }
}

// Whether an owned slot other than `self` names `b`: a co-owner (a forked child, its parent, or
// a kept slot), so clearing `self` must not free the block.
bool co_owned(const QueueHeader* h, const layout::QueueHandout* self, HeapRef b) noexcept {
  for (const layout::QueueHandout& slot : h->handouts.slots) {
    if (&slot != self && slot.owner.load(std::memory_order_relaxed) != 0 &&
        slot.block.load(std::memory_order_relaxed) == b) {
      return true;
    }
  }
  return false;
}

// Gives up `slot`'s claim: frees its block unless a co-owner names it, then clears the slot.
// Free first, so a death in between leaves an owned slot naming a freed block, which the
// recovery that death causes clears (drop_stale_handouts) before anyone can commit that memory
// again; the other order would leak the block for the queue's life. With a co-owner only the
// clear (one store): a death before it leaves the slot to a reclaim.
void give_up_slot(Heap& heap, QueueHeader* h, layout::QueueHandout& slot) {
  const HeapRef b = slot.block.load(std::memory_order_relaxed);
  if (!co_owned(h, &slot, b)) heap.free(b);  // throws only for a corrupt heap: the slot stays
  slot.owner.store(0, std::memory_order_release);
}

// Gives up the slots whose owner is gone (give_up_slot: a dead holder's block is freed once no
// live co-owner names it; two dead co-owners: the first clear leaves the block to the second).
// Kept slots are never judged: a forked child adopts them. Each distinct owner is judged once
// (process_gone: a system call or two). Returns the slots reclaimed.
uint64_t reclaim_handouts_locked(Heap& heap, QueueHeader* h) noexcept {
  std::array<uint64_t, layout::kQueueHandoutSlots> judged{};  // owners judged, this pass
  std::array<bool, layout::kQueueHandoutSlots> gone{};
  uint32_t n_judged = 0;
  uint64_t n = 0;
  for (layout::QueueHandout& slot : h->handouts.slots) {
    const uint64_t owner = slot.owner.load(std::memory_order_relaxed);
    if (owner == 0 || (owner & layout::kQueueHandoutKept) != 0) continue;
    uint32_t j = 0;
    while (j < n_judged && judged[j] != owner) ++j;
    if (j == n_judged) {
      judged[j] = owner;
      gone[j] = owner_gone(owner);
      ++n_judged;
    }
    if (!gone[j]) continue;
    const HeapRef b = slot.block.load(std::memory_order_relaxed);
    if (!co_owned(h, &slot, b)) free_if_committed(heap, b);
    slot.owner.store(0, std::memory_order_release);
    ++n;
  }
  if (n != 0) h->handouts.reclaimed.fetch_add(n, std::memory_order_relaxed);
  return n;
}

// Recovery only: clears the owned slots whose block is no longer committed, which only a holder
// that died between its release's free and its clear leaves (it held the lock: this recovery is
// the first lock hold since, so nobody can have committed that memory again). No system call.
void drop_stale_handouts(Heap& heap, QueueHeader* h) noexcept {
  for (layout::QueueHandout& slot : h->handouts.slots) {
    if (slot.owner.load(std::memory_order_relaxed) == 0) continue;
    bool committed = false;
    try {
      committed = heap.committed_block(slot.block.load(std::memory_order_relaxed));
    } catch (...) {
    }
    if (!committed) slot.owner.store(0, std::memory_order_release);
  }
}

// Clears the owned slots that name one of `refs`: a dead consumer's claims for the blocks of the
// records its get intent covers (recovery; those blocks are the ring's, or were freed with the
// intent).
void clear_handouts_naming(QueueHeader* h, const std::vector<HeapRef>& refs) noexcept {
  if (refs.empty()) return;
  for (layout::QueueHandout& slot : h->handouts.slots) {
    if (slot.owner.load(std::memory_order_relaxed) == 0) continue;
    const HeapRef b = slot.block.load(std::memory_order_relaxed);
    if (std::find(refs.begin(), refs.end(), b) != refs.end()) {
      slot.owner.store(0, std::memory_order_release);
    }
  }
}

// A free slot that this get has not chosen already (`chosen`: its claims to come), or kNoSlot.
uint32_t free_handout_slot(const QueueHeader* h,
                           const std::vector<std::pair<uint32_t, HeapRef>>& chosen) noexcept {
  for (uint32_t i = 0; i < layout::kQueueHandoutSlots; ++i) {
    if (h->handouts.slots[i].owner.load(std::memory_order_relaxed) != 0) continue;
    bool taken = false;
    for (const auto& c : chosen) taken = taken || c.first == i;
    if (!taken) return i;
  }
  return kNoSlot;
}

// The queue's lock, held for the scope of one operation. Recovery runs inside lock() when the
// previous holder died, before the caller looks at anything.
class QueueLock {
 public:
  QueueLock(Heap& heap, QueueHeader* h, std::byte* ring) noexcept
      : heap_(heap), h_(h), ring_(ring), m_(&h->lock) {}
  ~QueueLock() {
    if (held_) unlock();
  }
  QueueLock(const QueueLock&) = delete;
  QueueLock& operator=(const QueueLock&) = delete;

  LockOutcome lock(Deadline deadline, bool interruptible) {
    if (m_.try_lock_fast()) {
      held_ = true;
      return LockOutcome::kHeld;
    }
    platform::Deadline d = pd(deadline);
    const platform::Deadline grace = platform::Deadline::after_ns(kLockGraceNs);
    if (!d.is_never() && d.ns < grace.ns) d = grace;
    Result<sync::Locked> r = m_.lock_quiet(d, interruptible);
    if (!r.has_value()) {
      if (r.status().code() == Errc::kLockTimeout) return LockOutcome::kTimeout;
      r.status().throw_if_error();  // kCorrupt: a lock word no valid state explains
    }
    if (r.value() == sync::Locked::kInterrupted) return LockOutcome::kInterrupted;
    held_ = true;
    if (r.value() == sync::Locked::kOwnerDied) recover();
    return LockOutcome::kHeld;
  }

  // lock() with no deadline, not interruptible, for an operation that must get the lock: any
  // other outcome means a lock word no valid state explains (CorruptSegmentError naming op).
  void lock_or_corrupt(const char* op) {
    if (lock(Deadline::never(), false) != LockOutcome::kHeld) {
      corrupt(std::string("queue: ") + op + " could not take the lock");
    }
  }

  void unlock() noexcept {
    held_ = false;
    if (!m_.unlock_fast()) m_.unlock();
  }

 private:
  // The previous holder died somewhere in put or get. Everything past tail is ignored (a put's
  // half-written record), head and tail are each one store (a get either consumed or did not),
  // so recovery only recomputes what derives from [head, tail) and wakes every sleeper, which
  // may have waited for a change the dead holder made but never announced.
  void recover() {
    const uint64_t head = h_->head.load(std::memory_order_relaxed);
    const uint64_t tail = h_->tail.load(std::memory_order_relaxed);
    Result<channels::RingWalk> w = channels::walk_ring(ring_, h_->ring_bytes, head, tail);
    if (!w.has_value()) {
      // Nothing a dead producer or consumer can leave explains this: another writer scribbled
      // over the queue. Refuse to go on rather than deliver garbage.
      unlock();
      corrupt(w.status().message() + " (found while recovering from a dead lock holder)");
    }
    h_->count.store(w.value().count, std::memory_order_relaxed);
    h_->bytes.store(w.value().bytes, std::memory_order_relaxed);
    h_->recoveries.fetch_add(1, std::memory_order_relaxed);
    recover_intents(head, tail);
    // After the intents (which clear a dead consumer's claims for blocks still in the ring, or
    // freed with its intent): a release cut between its free and its clear, then the blocks
    // of every holder that is gone.
    drop_stale_handouts(heap_, h_);
    (void)reclaim_handouts_locked(heap_, h_);
    for (std::atomic<uint32_t>* word : {&h_->put_seq, &h_->get_seq}) {
      const uint32_t v = word->load(std::memory_order_relaxed);
      word->store((v + 1) & kSeqMask, std::memory_order_release);
      (void)platform::futex_wake_all(word);
    }
  }

  // The out-of-band blocks a dead holder was committing (put) or freeing (get). Whether a
  // block is still the dead holder's is asked of the heap (Heap::committed_block walks the
  // tiling): under this lock, memory freed and allocated again since is *pending* (its producer
  // commits only under this lock), so a committed block the intent's records name can only be
  // the dead holder's. The intent is cleared after the frees, so a death during this recovery
  // leaves it for the next holder, which skips the blocks already freed.
  void recover_intents(uint64_t head, uint64_t tail) noexcept {
    const uint64_t ps = h_->put_intent_state.load(std::memory_order_acquire);
    if (ps != layout::kIntentIdle) {
      const uint64_t end = h_->put_intent_tail.load(std::memory_order_relaxed);
      std::vector<HeapRef> refs;
      // Published (tail == end): the blocks are the records'. Not published: the committed
      // ones are freed here; the pending ones are the dead producer's and the heap reclaims
      // them.
      if (tail != end) collect(tail, end, head, refs);
      free_committed(refs);
      h_->put_intent_state.store(layout::kIntentIdle, std::memory_order_release);
    }
    if (h_->get_intent_state.load(std::memory_order_acquire) == layout::kIntentFreeing) {
      const uint64_t from = h_->get_intent_head.load(std::memory_order_relaxed);
      const uint64_t end = h_->get_intent_end.load(std::memory_order_relaxed);
      std::vector<HeapRef> refs;
      // The records [from, end) are still intact (nobody could write the ring since: the dead
      // consumer held the lock). Consumed (head == end): their blocks that are still committed
      // are freed, handed out or not (the taker is dead). Not consumed: the blocks are the
      // ring's again. Either way the hand-out slots the dead consumer claimed for them are
      // cleared (after the frees: a death in between leaves the intent, and this again).
      collect(from, end, head == end ? end : head, refs);
      if (head == end) free_committed(refs);
      clear_handouts_naming(h_, refs);
      h_->get_intent_state.store(layout::kIntentIdle, std::memory_order_release);
    }
  }

  // The out-of-band refs of the records in [from, end); nothing when they do not decode (a
  // scribbled intent: leaking is the safe side).
  void collect(uint64_t from, uint64_t end, uint64_t head, std::vector<HeapRef>& refs) noexcept {
    if (from > end || end - head > h_->ring_bytes || end - from > h_->ring_bytes) return;
    try {
      for (uint64_t pos = from; pos != end;) {
        Result<channels::RecordView> r = channels::read_record(ring_, h_->ring_bytes, pos, end);
        if (!r.has_value()) {
          refs.clear();
          return;
        }
        if (r.value().ref != 0) refs.push_back(r.value().ref);
        pos += r.value().span();
      }
    } catch (...) {
      refs.clear();
    }
  }

  void free_committed(const std::vector<HeapRef>& refs) noexcept {
    for (HeapRef r : refs) free_if_committed(heap_, r);
  }

  Heap& heap_;
  QueueHeader* h_;
  std::byte* ring_;
  sync::RobustMutex m_;
  bool held_ = false;
};

// Whether `side` was opened and no slot names a holder now (no system call: a dead holder
// still counts here; end_closed reclaims). Under the lock, or as a hint without it.
bool end_gone_hint(const QueueHeader* h, uint32_t side) noexcept {
  const layout::QueueEnds& e = h->ends;
  if (e.opened[side].load(std::memory_order_acquire) == 0) return false;
  if (e.overflow[side].load(std::memory_order_relaxed) != 0) return false;
  for (const layout::QueueEndSlot& s : e.slots[side]) {
    if (s.owner.load(std::memory_order_relaxed) != 0) return false;
  }
  return true;
}

// Bumps a futex word under the lock: the counter advances and the waiters bit clears. Returns
// whether someone may sleep on it (the caller wakes after unlocking).
bool bump(std::atomic<uint32_t>& w) noexcept {
  const uint32_t old = w.load(std::memory_order_relaxed);
  // Release: a sleeper that sees the new value after waking takes the lock anyway; this only
  // orders the value for the spinners, which re-take the lock before reading the queue.
  w.store((old + 1) & kSeqMask, std::memory_order_release);
  return (old & kSeqWaiters) != 0;
}

void wake(std::atomic<uint32_t>& w) noexcept { (void)platform::futex_wake_all(&w); }

// One round of waiting for `word` to change from what the caller saw under the lock. The first
// round of an operation spins (no waiters bit: the other side makes no system call); later ones
// sleep one slice. Returns false when interrupted (only with `interruptible`).
class Waiter {
 public:
  Waiter(Deadline deadline, bool interruptible) noexcept
      : deadline_(pd(deadline)), interruptible_(interruptible) {}

  // Under the lock: note the word's value; announce a sleeper unless this round spins.
  void prepare(std::atomic<uint32_t>& word) noexcept {
    if (!spin_.spun()) {
      seen_ = word.load(std::memory_order_relaxed);
    } else {
      seen_ = word.fetch_or(kSeqWaiters, std::memory_order_relaxed) | kSeqWaiters;
    }
  }

  // After unlocking.
  bool wait(std::atomic<uint32_t>& word) noexcept {
    if (!spin_.spun()) {
      // Acquire: pairs with bump()'s release (the caller re-takes the lock before reading).
      // Bounded by the deadline too: a put or get with a timeout never spins past it.
      (void)spin_.spin([&] { return word.load(std::memory_order_acquire) != seen_; },
                       deadline_);
      return true;  // changed: look again; unchanged: sleep next round, announced
    }
    platform::Deadline end = platform::Deadline::after_ns(slice_);
    if (end.ns > deadline_.ns) end = deadline_;
    slice_ = std::min(slice_ * 2, kMaxSliceNs);
    Result<platform::FutexWait> r = platform::futex_wait(&word, seen_, end);
    if (r.has_value() && r.value() == platform::FutexWait::kInterrupted && interruptible_) {
      return false;
    }
    spin_.slept(r);
    return true;
  }

  bool passed() const noexcept { return deadline_.passed(); }

 private:
  platform::Deadline deadline_;
  bool interruptible_;
  platform::SpinWait spin_{g_spin};
  uint32_t seen_ = 0;
  uint64_t slice_ = kFirstSliceNs;
};

}  // namespace

struct QueueAccess {
  static QueueHeader* header(const Queue& q) noexcept { return q.h_; }
};

// ---- create / attach ------------------------------------------------------------------------

Queue Queue::create(Options opts) {
  if (opts.ring_bytes < layout::kQueueMinRing || opts.ring_bytes > layout::kQueueMaxRing) {
    throw_error(Errc::kInvalidArgument, "queue: ring_bytes " + std::to_string(opts.ring_bytes) +
                                            " is outside [64, 2**30]");
  }
  const uint64_t ring = (opts.ring_bytes + 7) & ~uint64_t{7};
  const uint64_t block = sizeof(QueueHeader) + ring;
  // The root segment holds the heap's own header and table (about 14 KiB) and our block.
  Heap heap = Heap::create(Heap::Options{std::max<uint64_t>(256 * 1024, block + 64 * 1024)});
  // Private until handle() is called: a plain allocation, complete before the root names it.
  const HeapRef top = heap.allocate(block);
  std::byte* p = heap.at(top, block);
  std::memset(p, 0, sizeof(QueueHeader));
  auto* h = reinterpret_cast<QueueHeader*>(p);
  h->magic = layout::kQueueMagic;
  h->version = layout::kQueueVersion;
  h->header_bytes = sizeof(QueueHeader);
  h->ring_bytes = ring;
  h->max_messages = opts.max_messages;
  h->max_bytes = opts.max_bytes;
  layout::TaskTable* tasks = nullptr;
  if (opts.joinable) {
    const HeapRef t = heap.allocate(sizeof(layout::TaskTable));
    tasks = reinterpret_cast<layout::TaskTable*>(heap.at(t, sizeof(layout::TaskTable)));
    std::memset(static_cast<void*>(tasks), 0, sizeof(layout::TaskTable));
    tasks->magic = layout::kTaskMagic;
    tasks->slots = layout::kTaskSlots;
    h->tasks = t;
  }
  heap.root().store(top, std::memory_order_release);  // Q1: the header is complete
  return Queue(std::move(heap), top, h, p + sizeof(QueueHeader), tasks);
}

Queue Queue::attach(std::string_view handle) { return attach(Heap::attach(handle)); }

Queue Queue::attach(Heap heap) {
  const uint64_t top = heap.root().load(std::memory_order_acquire);  // pairs with create's
  if (top == 0) throw_error(Errc::kIncompatible, "queue: the heap holds no queue");
  const uint64_t avail = heap.usable_size(top);
  std::byte* p = heap.at(top, std::min<uint64_t>(avail, sizeof(QueueHeader)));
  if (avail < sizeof(QueueHeader)) corrupt("queue: the root block is smaller than a header");
  QueueHeader copy;
  std::memcpy(static_cast<void*>(&copy), p, sizeof copy);
  channels::check_header_constants(copy, avail).throw_if_error();
  std::byte* all = heap.at(top, sizeof(QueueHeader) + copy.ring_bytes);
  layout::TaskTable* tasks = nullptr;
  if (copy.tasks != 0) {  // Q7
    uint64_t n = 0;
    try {
      n = heap.usable_size(copy.tasks);
    } catch (const Error&) {
      corrupt("queue: Q7: the task table names no used block");
    }
    if (n < sizeof(layout::TaskTable)) corrupt("queue: Q7: the task table's block is too small");
    tasks = reinterpret_cast<layout::TaskTable*>(heap.at(copy.tasks, sizeof(layout::TaskTable)));
    if (tasks->magic != layout::kTaskMagic || tasks->slots != layout::kTaskSlots) {
      corrupt("queue: Q7: the task table's magic or size is wrong");
    }
  }
  return Queue(std::move(heap), top, reinterpret_cast<QueueHeader*>(all),
               all + sizeof(QueueHeader), tasks);
}

// ---- put ------------------------------------------------------------------------------------

namespace {
bool fits(const QueueHeader* h, uint64_t n, uint64_t len, uint64_t span) noexcept {
  const uint64_t used =
      h->tail.load(std::memory_order_relaxed) - h->head.load(std::memory_order_relaxed);
  if (h->ring_bytes - used < span) return false;
  if (h->max_messages != 0 && h->count.load(std::memory_order_relaxed) + n > h->max_messages) {
    return false;
  }
  if (h->max_bytes != 0 && h->bytes.load(std::memory_order_relaxed) + len > h->max_bytes) {
    return false;
  }
  return true;
}

// Under the lock, from an out-of-band put: reclaim_handouts_locked when some slot is owned and
// the last such reclaim (any process's) is kHandoutScanNs old. The scan of the slots is 256 loads;
// the system calls (one or two per distinct holder) are then at most ten a second per queue.
constexpr uint64_t kHandoutScanNs = 100'000'000;
void reclaim_handouts_now_and_then(Heap& heap, QueueHeader* h) noexcept {
  const uint64_t now = platform::monotonic_ns();
  const uint64_t last = h->handouts.scanned_ns.load(std::memory_order_relaxed);
  if (now >= last && now - last < kHandoutScanNs) return;
  bool any = false;
  for (const layout::QueueHandout& slot : h->handouts.slots) {
    any = any || slot.owner.load(std::memory_order_relaxed) != 0;
  }
  if (!any) return;
  h->handouts.scanned_ns.store(now, std::memory_order_relaxed);
  (void)reclaim_handouts_locked(heap, h);
}

// Whether a message of `len` bytes goes out of band: when its inline record would take more
// than a quarter of the ring (so a big message never waits for a big stretch of free ring).
bool out_of_band(uint64_t ring_bytes, uint64_t len) noexcept {
  return layout::record_span(len) > ring_bytes / 4;
}

// Under the lock: writes one record of `length` payload bytes from `data` at `pos`, returns the
// position after it.
uint64_t write_record(QueueHeader* h, std::byte* ring, uint64_t pos, uint32_t flags,
                      const void* data, uint64_t length) noexcept {
  const layout::QueueRecord rec{static_cast<uint32_t>(length), layout::record_tag(flags)};
  channels::ring_write(ring, h->ring_bytes, pos, &rec, sizeof rec);
  channels::ring_write(ring, h->ring_bytes, pos + sizeof rec, data, length);
  const uint64_t pad = layout::record_span(length) - sizeof rec - length;
  if (pad != 0) {
    static constexpr std::byte kZeros[8] = {};
    channels::ring_write(ring, h->ring_bytes, pos + sizeof rec + length, kZeros, pad);
  }
  return pos + layout::record_span(length);
}

// One message given as the concatenation of parts (Queue::put_parts): copied from its parts
// straight into its block or its record, with no joined copy first.
struct GatheredMessage {
  std::span<const std::string_view> parts;
  uint64_t length = 0;
  uint64_t size() const noexcept { return length; }
  void copy_to(std::byte* dst) const noexcept {
    for (std::string_view p : parts) {
      if (p.empty()) continue;
      std::memcpy(dst, p.data(), p.size());
      dst += p.size();
    }
  }
};

// Under the lock: a message's record at `pos` (flags give its kind and encoding).
uint64_t write_message(QueueHeader* h, std::byte* ring, uint64_t pos, uint32_t flags,
                       std::string_view m) noexcept {
  return write_record(h, ring, pos, flags, m.data(), m.size());
}
uint64_t write_message(QueueHeader* h, std::byte* ring, uint64_t pos, uint32_t flags,
                       const GatheredMessage& m) noexcept {
  const layout::QueueRecord rec{static_cast<uint32_t>(m.size()), layout::record_tag(flags)};
  channels::ring_write(ring, h->ring_bytes, pos, &rec, sizeof rec);
  uint64_t at = pos + sizeof rec;
  for (std::string_view p : m.parts) {
    channels::ring_write(ring, h->ring_bytes, at, p.data(), p.size());
    at += p.size();
  }
  const uint64_t pad = layout::record_span(m.size()) - sizeof rec - m.size();
  if (pad != 0) {
    static constexpr std::byte kZeros[8] = {};
    channels::ring_write(ring, h->ring_bytes, at, kZeros, pad);
  }
  return pos + layout::record_span(m.size());
}

// The out-of-band blocks of one put: allocated pending and filled before the lock is taken;
// freed again unless the put committed them (a put that times out, is interrupted or throws).
class PendingBlocks {
 public:
  explicit PendingBlocks(Heap& heap) noexcept : heap_(heap) {}
  ~PendingBlocks() {
    for (HeapRef r : refs_) {
      try {
        heap_.free(r);
      } catch (...) {
        // A pending block of a live process is a used block: free cannot refuse it unless the
        // heap is corrupt, and then the heap's own check reports it.
      }
    }
  }
  PendingBlocks(const PendingBlocks&) = delete;
  PendingBlocks& operator=(const PendingBlocks&) = delete;
  HeapRef add(std::string_view msg) {
    refs_.reserve(refs_.size() + 1);
    const HeapRef r = heap_.allocate_pending(msg.size());
    refs_.push_back(r);
    if (!msg.empty()) std::memcpy(heap_.at(r, msg.size()), msg.data(), msg.size());
    return r;
  }
  HeapRef add(const GatheredMessage& msg) {
    refs_.reserve(refs_.size() + 1);
    const HeapRef r = heap_.allocate_pending(msg.size());
    refs_.push_back(r);
    if (msg.size() != 0) msg.copy_to(heap_.at(r, msg.size()));
    return r;
  }
  const std::vector<HeapRef>& refs() const noexcept { return refs_; }
  void committed() noexcept { refs_.clear(); }

 private:
  Heap& heap_;
  std::vector<HeapRef> refs_;
};
}  // namespace

QueueStatus Queue::put(std::string_view msg, Deadline deadline, bool interruptible) {
  return put_encoded(std::span<const std::string_view>(&msg, 1), {}, deadline, interruptible);
}

QueueStatus Queue::put_encoded(std::span<const std::string_view> msgs,
                               std::span<const uint8_t> encodings, Deadline deadline,
                               bool interruptible) {
  return put_msgs(msgs, encodings, deadline, interruptible);
}

QueueStatus Queue::put_parts(std::span<const std::string_view> parts, uint8_t encoding,
                             Deadline deadline, bool interruptible) {
  uint64_t n = 0;
  for (std::string_view p : parts) n += p.size();
  const GatheredMessage m{parts, n};
  return put_msgs(std::span<const GatheredMessage>(&m, 1), std::span<const uint8_t>(&encoding, 1),
                  deadline, interruptible);
}

template <class M>
QueueStatus Queue::put_msgs(std::span<const M> msgs, std::span<const uint8_t> encodings,
                            Deadline deadline, bool interruptible) {
  if (msgs.empty()) return QueueStatus::kOk;
  if (!encodings.empty()) {
    if (encodings.size() != msgs.size()) {
      throw_error(Errc::kInvalidArgument, "queue: one encoding per message, or none");
    }
    for (uint8_t e : encodings) {
      if (e >= layout::kEncodingCount) {
        throw_error(Errc::kInvalidArgument,
                    "queue: unknown message encoding " + std::to_string(e));
      }
    }
  }
  const uint64_t ring = h_->ring_bytes;
  uint64_t len = 0, span = 0;
  bool any_oob = false;
  for (const M& m : msgs) {
    if (m.size() > max_message_bytes()) {
      throw_error(Errc::kInvalidArgument,
                  "queue: a message of " + std::to_string(m.size()) +
                      " bytes is longer than this queue takes (" +
                      std::to_string(max_message_bytes()) + ")");
    }
    len += m.size();
    if (out_of_band(ring, m.size())) {
      any_oob = true;
      span += layout::record_span(sizeof(layout::OutOfBandRef));
    } else {
      span += layout::record_span(m.size());
    }
  }
  if (span > ring || (h_->max_messages != 0 && msgs.size() > h_->max_messages) ||
      (h_->max_bytes != 0 && len > h_->max_bytes)) {
    throw_error(Errc::kInvalidArgument, "queue: " + std::to_string(msgs.size()) +
                                            " messages of " + std::to_string(len) +
                                            " bytes together can never fit this queue");
  }
  // Big messages are copied into pending heap blocks without the queue's lock.
  PendingBlocks blocks(heap_);
  if (any_oob) {
    for (const M& m : msgs) {
      if (out_of_band(ring, m.size())) blocks.add(m);
    }
  }
  Waiter waiter(deadline, interruptible);
  for (;;) {
    QueueLock lock(heap_, h_, ring_);
    const LockOutcome lo = lock.lock(deadline, interruptible);
    if (lo == LockOutcome::kInterrupted) return QueueStatus::kInterrupted;
    if (lo == LockOutcome::kTimeout) return QueueStatus::kFull;
    if (fits(h_, msgs.size(), len, span)) {
      // A stream of big messages is what leaks when consumers die holding them: its puts free
      // the dead holders' blocks, at most once per kHandoutScanNs for the whole queue, and only
      // while some block is handed out (a get of big messages that copies leaves none).
      if (any_oob) reclaim_handouts_now_and_then(heap_, h_);
      // Steps (docs/design/queue.md): 1 write the records past tail; [out of band: 2a intent
      // kIntentCommitting; 2b commit each block; 2c kIntentCommitted]; 3 publish: one store of
      // tail; [3a intent idle]; 4 the derived counts; 5 bump put_seq; unlock; 6 wake.
      const uint64_t tail = h_->tail.load(std::memory_order_relaxed);
      uint64_t pos = tail;
      size_t next_block = 0;
      for (size_t i = 0; i < msgs.size(); ++i) {
        const M& m = msgs[i];
        const uint32_t enc = encodings.empty()
                                 ? 0
                                 : uint32_t{encodings[i]} << layout::kRecordEncodingShift;
        if (out_of_band(ring, m.size())) {
          const layout::OutOfBandRef o{blocks.refs()[next_block++], m.size()};
          pos = write_record(h_, ring_, pos, layout::kRecordOutOfBand | enc, &o, sizeof o);
        } else {
          pos = write_message(h_, ring_, pos, layout::kRecordBytes | enc, m);
        }
      }
      if (any_oob) {
        h_->put_intent_tail.store(pos, std::memory_order_relaxed);
        // Release: the records and the intent's tail are written before the state says so.
        h_->put_intent_state.store(layout::kIntentCommitting, std::memory_order_release);
        for (HeapRef r : blocks.refs()) heap_.commit(r);
        blocks.committed();
        h_->put_intent_state.store(layout::kIntentCommitted, std::memory_order_release);
      }
      // Release: the records are complete before the tail that publishes them (the lock
      // orders them for live readers; this orders them for a recovery after a death).
      h_->tail.store(pos, std::memory_order_release);
      if (any_oob) h_->put_intent_state.store(layout::kIntentIdle, std::memory_order_release);
      h_->count.store(h_->count.load(std::memory_order_relaxed) + msgs.size(),
                      std::memory_order_relaxed);
      h_->bytes.store(h_->bytes.load(std::memory_order_relaxed) + len,
                      std::memory_order_relaxed);
      h_->puts.fetch_add(msgs.size(), std::memory_order_relaxed);
      const bool sleepers = bump(h_->put_seq);
      lock.unlock();
      if (sleepers) wake(h_->put_seq);
      return QueueStatus::kOk;
    }
    // A consumer end closed by its last holder: stop waiting (send reports kClosed).
    if (waiter.passed() || end_gone_hint(h_, layout::kEndConsumer)) return QueueStatus::kFull;
    waiter.prepare(h_->get_seq);
    lock.unlock();
    if (!waiter.wait(h_->get_seq)) return QueueStatus::kInterrupted;
  }
}

// ---- get ------------------------------------------------------------------------------------

// Where take() puts the messages it copies out. One: into one string (whose buffer is reused,
// so that a consumer of big messages does not allocate and fault in a new one each time);
// Many: appended to a vector of strings; Messages: QueueMessage records, out-of-band blocks
// handed out instead of copied when asked.
namespace {
struct OneSink {
  std::string* out;
  uint8_t* encoding;
  size_t mark() const noexcept { return 0; }
  void rollback(size_t) noexcept {}
  bool hand_out() const noexcept { return false; }
  std::string& next(uint8_t enc, uint64_t) {
    if (encoding != nullptr) *encoding = enc;
    return *out;
  }
  void handed(HeapRef, uint64_t, uint8_t) noexcept {}
};
struct ManySink {
  std::vector<std::string>* out;
  size_t mark() const noexcept { return out->size(); }
  void rollback(size_t n) { out->resize(n); }
  bool hand_out() const noexcept { return false; }
  std::string& next(uint8_t, uint64_t) { return out->emplace_back(); }
  void handed(HeapRef, uint64_t, uint8_t) noexcept {}
};
struct MessageSink {
  // Replaces out's contents, reusing its elements (their strings keep their buffers, so a
  // consumer calling again with the same vector does not allocate for each message).
  std::vector<QueueMessage>* out;
  bool blocks;
  size_t n = 0;
  size_t mark() const noexcept { return 0; }
  void rollback(size_t) { out->clear(); }
  bool hand_out() const noexcept { return blocks; }
  QueueMessage& slot() {
    if (n == out->size()) out->emplace_back();
    QueueMessage& m = (*out)[n++];
    m.block = 0;
    return m;
  }
  std::string& next(uint8_t enc, uint64_t length) {
    QueueMessage& m = slot();
    m.encoding = enc;
    m.length = length;
    return m.data;
  }
  // Inside take's try: a throw here leaves the queue as it was.
  void handed(HeapRef ref, uint64_t length, uint8_t enc) {
    QueueMessage& m = slot();
    m.data.clear();
    m.block = ref;
    m.length = length;
    m.encoding = enc;
  }
  void done() { out->resize(n); }
};
}  // namespace

// Waits for a message, then takes up to max_messages (and max_bytes, the first always) under one
// lock hold into the sink.
template <class Sink>
QueueStatus Queue::take(Sink& sink, size_t max_messages, uint64_t max_bytes, Deadline deadline,
                        bool interruptible) {
  if (max_messages == 0) max_messages = 1;
  Waiter waiter(deadline, interruptible);
  for (;;) {
    QueueLock lock(heap_, h_, ring_);
    const LockOutcome lo = lock.lock(deadline, interruptible);
    if (lo == LockOutcome::kInterrupted) return QueueStatus::kInterrupted;
    if (lo == LockOutcome::kTimeout) return QueueStatus::kEmpty;
    const uint64_t head = h_->head.load(std::memory_order_relaxed);
    const uint64_t tail = h_->tail.load(std::memory_order_relaxed);
    if (head != tail) {
      // Steps: 1 copy the records' messages out (an allocation that throws leaves the queue as
      // it was); [out of band: 1a intent kIntentFreeing over [head, end)]; 2 consume: one store
      // of head; [2a free the blocks not handed out; 2b intent idle]; 3 the derived counts;
      // 4 bump get_seq; unlock; 5 wake. All are copied out before the head store, so a consumer
      // killed here loses all of them or none; a block handed out is freed by recovery if its
      // taker dies before the intent is idle, and is the taker's after.
      const size_t first = sink.mark();
      uint64_t pos = head, taken_bytes = 0;
      size_t taken = 0;
      std::vector<HeapRef> blocks;   // to free after the consume store
      bool any_block = false;        // blocks to free or handed out: the intent covers both
      std::vector<std::pair<uint32_t, HeapRef>> handed;  // hand-out slots to claim
      bool reclaimed = false;        // this get ran reclaim_handouts_locked (the table was full)
      uint64_t copied = 0;           // to hand out, but no slot was free: copied instead
      try {
        while (pos != tail && taken < max_messages) {
          Result<channels::RecordView> r = channels::read_record(ring_, h_->ring_bytes, pos, tail);
          if (!r.has_value()) corrupt(r.status().message());
          const channels::RecordView& v = r.value();
          if (taken != 0 && max_bytes != 0 && taken_bytes + v.message > max_bytes) break;
          if (v.ref == 0) {
            std::string& msg = sink.next(v.encoding, v.message);
            msg.resize(v.message);
            channels::ring_read(ring_, h_->ring_bytes, pos + layout::kRecordHeaderBytes,
                                msg.data(), v.length);
          } else {
            uint64_t usable = 0;
            try {
              usable = heap_.usable_size(v.ref);
            } catch (const Error& e) {
              corrupt("queue: the record at " + std::to_string(pos) + " names block " +
                      std::to_string(v.ref) + ", which is not a used block (" + e.what() + ")");
            }
            if (v.message > usable) {
              corrupt("queue: out-of-band block " + std::to_string(v.ref) + " is smaller than " +
                      std::to_string(v.message) + " bytes");
            }
            any_block = true;
            uint32_t slot = kNoSlot;
            if (sink.hand_out()) {
              slot = free_handout_slot(h_, handed);
              if (slot == kNoSlot && !reclaimed) {
                reclaimed = true;  // system calls: once per get, and only with a full table
                if (reclaim_handouts_locked(heap_, h_) != 0) slot = free_handout_slot(h_, handed);
              }
              if (slot == kNoSlot) ++copied;
            }
            if (slot != kNoSlot) {
              handed.reserve(handed.size() + 1);  // before handed(): no throw after it
              sink.handed(v.ref, v.message, v.encoding);
              handed.emplace_back(slot, v.ref);
            } else {
              std::string& msg = sink.next(v.encoding, v.message);
              msg.resize(v.message);
              if (v.message != 0) std::memcpy(msg.data(), heap_.at(v.ref, v.message), v.message);
              blocks.push_back(v.ref);
            }
          }
          pos += v.span();
          taken_bytes += v.message;
          ++taken;
        }
      } catch (...) {
        sink.rollback(first);
        throw;  // the lock is released by its guard; nothing in the queue changed
      }
      // A joinable queue: the messages are this process's tasks before they leave the ring, so
      // a death on either side of the consume store leaves them counted once (TaskTable).
      if (tasks_ != nullptr) note_taken(taken);
      if (any_block) {
        h_->get_intent_head.store(head, std::memory_order_relaxed);
        h_->get_intent_end.store(pos, std::memory_order_relaxed);
        h_->get_intent_state.store(layout::kIntentFreeing, std::memory_order_release);
      }
      // Under the intent, before the consume store: a death from here on leaves the slots to
      // recovery, which clears them (consumed or not) after freeing what the intent says.
      if (!handed.empty()) {
        const uint64_t me = self_owner();
        for (const auto& [i, ref] : handed) {
          h_->handouts.slots[i].block.store(ref, std::memory_order_relaxed);
          h_->handouts.slots[i].owner.store(me, std::memory_order_release);  // the claim
        }
      }
      if (copied != 0) h_->handouts.copied.fetch_add(copied, std::memory_order_relaxed);
      h_->head.store(pos, std::memory_order_release);
      h_->count.store(h_->count.load(std::memory_order_relaxed) - taken,
                      std::memory_order_relaxed);
      h_->bytes.store(h_->bytes.load(std::memory_order_relaxed) - taken_bytes,
                      std::memory_order_relaxed);
      h_->gets.fetch_add(taken, std::memory_order_relaxed);
      if (any_block) {
        // The intent stays until every block is freed: a death among the frees leaves the
        // rest to recovery, which frees only what is still committed (never one twice), and
        // the handed-out ones with them (their taker is dead), and clears their slots. Once it
        // is idle, a handed-out block is its slot's: freed by release, or by a reclaim when
        // its holder is gone.
        for (HeapRef b : blocks) heap_.free(b);
        h_->get_intent_state.store(layout::kIntentIdle, std::memory_order_release);
      }
      const bool sleepers = bump(h_->get_seq);
      lock.unlock();
      if (sleepers) wake(h_->get_seq);
      return QueueStatus::kOk;
    }
    // A producer end closed by its last holder: stop waiting (recv reports kClosed).
    if (waiter.passed() || end_gone_hint(h_, layout::kEndProducer)) return QueueStatus::kEmpty;
    waiter.prepare(h_->put_seq);
    lock.unlock();
    if (!waiter.wait(h_->put_seq)) return QueueStatus::kInterrupted;
  }
}

QueueStatus Queue::get(std::string& out, Deadline deadline, bool interruptible,
                       uint8_t* encoding) {
  OneSink sink{&out, encoding};
  return take(sink, 1, 0, deadline, interruptible);
}

QueueStatus Queue::get_many(std::vector<std::string>& out, size_t max_messages,
                            Deadline deadline, bool interruptible, uint64_t max_bytes) {
  ManySink sink{&out};
  return take(sink, max_messages, max_bytes, deadline, interruptible);
}

QueueStatus Queue::get_messages(std::vector<QueueMessage>& out, size_t max_messages,
                                Deadline deadline, bool interruptible, uint64_t max_bytes,
                                bool hand_out_blocks) {
  MessageSink sink{&out, hand_out_blocks};
  const QueueStatus s = take(sink, max_messages, max_bytes, deadline, interruptible);
  sink.done();  // n is 0 unless kOk
  return s;
}

namespace {
// This process's slot for `block` (owner == this process's word, not kept), or nullptr.
layout::QueueHandout* own_slot(QueueHeader* h, HeapRef block) noexcept {
  const uint64_t me = self_owner();
  for (layout::QueueHandout& slot : h->handouts.slots) {
    if (slot.owner.load(std::memory_order_relaxed) == me &&
        slot.block.load(std::memory_order_relaxed) == block) {
      return &slot;
    }
  }
  return nullptr;
}

void not_handed(HeapRef block) {
  throw_error(Errc::kInvalidArgument, "queue: block " + std::to_string(block) +
                                          " is not a block handed to this process");
}
}  // namespace

// give_up_slot under the lock: the block is freed unless a co-owner (this process's forked
// child, or its parent) still names it; docs/design/queue.md has what each death leaves.
void Queue::release(HeapRef block) {
  QueueLock lock(heap_, h_, ring_);
  lock.lock_or_corrupt("release");
  layout::QueueHandout* slot = own_slot(h_, block);
  if (slot == nullptr) not_handed(block);
  give_up_slot(heap_, h_, *slot);
}

// One store claims a free slot (block first, then the kept owner word): a death before it leaves
// nothing, after it a kept slot no child adopts (the block stays until the queue is freed).
uint32_t Queue::share_handout(HeapRef block) {
  QueueLock lock(heap_, h_, ring_);
  lock.lock_or_corrupt("share_handout");
  layout::QueueHandout* mine = own_slot(h_, block);
  if (mine == nullptr) not_handed(block);
  const std::vector<std::pair<uint32_t, HeapRef>> none;
  uint32_t i = free_handout_slot(h_, none);
  if (i == kNoSlot && reclaim_handouts_locked(heap_, h_) != 0) i = free_handout_slot(h_, none);
  const uint64_t kept = layout::kQueueHandoutKept | self_owner();
  if (i == kNoSlot) {
    // No slot for the child: this process's own claim becomes kept, so no release or death
    // frees the block while the child may view it (a leak, not a silent change of its bytes).
    mine->owner.store(kept, std::memory_order_release);
    return kNoSlot;
  }
  h_->handouts.slots[i].block.store(block, std::memory_order_relaxed);
  h_->handouts.slots[i].owner.store(kept, std::memory_order_release);
  return i;
}

bool Queue::adopt_handout(uint32_t slot, HeapRef block) {
  if (slot >= layout::kQueueHandoutSlots) return false;
  QueueLock lock(heap_, h_, ring_);
  lock.lock_or_corrupt("adopt_handout");
  layout::QueueHandout& s = h_->handouts.slots[slot];
  if ((s.owner.load(std::memory_order_relaxed) & layout::kQueueHandoutKept) == 0 ||
      s.block.load(std::memory_order_relaxed) != block) {
    return false;
  }
  s.owner.store(self_owner(), std::memory_order_release);  // one store: the child's own claim
  return true;
}

uint64_t Queue::reclaim_handouts() {
  QueueLock lock(heap_, h_, ring_);
  lock.lock_or_corrupt("reclaim_handouts");
  return reclaim_handouts_locked(heap_, h_);
}

// ---- tasks ----------------------------------------------------------------------------------

namespace {
// Under the lock: frees the slots of processes that are gone (their messages count as done).
// Returns whether any was freed.
bool reclaim_dead(layout::TaskTable* t) noexcept {
  bool any = false;
  for (layout::TaskSlot& s : t->slot) {
    if (s.pid == 0) continue;
    if (s.taken == 0 || sync::process_gone(s.pid, s.tag)) {
      t->reclaimed += s.taken;
      any = any || s.taken != 0;
      s.taken = 0;
      s.tag = 0;
      s.pid = 0;
    }
  }
  return any;
}

uint64_t unfinished_locked(const QueueHeader* h, const layout::TaskTable* t) noexcept {
  uint64_t n = h->count.load(std::memory_order_relaxed) + t->orphans;
  for (const layout::TaskSlot& s : t->slot) n += s.taken;
  return n;
}
}  // namespace

// Under the lock, before the consume store: n more messages are this process's tasks. A slot is
// a process's while its taken > 0; a process without one takes a free slot, reclaiming dead
// ones when none is free, and counts into orphans when every slot is a live process's.
void Queue::note_taken(uint64_t n) noexcept {
  const uint32_t pid = sync::self_pid(), tag = sync::self_tag();
  layout::TaskSlot* slots = tasks_->slot;
  auto mine = [&](uint32_t i) { return slots[i].pid == pid && slots[i].tag == tag; };
  uint32_t i = slot_hint_ < layout::kTaskSlots ? slot_hint_ : 0;
  if (!mine(i)) {
    uint32_t found = layout::kTaskSlots, free = layout::kTaskSlots;
    for (uint32_t k = 0; k < layout::kTaskSlots; ++k) {
      if (mine(k)) {
        found = k;
        break;
      }
      if (free == layout::kTaskSlots && slots[k].pid == 0) free = k;
    }
    if (found == layout::kTaskSlots && free == layout::kTaskSlots) {
      reclaim_dead(tasks_);
      for (uint32_t k = 0; k < layout::kTaskSlots; ++k) {
        if (slots[k].pid == 0) {
          free = k;
          break;
        }
      }
      if (free == layout::kTaskSlots) {
        tasks_->orphans += n;
        return;
      }
    }
    i = found != layout::kTaskSlots ? found : free;
    if (found == layout::kTaskSlots) {
      // Claim (under the lock, as every write here): a death before taken is added leaves a
      // slot whose owner is gone, which reclaim_dead frees.
      slots[i].tag = tag;
      slots[i].pid = pid;
    }
    slot_hint_ = i;
  }
  slots[i].taken += n;
}

bool Queue::joinable() const noexcept { return tasks_ != nullptr; }

bool Queue::task_done() {
  if (tasks_ == nullptr) throw_error(Errc::kInvalidArgument, "queue: not a joinable queue");
  QueueLock lock(heap_, h_, ring_);
  lock.lock_or_corrupt("task_done");
  const uint32_t pid = sync::self_pid(), tag = sync::self_tag();
  layout::TaskSlot* slots = tasks_->slot;
  layout::TaskSlot* pick = nullptr;
  if (slot_hint_ < layout::kTaskSlots && slots[slot_hint_].pid == pid &&
      slots[slot_hint_].tag == tag && slots[slot_hint_].taken != 0) {
    pick = &slots[slot_hint_];
  } else {
    // This process holds none (it may have got nothing: another process passed the work on):
    // one got by another process, as multiprocessing's one global count would; first its own
    // slot if the hint was stale.
    for (layout::TaskSlot& s : tasks_->slot) {
      if (s.taken == 0) continue;
      if (s.pid == pid && s.tag == tag) {
        pick = &s;
        break;
      }
      if (pick == nullptr) pick = &s;
    }
  }
  bool ok = true;
  if (pick != nullptr) {
    if (--pick->taken == 0) {
      pick->pid = 0;
      pick->tag = 0;
    }
  } else if (tasks_->orphans != 0) {
    --tasks_->orphans;
  } else {
    ok = false;
  }
  bool sleepers = false;
  if (ok && unfinished_locked(h_, tasks_) == 0) sleepers = bump(h_->done_seq);
  lock.unlock();
  if (sleepers) wake(h_->done_seq);
  return ok;
}

uint64_t Queue::unfinished() {
  if (tasks_ == nullptr) return 0;
  QueueLock lock(heap_, h_, ring_);
  lock.lock_or_corrupt("unfinished");
  reclaim_dead(tasks_);
  return unfinished_locked(h_, tasks_);
}

QueueStatus Queue::join(Deadline deadline, bool interruptible) {
  if (tasks_ == nullptr) throw_error(Errc::kInvalidArgument, "queue: not a joinable queue");
  // Sleeps in slices (Waiter): a taker that dies is noticed at the next look, within a slice.
  Waiter waiter(deadline, interruptible);
  for (;;) {
    QueueLock lock(heap_, h_, ring_);
    const LockOutcome lo = lock.lock(deadline, interruptible);
    if (lo == LockOutcome::kInterrupted) return QueueStatus::kInterrupted;
    if (lo == LockOutcome::kTimeout) return QueueStatus::kTimeout;
    reclaim_dead(tasks_);
    if (unfinished_locked(h_, tasks_) == 0) return QueueStatus::kOk;
    if (waiter.passed()) return QueueStatus::kTimeout;
    waiter.prepare(h_->done_seq);
    lock.unlock();
    if (!waiter.wait(h_->done_seq)) return QueueStatus::kInterrupted;
  }
}

// ---- ends -----------------------------------------------------------------------------------
// Every change is made under the queue's lock, in an order that a death between any two stores
// leaves explainable (docs/design/queue.md "Ends"): a claim writes the counts, then the owner;
// a release lowers a count, then frees the slot (owner 0) when both counts are 0. A slot whose
// owner is set and whose counts are 0 belongs to a process that died mid-update: reclaimed.

namespace {
layout::QueueEndSlot* find_slot(QueueHeader* h, uint32_t side, uint64_t owner) noexcept {
  for (layout::QueueEndSlot& s : h->ends.slots[side]) {
    if (s.owner.load(std::memory_order_relaxed) == owner) return &s;
  }
  return nullptr;
}

void release_slot(layout::QueueEndSlot& s) noexcept {
  if (s.refs.load(std::memory_order_relaxed) == 0 && s.lent.load(std::memory_order_relaxed) == 0) {
    s.owner.store(0, std::memory_order_release);
  }
}

// Under the lock: frees the slots of processes that are gone, or that died mid-update. With
// `verify` false only the latter (no system call).
void reclaim_ends(QueueHeader* h, uint32_t side, bool verify) noexcept {
  for (layout::QueueEndSlot& s : h->ends.slots[side]) {
    const uint64_t owner = s.owner.load(std::memory_order_relaxed);
    if (owner == 0) continue;
    const bool empty = s.refs.load(std::memory_order_relaxed) == 0 &&
                       s.lent.load(std::memory_order_relaxed) == 0;
    if (empty || (verify && owner_gone(owner))) {
      s.owner.store(0, std::memory_order_release);
    }
  }
}

// Wakes the other side's sleepers after `side` lost its last holder (under the lock; the
// caller wakes after unlocking if this returns true).
bool announce_if_gone(QueueHeader* h, uint32_t side) noexcept {
  if (!end_gone_hint(h, side)) return false;
  std::atomic<uint32_t>& w = side == layout::kEndProducer ? h->put_seq : h->get_seq;
  (void)bump(w);
  return true;
}

Deadline min_deadline(Deadline a, uint64_t slice_ns) noexcept {
  const uint64_t s = platform::Deadline::after_ns(slice_ns).ns;
  return a.ns < s ? a : Deadline{s};
}
}  // namespace

void Queue::open_end(QueueEnd end) {
  const auto side = static_cast<uint32_t>(end);
  QueueLock lock(heap_, h_, ring_);
  (void)lock.lock(Deadline::never(), false);
  const uint64_t me = self_owner();
  h_->ends.opened[side].store(1, std::memory_order_release);
  if (layout::QueueEndSlot* s = find_slot(h_, side, me)) {
    s->refs.store(s->refs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return;
  }
  reclaim_ends(h_, side, false);
  layout::QueueEndSlot* free_slot = find_slot(h_, side, 0);
  if (free_slot == nullptr) {
    reclaim_ends(h_, side, true);
    free_slot = find_slot(h_, side, 0);
  }
  if (free_slot == nullptr) {
    h_->ends.overflow[side].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  free_slot->refs.store(1, std::memory_order_relaxed);
  free_slot->lent.store(0, std::memory_order_relaxed);
  free_slot->owner.store(me, std::memory_order_release);  // the claim: counts first
}

void Queue::close_end(QueueEnd end) {
  const auto side = static_cast<uint32_t>(end);
  QueueLock lock(heap_, h_, ring_);
  (void)lock.lock(Deadline::never(), false);
  layout::QueueEndSlot* s = find_slot(h_, side, self_owner());
  if (s != nullptr && s->refs.load(std::memory_order_relaxed) != 0) {
    s->refs.store(s->refs.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    release_slot(*s);
  } else if (h_->ends.overflow[side].load(std::memory_order_relaxed) != 0) {
    h_->ends.overflow[side].fetch_sub(1, std::memory_order_relaxed);
  } else {
    return;
  }
  const bool wake_them = announce_if_gone(h_, side);
  lock.unlock();
  if (wake_them) wake(side == layout::kEndProducer ? h_->put_seq : h_->get_seq);
}

uint64_t Queue::lend_end(QueueEnd end) {
  const auto side = static_cast<uint32_t>(end);
  QueueLock lock(heap_, h_, ring_);
  (void)lock.lock(Deadline::never(), false);
  const uint64_t me = self_owner();
  layout::QueueEndSlot* s = find_slot(h_, side, me);
  if (s == nullptr) return 0;  // this process holds no slot (overflow): nothing to lend
  s->lent.store(s->lent.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  return me;
}

void Queue::claim_lent(QueueEnd end, uint64_t lender) {
  open_end(end);  // first: the end never looks closed in between
  if (lender == 0) return;
  const auto side = static_cast<uint32_t>(end);
  QueueLock lock(heap_, h_, ring_);
  (void)lock.lock(Deadline::never(), false);
  layout::QueueEndSlot* s = find_slot(h_, side, lender);
  if (s == nullptr || s->lent.load(std::memory_order_relaxed) == 0) return;
  s->lent.store(s->lent.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  release_slot(*s);
}

uint64_t Queue::holders(QueueEnd end) {
  const auto side = static_cast<uint32_t>(end);
  QueueLock lock(heap_, h_, ring_);
  (void)lock.lock(Deadline::never(), false);
  reclaim_ends(h_, side, true);
  uint64_t n = h_->ends.overflow[side].load(std::memory_order_relaxed);
  for (const layout::QueueEndSlot& s : h_->ends.slots[side]) {
    if (s.owner.load(std::memory_order_relaxed) != 0) ++n;
  }
  return n;
}

uint64_t Queue::lent_holds(QueueEnd end) const noexcept {
  uint64_t n = 0;
  for (const layout::QueueEndSlot& s : h_->ends.slots[static_cast<uint32_t>(end)]) {
    if (s.owner.load(std::memory_order_relaxed) != 0) n += s.lent.load(std::memory_order_relaxed);
  }
  return n;
}

bool Queue::end_closed(QueueEnd end) {
  const auto side = static_cast<uint32_t>(end);
  if (h_->ends.opened[side].load(std::memory_order_acquire) == 0) return false;
  QueueLock lock(heap_, h_, ring_);
  (void)lock.lock(Deadline::never(), false);
  if (end_gone_hint(h_, side)) return true;
  reclaim_ends(h_, side, true);
  const bool wake_them = announce_if_gone(h_, side);  // a death nobody announced
  lock.unlock();
  if (wake_them) wake(side == layout::kEndProducer ? h_->put_seq : h_->get_seq);
  return wake_them;
}

// Slices: a closed end is seen at once (close_end wakes the waiter, which then stops), a dead
// holder only when a slice ends and end_closed asks the kernel; they double up to 100 ms.
constexpr uint64_t kFirstEndSliceNs = 2'000'000;
constexpr uint64_t kMaxEndSliceNs = 100'000'000;

QueueStatus Queue::recv(std::string& out, Deadline deadline, bool interruptible,
                        uint8_t* encoding) {
  uint64_t slice = kFirstEndSliceNs;
  for (;;) {
    const QueueStatus s = get(out, min_deadline(deadline, slice), interruptible, encoding);
    if (s != QueueStatus::kEmpty) return s;
    if (end_closed(QueueEnd::kProducer)) {
      // The last producer may have put just before it closed: take that first.
      const QueueStatus last = try_get(out, encoding);
      return last == QueueStatus::kOk ? last : QueueStatus::kClosed;
    }
    if (pd(deadline).passed()) return QueueStatus::kEmpty;
    slice = std::min(slice * 2, kMaxEndSliceNs);
  }
}

QueueStatus Queue::send(std::string_view msg, Deadline deadline, bool interruptible,
                        uint8_t encoding) {
  const std::span<const std::string_view> msgs(&msg, 1);
  const std::span<const uint8_t> encs(&encoding, 1);
  if (end_gone_hint(h_, layout::kEndConsumer) && end_closed(QueueEnd::kConsumer)) {
    return QueueStatus::kClosed;
  }
  // A consumer that died (not closed) is only seen by asking the kernel: every 64th put while
  // messages wait unread (a live consumer keeping up leaves the queue empty: no system call).
  if (h_->ends.opened[layout::kEndConsumer].load(std::memory_order_relaxed) != 0 &&
      h_->count.load(std::memory_order_relaxed) != 0 &&
      (h_->puts.load(std::memory_order_relaxed) & 63) == 0 && end_closed(QueueEnd::kConsumer)) {
    return QueueStatus::kClosed;
  }
  uint64_t slice = kFirstEndSliceNs;
  for (;;) {
    const QueueStatus s = put_encoded(msgs, encs, min_deadline(deadline, slice), interruptible);
    if (s != QueueStatus::kFull) return s;
    if (end_closed(QueueEnd::kConsumer)) return QueueStatus::kClosed;
    if (pd(deadline).passed()) return QueueStatus::kFull;
    slice = std::min(slice * 2, kMaxEndSliceNs);
  }
}

void Queue::set_watched(QueueEnd end, bool on) noexcept {
  h_->ends.watched[static_cast<uint32_t>(end)].store(on ? 1 : 0, std::memory_order_seq_cst);
}
bool Queue::watched(QueueEnd end) const noexcept {
  return h_->ends.watched[static_cast<uint32_t>(end)].load(std::memory_order_seq_cst) != 0;
}

// ---- state ----------------------------------------------------------------------------------

uint64_t Queue::size() const noexcept { return h_->count.load(std::memory_order_relaxed); }

bool Queue::full(uint64_t length) const noexcept {
  const uint64_t span = out_of_band(h_->ring_bytes, length)
                            ? layout::record_span(sizeof(layout::OutOfBandRef))
                            : layout::record_span(length);
  return !fits(h_, 1, length, span);
}

uint64_t Queue::ring_bytes() const noexcept { return h_->ring_bytes; }
uint64_t Queue::max_messages() const noexcept { return h_->max_messages; }
uint64_t Queue::max_bytes() const noexcept { return h_->max_bytes; }

uint64_t Queue::max_message_bytes() const noexcept {
  const uint64_t most = layout::kQueueMaxOutOfBand;
  return h_->max_bytes != 0 ? std::min(most, h_->max_bytes) : most;
}

QueueStats Queue::stats() const noexcept {
  QueueStats s;
  s.size = h_->count.load(std::memory_order_relaxed);
  s.bytes = h_->bytes.load(std::memory_order_relaxed);
  s.puts = h_->puts.load(std::memory_order_relaxed);
  s.gets = h_->gets.load(std::memory_order_relaxed);
  s.recoveries = h_->recoveries.load(std::memory_order_relaxed);
  for (const layout::QueueHandout& slot : h_->handouts.slots) {
    const uint64_t owner = slot.owner.load(std::memory_order_relaxed);
    if (owner != 0) ++s.handed_out;
    if ((owner & layout::kQueueHandoutKept) != 0) ++s.handouts_kept;
  }
  s.handouts_reclaimed = h_->handouts.reclaimed.load(std::memory_order_relaxed);
  s.handouts_copied = h_->handouts.copied.load(std::memory_order_relaxed);
  return s;
}

QueueStats Queue::check() {
  QueueLock lock(heap_, h_, ring_);
  lock.lock_or_corrupt("check");
  // Every failure below throws; the guard unlocks.
  QueueHeader copy;
  std::memcpy(static_cast<void*>(&copy), h_, sizeof copy);
  channels::check_header_constants(copy, heap_.usable_size(top_)).throw_if_error();
  const uint64_t head = h_->head.load(), tail = h_->tail.load();
  Result<channels::RingWalk> w = channels::walk_ring(ring_, h_->ring_bytes, head, tail);
  if (!w.has_value()) corrupt(w.status().message());
  const uint64_t count = h_->count.load(), bytes = h_->bytes.load();
  if (w.value().count != count || w.value().bytes != bytes) {
    corrupt("queue: Q5: counts say " + std::to_string(count) + " messages of " +
            std::to_string(bytes) + " bytes, the ring holds " + std::to_string(w.value().count) +
            " of " + std::to_string(w.value().bytes));
  }
  if ((h_->max_messages != 0 && count > h_->max_messages) ||
      (h_->max_bytes != 0 && bytes > h_->max_bytes)) {
    corrupt("queue: Q5: more in the queue than its bounds allow");
  }
  if (h_->put_intent_state.load() != layout::kIntentIdle ||
      h_->get_intent_state.load() != layout::kIntentIdle) {
    corrupt("queue: Q6: an intent is not idle at rest");
  }
  if (Result<channels::EndsView> e = channels::check_ends(h_->ends); !e.has_value()) {
    corrupt(e.status().message());
  }
  // Q6: each out-of-band record names its own used block, large enough.
  std::set<HeapRef> named;
  for (uint64_t pos = head; pos != tail;) {
    const channels::RecordView v = channels::read_record(ring_, h_->ring_bytes, pos, tail).take();
    if (v.ref != 0) {
      uint64_t usable = 0;
      try {
        usable = heap_.usable_size(v.ref);
      } catch (const Error& e) {
        corrupt("queue: Q6: the record at " + std::to_string(pos) + " names block " +
                std::to_string(v.ref) + ", which is not a used block (" + e.what() + ")");
      }
      if (usable < v.message || !named.insert(v.ref).second) {
        corrupt("queue: Q6: block " + std::to_string(v.ref) + " is too small or named twice");
      }
    }
    pos += v.span();
  }
  // Q9: first the blocks of holders that are gone are freed; then each owned slot names its
  // own used block, which no record names.
  (void)reclaim_handouts_locked(heap_, h_);
  Result<std::vector<uint64_t>> handed = channels::check_handouts(h_->handouts);
  if (!handed.has_value()) corrupt(handed.status().message());
  std::vector<uint64_t>& handed_blocks = handed.value();  // distinct: co-owners name one block
  std::sort(handed_blocks.begin(), handed_blocks.end());
  handed_blocks.erase(std::unique(handed_blocks.begin(), handed_blocks.end()),
                      handed_blocks.end());
  for (HeapRef b : handed_blocks) {
    try {
      (void)heap_.usable_size(b);
    } catch (const Error& e) {
      corrupt("queue: Q9: a hand-out slot names block " + std::to_string(b) +
              ", which is not a used block (" + e.what() + ")");
    }
    if (named.count(b) != 0) {
      corrupt("queue: Q9: block " + std::to_string(b) + " is handed out and named by a record");
    }
  }
  // The heap's own invariants, under the queue's lock so that no put or get is between two
  // steps meanwhile: every committed block is then the queue's, a record's or a hand-out
  // slot's (a death anywhere leaves none else; stray blocks are counted, not an error).
  if (tasks_ != nullptr) {  // Q7 (the constants were checked at attach)
    for (const layout::TaskSlot& t : tasks_->slot) {
      if (t.taken == 0 && t.pid != 0) corrupt("queue: Q7: a task slot with nothing taken is owned");
    }
  }
  const HeapReport hr = heap_.check();
  QueueStats s = stats();
  s.out_of_band = named.size();
  // Committed blocks beyond the queue's own (its header and ring, its task table), those the
  // records name and those handed to live processes: leaks.
  const uint64_t own = 1 + (tasks_ != nullptr ? 1 : 0) + named.size() + handed_blocks.size();
  const uint64_t committed = hr.used_blocks - hr.pending_blocks;
  s.stray_blocks = committed > own ? committed - own : 0;
  return s;
}

}  // namespace shoal
