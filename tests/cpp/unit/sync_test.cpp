// The sync objects of include/shoal/sync.hpp in one process: header validation, each
// primitive's single-process contract, interruptible waits. No duration is asserted.
#include "shoal/sync.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>

#include "layout/sync_layout.hpp"
#include "platform/platform.hpp"
#include "sync/robust_mutex.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

using test::SignalStorm;

Deadline soon() { return Deadline::after(0.02); }

TEST(SyncKind, IsRegistered) {
  EXPECT_EQ(kind_name(static_cast<uint32_t>(ObjectKind::kSync)), "sync");
}

TEST(SyncHeader, AttachChecksKindTypeMagicAndVersion) {
  test::ScopedRuntimeDir rd;
  Mutex m = Mutex::create();
  EXPECT_EQ(m.segment().kind(), ObjectKind::kSync);
  // Another type of sync object.
  EXPECT_THROW(Event::from_segment(m.segment()), IncompatibleSegmentError);
  EXPECT_THROW(Semaphore::attach(m.handle()), IncompatibleSegmentError);
  // Not a sync segment at all.
  Segment bytes = Segment::create(4096);
  EXPECT_THROW(Mutex::from_segment(bytes), IncompatibleSegmentError);
  // A sync segment whose header is zero, foreign, newer, or names no type.
  Segment raw = Segment::create(4096, {ObjectKind::kSync, false});
  EXPECT_THROW(Mutex::from_segment(raw), CorruptSegmentError);
  layout::SyncHeader h{};
  h.magic = layout::kSyncMagic;
  h.version = layout::kSyncVersion + 1;
  h.type = static_cast<uint32_t>(layout::SyncType::kMutex);
  std::memcpy(raw.data(), &h, sizeof h);
  EXPECT_THROW(Mutex::from_segment(raw), IncompatibleSegmentError);
  h.version = layout::kSyncVersion;
  h.type = 99;
  std::memcpy(raw.data(), &h, sizeof h);
  EXPECT_THROW(Mutex::from_segment(raw), CorruptSegmentError);
  h.type = static_cast<uint32_t>(layout::SyncType::kBarrier);
  h.param[0] = 0;  // no parties
  std::memcpy(raw.data(), &h, sizeof h);
  EXPECT_THROW(Barrier::from_segment(raw), CorruptSegmentError);
  h.type = static_cast<uint32_t>(layout::SyncType::kSemaphore);
  h.param[0] = 1;
  h.param[1] = layout::kSemBounded;  // bounded without tracked: no creator writes it
  std::memcpy(raw.data(), &h, sizeof h);
  EXPECT_THROW(Semaphore::from_segment(raw), CorruptSegmentError);
  h.type = static_cast<uint32_t>(layout::SyncType::kValue);
  h.param[0] = 3;
  h.param[1] = 'i';
  std::memcpy(raw.data(), &h, sizeof h);
  EXPECT_THROW(SharedValue<int32_t>::from_segment(raw), CorruptSegmentError);
  // A small segment of kind sync.
  Segment tiny = Segment::create(16, {ObjectKind::kSync, false});
  EXPECT_THROW(Mutex::from_segment(tiny), CorruptSegmentError);
}

// Every single-byte change of a valid header of every type is refused or accepted, never a
// crash (the header is checked on a local copy; the fuzzers' rule for headers).
TEST(SyncHeader, ByteFlipsNeverCrash) {
  test::ScopedRuntimeDir rd;
  const Segment segs[] = {Mutex::create().segment(), Semaphore::create(3, true).segment(),
                          Barrier::create(2).segment(), SharedValue<double>::create(1).segment()};
  for (const Segment& seg : segs) {
    layout::SyncHeader saved;
    std::memcpy(&saved, seg.data(), sizeof saved);
    for (size_t i = 0; i < sizeof saved; ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        seg.data()[i] ^= std::byte(1 << bit);
        try { (void)Mutex::from_segment(seg); } catch (const Error&) {}
        try { (void)Semaphore::from_segment(seg); } catch (const Error&) {}
        try { (void)Barrier::from_segment(seg); } catch (const Error&) {}
        try { (void)SharedValue<double>::from_segment(seg); } catch (const Error&) {}
        try { (void)SharedValue<int8_t>::from_segment(seg); } catch (const Error&) {}
        seg.data()[i] ^= std::byte(1 << bit);
      }
    }
    EXPECT_EQ(std::memcmp(&saved, seg.data(), sizeof saved), 0);
  }
}

TEST(Mutex, ACorruptLockWordIsCorruptSegmentError) {
  test::ScopedRuntimeDir rd;
  Mutex m = Mutex::create();
  auto* st = reinterpret_cast<layout::MutexState*>(m.segment().data() + layout::kSyncBodyOffset);
  st->word.store(layout::kRobustWaiters);  // the waiters bit without a holder
  EXPECT_THROW(m.lock(soon()), CorruptSegmentError);
  EXPECT_THROW(m.try_lock(), CorruptSegmentError);
  st->word.store(0);
  EXPECT_EQ(m.try_lock(), SyncStatus::kOk);
  m.unlock();
}

TEST(Mutex, LockUnlockTryLockAndAttach) {
  test::ScopedRuntimeDir rd;
  Mutex m = Mutex::create();
  EXPECT_FALSE(m.locked());
  EXPECT_EQ(m.lock(), SyncStatus::kOk);
  EXPECT_TRUE(m.held_by_this_process());
  EXPECT_FALSE(m.owner_died());
  Mutex same = Mutex::attach(m.handle());
  EXPECT_TRUE(same.locked());
  EXPECT_EQ(same.try_lock(), SyncStatus::kTimeout);  // not recursive
  EXPECT_EQ(same.lock(soon()), SyncStatus::kTimeout);
  same.unlock();
  EXPECT_FALSE(m.locked());
  EXPECT_THROW(m.unlock(), InvalidArgumentError);
  EXPECT_EQ(m.try_lock(), SyncStatus::kOk);
  m.unlock();
}

TEST(Mutex, OwnerDiedIsReportedAndFlaggedUntilUnlock) {
  test::ScopedRuntimeDir rd;
  Mutex m = Mutex::create();
  // A lock word naming our live parent with a start time not its own: a reused pid whose
  // holder is gone.
  auto* st = reinterpret_cast<layout::MutexState*>(m.segment().data() + layout::kSyncBodyOffset);
  const uint32_t parent = static_cast<uint32_t>(::getppid());
  st->word.store(parent, sync::robust_tag_of(
                             platform::process_start_time(static_cast<pid_t>(parent)) + 1));
  EXPECT_EQ(m.lock(Deadline::after(60.0)), SyncStatus::kOwnerDied);
  EXPECT_TRUE(m.owner_died());
  m.unlock();
  EXPECT_FALSE(m.owner_died());
  EXPECT_EQ(m.lock(), SyncStatus::kOk);
  m.unlock();
}


TEST(Mutex, InterruptibleWaitsReturnInterrupted) {
  test::ScopedRuntimeDir rd;
  Mutex m = Mutex::create();
  ASSERT_EQ(m.lock(), SyncStatus::kOk);
  Event e = Event::create();
  Semaphore s = Semaphore::create(0);
  Semaphore b = Semaphore::create(0, true);
  SignalStorm storm(::pthread_self());
  const Deadline far = Deadline::after(60.0);
  // The holder is this process: only the signal can end the wait before the deadline.
  EXPECT_EQ(m.lock(far, true), SyncStatus::kInterrupted);
  EXPECT_EQ(e.wait(far, true), SyncStatus::kInterrupted);
  EXPECT_EQ(s.acquire(far, true), SyncStatus::kInterrupted);
  EXPECT_EQ(b.acquire(far, true), SyncStatus::kInterrupted);
  m.unlock();
  // A condition wait re-takes the lock before it returns kInterrupted.
  Condition c = Condition::create();
  ASSERT_EQ(c.lock(), SyncStatus::kOk);
  EXPECT_EQ(c.wait(far, true), SyncStatus::kInterrupted);
  EXPECT_TRUE(c.mutex().held_by_this_process());
  c.unlock();
  // An interrupted party withdraws: the barrier stays whole.
  Barrier bar = Barrier::create(2);
  EXPECT_EQ(bar.wait(far, true), SyncStatus::kInterrupted);
  EXPECT_EQ(bar.n_waiting(), 0u);
  EXPECT_FALSE(bar.broken());
}

TEST(RecursiveMutex, DepthCountsAndOtherThreadsWait) {
  test::ScopedRuntimeDir rd;
  RecursiveMutex r = RecursiveMutex::create();
  EXPECT_EQ(r.count(), 0u);
  EXPECT_THROW(r.unlock(), InvalidArgumentError);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(r.lock(), SyncStatus::kOk);
  EXPECT_EQ(r.count(), 3u);
  EXPECT_TRUE(r.held_by_this_thread());
  SyncStatus other = SyncStatus::kOk;
  std::thread t([&] {
    other = r.lock(soon());
    if (other == SyncStatus::kOk) r.unlock();
  });
  t.join();
  EXPECT_EQ(other, SyncStatus::kTimeout);
  r.unlock();
  r.unlock();
  EXPECT_EQ(r.count(), 1u);
  r.unlock();
  EXPECT_EQ(r.count(), 0u);
  EXPECT_FALSE(r.held_by_this_thread());
  std::thread t2([&] {
    other = r.lock(Deadline::after(60.0));
    EXPECT_EQ(r.count(), 1u);
    r.unlock();
  });
  t2.join();
  EXPECT_EQ(other, SyncStatus::kOk);
}

TEST(Semaphore, PlainCountsAndAcceptsReleasesFromAnyone) {
  test::ScopedRuntimeDir rd;
  Semaphore s = Semaphore::create(2);
  EXPECT_FALSE(s.tracked());
  EXPECT_EQ(s.acquire(), SyncStatus::kOk);
  EXPECT_EQ(s.acquire(), SyncStatus::kOk);
  EXPECT_EQ(s.try_acquire(), SyncStatus::kTimeout);
  EXPECT_EQ(s.acquire(soon()), SyncStatus::kTimeout);
  s.release(5);  // a signal: above the initial value is fine
  EXPECT_EQ(s.value(), 5u);
  Semaphore same = Semaphore::attach(s.handle());
  EXPECT_EQ(same.value(), 5u);
  EXPECT_THROW(Semaphore::create(Semaphore::kMaxValue + 1), InvalidArgumentError);
}

TEST(Semaphore, BoundedRefusesReleaseAboveItsInitialValue) {
  test::ScopedRuntimeDir rd;
  Semaphore s = Semaphore::create(2, true);
  EXPECT_TRUE(s.bounded());
  EXPECT_THROW(s.release(), InvalidArgumentError);
  EXPECT_EQ(s.acquire(), SyncStatus::kOk);
  EXPECT_EQ(s.units_held_by_this_process(), 1u);
  EXPECT_EQ(s.value(), 1u);
  EXPECT_THROW(s.release(2), InvalidArgumentError);
  s.release();
  EXPECT_EQ(s.value(), 2u);
  EXPECT_EQ(s.units_held_by_this_process(), 0u);
  EXPECT_THROW(s.release(), InvalidArgumentError);
}

TEST(Semaphore, RecoverAcceptsSignalsAndTracksUnits) {
  test::ScopedRuntimeDir rd;
  Semaphore s = Semaphore::create(1, false, true);
  EXPECT_TRUE(s.tracked());
  EXPECT_FALSE(s.bounded());
  s.release(2);  // not a debt: a signal
  EXPECT_EQ(s.value(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(s.acquire(), SyncStatus::kOk);
  EXPECT_EQ(s.units_held_by_this_process(), 3u);
  EXPECT_EQ(s.try_acquire(), SyncStatus::kTimeout);
  s.release(3);
  EXPECT_EQ(s.value(), 3u);
}

TEST(Event, SetClearWait) {
  test::ScopedRuntimeDir rd;
  Event e = Event::create();
  EXPECT_FALSE(e.is_set());
  EXPECT_EQ(e.wait(soon()), SyncStatus::kTimeout);
  e.set();
  e.set();
  EXPECT_TRUE(e.is_set());
  EXPECT_EQ(e.wait(), SyncStatus::kOk);
  EXPECT_TRUE(Event::attach(e.handle()).is_set());
  e.clear();
  EXPECT_FALSE(e.is_set());
  EXPECT_EQ(e.wait(Deadline{0}), SyncStatus::kTimeout);
}

// Whether thread `tid` of this process is asleep (state S in /proc/self/task/<tid>/stat).
bool thread_sleeping(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;
  char buf[512] = {};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* close = std::strrchr(buf, ')');
  return close != nullptr && close[1] == ' ' && close[2] == 'S';
}

TEST(Event, ASetFollowedByAClearStillWakesTheWaiter) {
  test::ScopedRuntimeDir rd;
  Event e = Event::create();
  std::atomic<pid_t> tid{0};
  SyncStatus got = SyncStatus::kTimeout;
  std::thread w([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    got = e.wait(Deadline::after(60.0));
  });
  // Set and clear only once the waiter sleeps inside wait() (its one blocking call), so that
  // it read the word before the set: a set before the wait began would prove nothing.
  ASSERT_TRUE(test::wait_until([&] { return tid.load() != 0 && thread_sleeping(tid.load()); }));
  e.set();
  e.clear();
  w.join();
  EXPECT_EQ(got, SyncStatus::kOk);
  EXPECT_FALSE(e.is_set());
}

TEST(Condition, WaitNeedsTheLockAndTimesOutHoldingIt) {
  test::ScopedRuntimeDir rd;
  Condition c = Condition::create();
  EXPECT_THROW(c.wait(soon()), InvalidArgumentError);
  ASSERT_EQ(c.lock(), SyncStatus::kOk);
  EXPECT_EQ(c.wait(soon()), SyncStatus::kTimeout);
  EXPECT_TRUE(c.mutex().held_by_this_process());
  c.notify();  // nobody waits: nothing happens
  c.notify_all();
  c.unlock();
}

TEST(Condition, NotifyWakesAWaiter) {
  test::ScopedRuntimeDir rd;
  Condition c = Condition::create();
  int flag = 0;  // guarded by c's lock
  SyncStatus got = SyncStatus::kOk;
  std::thread w([&] {
    if (c.lock() != SyncStatus::kOk) return;
    while (flag == 0 && got == SyncStatus::kOk) got = c.wait(Deadline::after(60.0));
    c.unlock();
  });
  // The lock is per process, so this thread waits for the waiter to release it (in wait, or
  // before it ever took it): the notify below is never lost.
  ASSERT_EQ(c.lock(Deadline::after(60.0)), SyncStatus::kOk);
  flag = 1;
  c.notify_all();
  c.unlock();
  w.join();
  EXPECT_EQ(got, SyncStatus::kOk);
}

TEST(Condition, WaitOverAGivenMutex) {
  test::ScopedRuntimeDir rd;
  Condition c = Condition::create();
  Mutex m = Mutex::create();
  EXPECT_THROW(c.wait(m, soon()), InvalidArgumentError);
  ASSERT_EQ(m.lock(), SyncStatus::kOk);
  EXPECT_EQ(c.wait(m, soon()), SyncStatus::kTimeout);
  EXPECT_TRUE(m.held_by_this_process());
  EXPECT_FALSE(c.mutex().locked());  // the condition's own lock stays unused
  m.unlock();

  int flag = 0;  // guarded by m
  std::atomic<bool> waiting{false};
  SyncStatus got = SyncStatus::kOk;
  std::thread w([&] {
    if (m.lock() != SyncStatus::kOk) return;
    waiting = true;
    while (flag == 0 && got == SyncStatus::kOk) got = c.wait(m, Deadline::after(60.0));
    m.unlock();
  });
  ASSERT_TRUE(test::wait_until([&] { return waiting.load(); }));
  // Only a wait that released m lets this lock through (m is per process: this thread waits).
  ASSERT_EQ(m.lock(Deadline::after(60.0)), SyncStatus::kOk);
  flag = 1;
  c.notify();
  m.unlock();
  w.join();
  EXPECT_EQ(got, SyncStatus::kOk);
}

TEST(Condition, WaitOverAGivenRecursiveMutexRestoresTheDepth) {
  test::ScopedRuntimeDir rd;
  Condition c = Condition::create();
  RecursiveMutex r = RecursiveMutex::create();
  EXPECT_THROW(c.wait(r, soon()), InvalidArgumentError);
  ASSERT_EQ(r.lock(), SyncStatus::kOk);
  ASSERT_EQ(r.lock(), SyncStatus::kOk);
  EXPECT_EQ(c.wait(r, soon()), SyncStatus::kTimeout);
  EXPECT_EQ(r.count(), 2u);
  r.unlock();
  r.unlock();

  int flag = 0;  // guarded by r
  std::atomic<bool> waiting{false};
  std::atomic<uint32_t> depth_after{0};
  SyncStatus got = SyncStatus::kOk;
  std::thread w([&] {
    for (int i = 0; i < 3; ++i) {
      if (r.lock() != SyncStatus::kOk) return;
    }
    waiting = true;
    while (flag == 0 && got == SyncStatus::kOk) got = c.wait(r, Deadline::after(60.0));
    depth_after = r.count();
    for (int i = 0; i < 3; ++i) r.unlock();
  });
  ASSERT_TRUE(test::wait_until([&] { return waiting.load(); }));
  // Released fully (depth 3 -> free), or this lock would time out.
  ASSERT_EQ(r.lock(Deadline::after(60.0)), SyncStatus::kOk);
  EXPECT_EQ(r.count(), 1u);
  flag = 1;
  c.notify_all();
  r.unlock();
  w.join();
  EXPECT_EQ(got, SyncStatus::kOk);
  EXPECT_EQ(depth_after.load(), 3u);
}

TEST(Barrier, OnePartyPassesAtOnceAndAbortBreaks) {
  test::ScopedRuntimeDir rd;
  EXPECT_THROW(Barrier::create(0), InvalidArgumentError);
  EXPECT_THROW(Barrier::create(Barrier::kMaxParties + 1), InvalidArgumentError);
  Barrier one = Barrier::create(1);
  uint32_t idx = 9;
  EXPECT_EQ(one.wait(Deadline::never(), false, &idx), SyncStatus::kOk);
  EXPECT_EQ(idx, 0u);
  EXPECT_THROW(Barrier::create(2, -1.0), InvalidArgumentError);
  EXPECT_THROW(Barrier::create(2, std::nan("")), InvalidArgumentError);
  EXPECT_EQ(Barrier::attach(Barrier::create(3, 2.5).handle()).timeout(), 2.5);
  EXPECT_TRUE(std::isinf(one.timeout()));
  Barrier two = Barrier::create(2);
  EXPECT_EQ(two.parties(), 2u);
  EXPECT_EQ(two.wait(soon()), SyncStatus::kTimeout);  // and now broken, as threading's
  EXPECT_TRUE(two.broken());
  EXPECT_EQ(two.wait(), SyncStatus::kBroken);
  two.reset();
  EXPECT_FALSE(two.broken());
  two.abort();
  EXPECT_EQ(Barrier::attach(two.handle()).wait(), SyncStatus::kBroken);
}

TEST(Barrier, ThreadsPassTogether) {
  test::ScopedRuntimeDir rd;
  Barrier b = Barrier::create(3);
  std::atomic<int> ok{0};
  std::atomic<uint32_t> index_sum{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 3; ++i) {
    ts.emplace_back([&] {
      uint32_t idx = 0;
      if (b.wait(Deadline::after(60.0), false, &idx) == SyncStatus::kOk) {
        ok.fetch_add(1);
        index_sum.fetch_add(idx);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 3);
  EXPECT_EQ(index_sum.load(), 0u + 1u + 2u);
}

TEST(SharedValue, AtomicOperationsAndTypeChecks) {
  test::ScopedRuntimeDir rd;
  auto i = SharedValue<int32_t>::create(5);
  EXPECT_EQ(i.typecode(), 'i');
  EXPECT_EQ(i.load(), 5);
  EXPECT_EQ(i.add(3), 8);
  EXPECT_EQ(i.exchange(1), 8);
  int32_t expected = 2;
  EXPECT_FALSE(i.compare_exchange(expected, 7));
  EXPECT_EQ(expected, 1);
  EXPECT_TRUE(i.compare_exchange(expected, 7));
  EXPECT_EQ(SharedValue<int32_t>::attach(i.handle()).load(), 7);
  EXPECT_THROW(SharedValue<int64_t>::attach(i.handle()), IncompatibleSegmentError);
  EXPECT_THROW(SharedValue<uint32_t>::attach(i.handle()), IncompatibleSegmentError);
  EXPECT_THROW(SharedValue<float>::attach(i.handle()), IncompatibleSegmentError);
  EXPECT_THROW(Mutex::attach(i.handle()), IncompatibleSegmentError);

  auto d = SharedValue<double>::create(1.5);
  EXPECT_EQ(d.typecode(), 'd');
  EXPECT_EQ(d.add(2.0), 3.5);
  d.store(-1.0);
  EXPECT_EQ(d.load(), -1.0);
  auto l = SharedValue<int64_t>::create(0, 'l');
  EXPECT_EQ(l.typecode(), 'l');
  EXPECT_EQ(l.add(-3), -3);
  auto u = SharedValue<uint8_t>::create(250);
  EXPECT_EQ(u.add(10), 4);  // wraps as unsigned arithmetic does
  auto f = SharedValue<float>::create(0.5f);
  EXPECT_EQ(f.exchange(2.0f), 0.5f);

  // get_lock: a Mutex in the value's own segment.
  EXPECT_EQ(i.get_lock().lock(), SyncStatus::kOk);
  EXPECT_TRUE(SharedValue<int32_t>::attach(i.handle()).get_lock().locked());
  i.get_lock().unlock();
}

}  // namespace
}  // namespace shoal
