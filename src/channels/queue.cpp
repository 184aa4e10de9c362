// src/channels/queue.cpp — shoal::Queue (include/shoal/queue.hpp) over a heap block holding a
// QueueHeader and a byte ring (src/layout/queue_layout.hpp). Protocol: docs/design/queue.md.
#include "shoal/queue.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "channels/queue_core.hpp"
#include "layout/queue_layout.hpp"
#include "platform/futex.hpp"
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
// A side that finds the queue full (empty) first spins this many rounds watching the other
// side's futex word without the lock and without announcing itself, so that a peer that is
// awake hands over without any system call on either side; then it sets the waiters bit and
// sleeps. About 1-3 us on x86-64 (pause is ~10-40 ns): shorter than a futex sleep/wake pair.
constexpr int kSpinRounds = 100;
// Sleeps are bounded slices, doubling from the first to the last: a waker that died between
// changing the queue and calling futex_wake strands a sleeper for one slice at most.
constexpr uint64_t kFirstSliceNs = 5'000'000;
constexpr uint64_t kMaxSliceNs = 100'000'000;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

platform::Deadline pd(Deadline d) noexcept { return platform::Deadline{d.ns}; }

[[noreturn]] void corrupt(const std::string& what) { throw_error(Errc::kCorrupt, what); }

enum class LockOutcome { kHeld, kTimeout, kInterrupted };

// The queue's lock, held for the scope of one operation. Recovery runs inside lock() when the
// previous holder died, before the caller looks at anything.
class QueueLock {
 public:
  QueueLock(QueueHeader* h, std::byte* ring) noexcept : h_(h), ring_(ring), m_(&h->lock) {}
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
    for (std::atomic<uint32_t>* word : {&h_->put_seq, &h_->get_seq}) {
      const uint32_t v = word->load(std::memory_order_relaxed);
      word->store((v + 1) & kSeqMask, std::memory_order_release);
      (void)platform::futex_wake_all(word);
    }
  }

  QueueHeader* h_;
  std::byte* ring_;
  sync::RobustMutex m_;
  bool held_ = false;
};

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
    if (!spun_) {
      seen_ = word.load(std::memory_order_relaxed);
    } else {
      seen_ = word.fetch_or(kSeqWaiters, std::memory_order_relaxed) | kSeqWaiters;
    }
  }

  // After unlocking.
  bool wait(std::atomic<uint32_t>& word) noexcept {
    if (!spun_) {
      spun_ = true;
      for (int i = 0; i < kSpinRounds; ++i) {
        cpu_relax();
        // Acquire: pairs with bump()'s release (the caller re-takes the lock before reading).
        if (word.load(std::memory_order_acquire) != seen_) return true;
      }
      return true;  // sleep next round, announced
    }
    platform::Deadline end = platform::Deadline::after_ns(slice_);
    if (end.ns > deadline_.ns) end = deadline_;
    slice_ = std::min(slice_ * 2, kMaxSliceNs);
    Result<platform::FutexWait> r = platform::futex_wait(&word, seen_, end);
    if (r.has_value() && r.value() == platform::FutexWait::kInterrupted && interruptible_) {
      return false;
    }
    return true;
  }

  bool passed() const noexcept { return deadline_.passed(); }

 private:
  platform::Deadline deadline_;
  bool interruptible_;
  bool spun_ = false;
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
  heap.root().store(top, std::memory_order_release);  // Q1: the header is complete
  return Queue(std::move(heap), top, h, p + sizeof(QueueHeader));
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
  return Queue(std::move(heap), top, reinterpret_cast<QueueHeader*>(all),
               all + sizeof(QueueHeader));
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

// Under the lock: writes one record at `pos`, returns the position after it.
uint64_t write_record(QueueHeader* h, std::byte* ring, uint64_t pos,
                      std::string_view msg) noexcept {
  const layout::QueueRecord rec{static_cast<uint32_t>(msg.size()),
                                layout::record_tag(layout::kRecordBytes)};
  channels::ring_write(ring, h->ring_bytes, pos, &rec, sizeof rec);
  channels::ring_write(ring, h->ring_bytes, pos + sizeof rec, msg.data(), msg.size());
  const uint64_t pad = layout::record_span(msg.size()) - sizeof rec - msg.size();
  if (pad != 0) {
    static constexpr std::byte kZeros[8] = {};
    channels::ring_write(ring, h->ring_bytes, pos + sizeof rec + msg.size(), kZeros, pad);
  }
  return pos + layout::record_span(msg.size());
}
}  // namespace

QueueStatus Queue::put(std::string_view msg, Deadline deadline, bool interruptible) {
  return put_many(std::span<const std::string_view>(&msg, 1), deadline, interruptible);
}

QueueStatus Queue::put_many(std::span<const std::string_view> msgs, Deadline deadline,
                            bool interruptible) {
  if (msgs.empty()) return QueueStatus::kOk;
  uint64_t len = 0, span = 0;
  for (std::string_view m : msgs) {
    if (m.size() > max_message_bytes()) {
      throw_error(Errc::kInvalidArgument,
                  "queue: a message of " + std::to_string(m.size()) +
                      " bytes is longer than this queue takes (" +
                      std::to_string(max_message_bytes()) +
                      "; messages larger than the ring are not supported yet)");
    }
    len += m.size();
    span += layout::record_span(m.size());
  }
  if (span > h_->ring_bytes || (h_->max_messages != 0 && msgs.size() > h_->max_messages) ||
      (h_->max_bytes != 0 && len > h_->max_bytes)) {
    throw_error(Errc::kInvalidArgument, "queue: " + std::to_string(msgs.size()) +
                                            " messages of " + std::to_string(len) +
                                            " bytes together can never fit this queue");
  }
  Waiter waiter(deadline, interruptible);
  for (;;) {
    QueueLock lock(h_, ring_);
    const LockOutcome lo = lock.lock(deadline, interruptible);
    if (lo == LockOutcome::kInterrupted) return QueueStatus::kInterrupted;
    if (lo == LockOutcome::kTimeout) return QueueStatus::kFull;
    if (fits(h_, msgs.size(), len, span)) {
      // Steps (docs/design/queue.md): 1 write the records past tail; 2 publish: one store of
      // tail; 3 the derived counts; 4 bump put_seq; unlock; 5 wake sleeping consumers.
      uint64_t pos = h_->tail.load(std::memory_order_relaxed);
      for (std::string_view m : msgs) pos = write_record(h_, ring_, pos, m);
      // Release: the records are complete before the tail that publishes them (the lock
      // orders them for live readers; this orders them for a recovery after a death).
      h_->tail.store(pos, std::memory_order_release);
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
    if (waiter.passed()) return QueueStatus::kFull;
    waiter.prepare(h_->get_seq);
    lock.unlock();
    if (!waiter.wait(h_->get_seq)) return QueueStatus::kInterrupted;
  }
}

// ---- get ------------------------------------------------------------------------------------

QueueStatus Queue::get(std::string& out, Deadline deadline, bool interruptible) {
  Waiter waiter(deadline, interruptible);
  for (;;) {
    QueueLock lock(h_, ring_);
    const LockOutcome lo = lock.lock(deadline, interruptible);
    if (lo == LockOutcome::kInterrupted) return QueueStatus::kInterrupted;
    if (lo == LockOutcome::kTimeout) return QueueStatus::kEmpty;
    const uint64_t head = h_->head.load(std::memory_order_relaxed);
    const uint64_t tail = h_->tail.load(std::memory_order_relaxed);
    if (head != tail) {
      // Steps: 1 copy the record out (an allocation that throws leaves the queue as it was);
      // 2 consume: one store of head; 3 the derived counts; 4 bump get_seq; unlock; 5 wake.
      Result<uint32_t> len = channels::read_record(ring_, h_->ring_bytes, head, tail);
      if (!len.has_value()) {
        lock.unlock();
        corrupt(len.status().message());
      }
      std::string msg(len.value(), '\0');
      channels::ring_read(ring_, h_->ring_bytes, head + layout::kRecordHeaderBytes, msg.data(),
                          len.value());
      h_->head.store(head + layout::record_span(len.value()), std::memory_order_release);
      h_->count.store(h_->count.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
      h_->bytes.store(h_->bytes.load(std::memory_order_relaxed) - len.value(),
                      std::memory_order_relaxed);
      h_->gets.fetch_add(1, std::memory_order_relaxed);
      const bool sleepers = bump(h_->get_seq);
      lock.unlock();
      if (sleepers) wake(h_->get_seq);
      out = std::move(msg);
      return QueueStatus::kOk;
    }
    if (waiter.passed()) return QueueStatus::kEmpty;
    waiter.prepare(h_->put_seq);
    lock.unlock();
    if (!waiter.wait(h_->put_seq)) return QueueStatus::kInterrupted;
  }
}

QueueStatus Queue::get_many(std::vector<std::string>& out, size_t max_messages,
                            Deadline deadline, bool interruptible, uint64_t max_bytes) {
  if (max_messages == 0) max_messages = 1;
  Waiter waiter(deadline, interruptible);
  for (;;) {
    QueueLock lock(h_, ring_);
    const LockOutcome lo = lock.lock(deadline, interruptible);
    if (lo == LockOutcome::kInterrupted) return QueueStatus::kInterrupted;
    if (lo == LockOutcome::kTimeout) return QueueStatus::kEmpty;
    const uint64_t head = h_->head.load(std::memory_order_relaxed);
    const uint64_t tail = h_->tail.load(std::memory_order_relaxed);
    if (head != tail) {
      // As get, for several records: all are copied out before the one head store, so a
      // consumer killed here loses all of them or none.
      const size_t first = out.size();
      uint64_t pos = head, taken_bytes = 0;
      size_t taken = 0;
      try {
        while (pos != tail && taken < max_messages) {
          Result<uint32_t> len = channels::read_record(ring_, h_->ring_bytes, pos, tail);
          if (!len.has_value()) {
            out.resize(first);
            lock.unlock();
            corrupt(len.status().message());
          }
          if (taken != 0 && max_bytes != 0 && taken_bytes + len.value() > max_bytes) break;
          std::string& msg = out.emplace_back(len.value(), '\0');
          channels::ring_read(ring_, h_->ring_bytes, pos + layout::kRecordHeaderBytes,
                              msg.data(), len.value());
          pos += layout::record_span(len.value());
          taken_bytes += len.value();
          ++taken;
        }
      } catch (...) {
        out.resize(first);
        throw;
      }
      h_->head.store(pos, std::memory_order_release);
      h_->count.store(h_->count.load(std::memory_order_relaxed) - taken,
                      std::memory_order_relaxed);
      h_->bytes.store(h_->bytes.load(std::memory_order_relaxed) - taken_bytes,
                      std::memory_order_relaxed);
      h_->gets.fetch_add(taken, std::memory_order_relaxed);
      const bool sleepers = bump(h_->get_seq);
      lock.unlock();
      if (sleepers) wake(h_->get_seq);
      return QueueStatus::kOk;
    }
    if (waiter.passed()) return QueueStatus::kEmpty;
    waiter.prepare(h_->put_seq);
    lock.unlock();
    if (!waiter.wait(h_->put_seq)) return QueueStatus::kInterrupted;
  }
}

// ---- state ----------------------------------------------------------------------------------

uint64_t Queue::size() const noexcept { return h_->count.load(std::memory_order_relaxed); }

bool Queue::full(uint64_t length) const noexcept {
  return !fits(h_, 1, length, layout::record_span(length));
}

uint64_t Queue::ring_bytes() const noexcept { return h_->ring_bytes; }
uint64_t Queue::max_messages() const noexcept { return h_->max_messages; }
uint64_t Queue::max_bytes() const noexcept { return h_->max_bytes; }

uint64_t Queue::max_message_bytes() const noexcept {
  const uint64_t ring = channels::max_record_payload(h_->ring_bytes);
  return h_->max_bytes != 0 ? std::min(ring, h_->max_bytes) : ring;
}

QueueStats Queue::stats() const noexcept {
  QueueStats s;
  s.size = h_->count.load(std::memory_order_relaxed);
  s.bytes = h_->bytes.load(std::memory_order_relaxed);
  s.puts = h_->puts.load(std::memory_order_relaxed);
  s.gets = h_->gets.load(std::memory_order_relaxed);
  s.recoveries = h_->recoveries.load(std::memory_order_relaxed);
  return s;
}

QueueStats Queue::check() {
  {
    QueueLock lock(h_, ring_);
    if (lock.lock(Deadline::never(), false) != LockOutcome::kHeld) {
      corrupt("queue: check could not take the lock");
    }
    QueueHeader copy;
    std::memcpy(static_cast<void*>(&copy), h_, sizeof copy);
    const Status constants =
        channels::check_header_constants(copy, heap_.usable_size(top_));
    if (!constants.is_ok()) {
      lock.unlock();
      corrupt(constants.message());
    }
    Result<channels::RingWalk> w =
        channels::walk_ring(ring_, h_->ring_bytes, h_->head.load(), h_->tail.load());
    if (!w.has_value()) {
      lock.unlock();
      corrupt(w.status().message());
    }
    const uint64_t count = h_->count.load(), bytes = h_->bytes.load();
    if (w.value().count != count || w.value().bytes != bytes) {
      lock.unlock();
      corrupt("queue: Q5: counts say " + std::to_string(count) + " messages of " +
              std::to_string(bytes) + " bytes, the ring holds " +
              std::to_string(w.value().count) + " of " + std::to_string(w.value().bytes));
    }
    if ((h_->max_messages != 0 && count > h_->max_messages) ||
        (h_->max_bytes != 0 && bytes > h_->max_bytes)) {
      lock.unlock();
      corrupt("queue: Q5: more in the queue than its bounds allow");
    }
  }
  heap_.check();
  return stats();
}

}  // namespace shoal
