// The sync objects across forked processes, with real SIGKILLs: a lock's holder killed is
// reported to the next owner, a tracked semaphore gets a killed process's units back, a
// barrier with a killed party breaks, killed waiters block nobody, and counters stay exact.
// No duration is asserted: every wait has a generous deadline.
#include "shoal/sync.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "test_support.hpp"

namespace shoal {
namespace {

using test::ChildProcess;

Deadline generous() { return Deadline::after(60.0); }

[[noreturn]] void sleep_forever() {
  for (;;) ::pause();
}

TEST(SyncProcesses, MutexHolderKilledNextOwnerIsTold) {
  test::ScopedRuntimeDir rd;
  Mutex m = Mutex::create();
  ChildProcess holder([&] {
    if (m.lock(generous()) != SyncStatus::kOk) return 2;
    sleep_forever();
  });
  ASSERT_TRUE(test::wait_until([&] { return m.locked(); }));
  EXPECT_EQ(m.try_lock(), SyncStatus::kTimeout);
  holder.kill(SIGKILL);
  EXPECT_EQ(m.lock(generous()), SyncStatus::kOwnerDied);
  EXPECT_TRUE(m.owner_died());
  m.unlock();
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
  EXPECT_EQ(m.lock(generous()), SyncStatus::kOk);
  EXPECT_FALSE(m.owner_died());
  m.unlock();
}

TEST(SyncProcesses, MutexInAnUnrelatedProcessByHandle) {
  test::ScopedRuntimeDir rd;
  Mutex m = Mutex::create();
  ChildProcess holder("sync_attach_lock_and_hold", m.handle());
  ASSERT_TRUE(test::wait_until([&] { return m.locked(); }));
  holder.kill(SIGKILL);
  EXPECT_EQ(m.lock(generous()), SyncStatus::kOwnerDied);
  m.unlock();
}

SHOAL_CHILD_CASE(sync_attach_lock_and_hold) {
  Mutex m = Mutex::attach(arg);
  if (m.lock(Deadline::after(60.0)) != SyncStatus::kOk) return 2;
  for (;;) ::pause();
}

TEST(SyncProcesses, RecursiveMutexKilledAtDepthThree) {
  test::ScopedRuntimeDir rd;
  RecursiveMutex r = RecursiveMutex::create();
  Event at_depth_3 = Event::create();
  ChildProcess holder([&] {
    for (int i = 0; i < 3; ++i) {
      if (r.lock(generous()) != SyncStatus::kOk) return 2;
    }
    if (r.count() != 3) return 3;
    at_depth_3.set();
    sleep_forever();
  });
  ASSERT_EQ(at_depth_3.wait(generous()), SyncStatus::kOk);
  EXPECT_EQ(r.try_lock(), SyncStatus::kTimeout);
  holder.kill(SIGKILL);
  EXPECT_EQ(r.lock(generous()), SyncStatus::kOwnerDied);
  EXPECT_EQ(r.count(), 1u);
  EXPECT_TRUE(r.held_by_this_thread());
  r.unlock();
  EXPECT_EQ(r.count(), 0u);
  EXPECT_EQ(r.lock(generous()), SyncStatus::kOk);
  r.unlock();
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
}

// A child takes `units` units and is killed holding them.
void units_of_a_killed_process(Semaphore& s, uint32_t units, bool given_back) {
  ChildProcess taker([&] {
    for (uint32_t i = 0; i < units; ++i) {
      if (s.acquire(generous()) != SyncStatus::kOk) return 2;
    }
    sleep_forever();
  });
  ASSERT_TRUE(test::wait_until([&] { return s.value() == 0; }));
  taker.kill(SIGKILL);
  ASSERT_EQ(taker.wait(), 128 + SIGKILL);
  if (!given_back) {
    EXPECT_EQ(s.acquire(Deadline::after(0.3)), SyncStatus::kTimeout);
    EXPECT_EQ(s.value(), 0u);
    return;
  }
  for (uint32_t i = 0; i < units; ++i) EXPECT_EQ(s.acquire(generous()), SyncStatus::kOk);
  EXPECT_EQ(s.units_held_by_this_process(), units);
  EXPECT_EQ(s.value(), 0u);
  s.release(units);
  EXPECT_EQ(s.value(), units);
}

TEST(SyncProcesses, BoundedSemaphoreGetsAKilledProcessesUnitsBack) {
  test::ScopedRuntimeDir rd;
  Semaphore s = Semaphore::create(2, true);
  units_of_a_killed_process(s, 2, true);
  EXPECT_THROW(s.release(), InvalidArgumentError);  // still bounded by 2
}

TEST(SyncProcesses, RecoverSemaphoreGetsAKilledProcessesUnitsBack) {
  test::ScopedRuntimeDir rd;
  Semaphore s = Semaphore::create(3, false, true);
  units_of_a_killed_process(s, 3, true);
}

TEST(SyncProcesses, PlainSemaphoreKeepsTheStdlibMeaning) {
  test::ScopedRuntimeDir rd;
  Semaphore s = Semaphore::create(1);
  units_of_a_killed_process(s, 1, false);
  // A release from another process is a signal.
  ChildProcess releaser([&] {
    s.release();
    return 0;
  });
  EXPECT_EQ(releaser.wait(), 0);
  EXPECT_EQ(s.acquire(generous()), SyncStatus::kOk);
}

TEST(SyncProcesses, BoundedSemaphoreWaiterWakesWhenTheHolderIsKilled) {
  test::ScopedRuntimeDir rd;
  Semaphore s = Semaphore::create(1, true);
  ChildProcess taker([&] {
    if (s.acquire(generous()) != SyncStatus::kOk) return 2;
    sleep_forever();
  });
  ASSERT_TRUE(test::wait_until([&] { return s.value() == 0; }));
  // Killed while the parent already waits (its slices reclaim the dead units).
  ChildProcess killer([&] {
    ::usleep(50'000);
    return ::kill(taker.pid(), SIGKILL) == 0 ? 0 : 3;
  });
  EXPECT_EQ(s.acquire(generous()), SyncStatus::kOk);
  EXPECT_EQ(killer.wait(), 0);
  EXPECT_EQ(taker.wait(), 128 + SIGKILL);
  s.release();
}

TEST(SyncProcesses, BarrierPartyKilledBreaksItForTheOthers) {
  test::ScopedRuntimeDir rd;
  Barrier b = Barrier::create(4);
  ChildProcess a([&] { return b.wait(generous()) == SyncStatus::kBroken ? 0 : 2; });
  ChildProcess victim([&] {
    (void)b.wait(generous());
    return 3;
  });
  ASSERT_TRUE(test::wait_until([&] { return b.n_waiting() == 2; }));
  victim.kill(SIGKILL);
  EXPECT_EQ(b.wait(generous()), SyncStatus::kBroken);
  EXPECT_TRUE(b.broken());
  EXPECT_EQ(a.wait(), 0);
  EXPECT_EQ(victim.wait(), 128 + SIGKILL);
  b.reset();
  EXPECT_FALSE(b.broken());
}

TEST(SyncProcesses, BarrierPassesAcrossProcesses) {
  test::ScopedRuntimeDir rd;
  Barrier b = Barrier::create(3);
  std::vector<std::unique_ptr<ChildProcess>> kids;
  for (int i = 0; i < 2; ++i) {
    kids.push_back(std::make_unique<ChildProcess>([&] {
      for (int round = 0; round < 20; ++round) {
        if (b.wait(generous()) != SyncStatus::kOk) return 2;
      }
      return 0;
    }));
  }
  for (int round = 0; round < 20; ++round) ASSERT_EQ(b.wait(generous()), SyncStatus::kOk);
  for (auto& k : kids) EXPECT_EQ(k->wait(), 0);
}

TEST(SyncProcesses, EventWaiterKilledBlocksNobody) {
  test::ScopedRuntimeDir rd;
  Event e = Event::create();
  SharedValue<int32_t> waiting = SharedValue<int32_t>::create(0);
  ChildProcess victim([&] {
    waiting.add(1);
    (void)e.wait(generous());
    return 3;
  });
  ChildProcess live([&] {
    waiting.add(1);
    return e.wait(generous()) == SyncStatus::kOk ? 0 : 2;
  });
  ASSERT_TRUE(test::wait_until([&] { return waiting.load() == 2; }));
  victim.kill(SIGKILL);
  EXPECT_EQ(victim.wait(), 128 + SIGKILL);
  e.set();
  EXPECT_EQ(live.wait(), 0);
}

TEST(SyncProcesses, ConditionWaiterKilledBlocksNobody) {
  test::ScopedRuntimeDir rd;
  Condition c = Condition::create();
  SharedValue<int32_t> state = SharedValue<int32_t>::create(0);  // guarded by c's lock
  auto waiter = [&] {
    if (c.lock(generous()) != SyncStatus::kOk) return 2;
    state.add(1);  // one more waiter about to wait
    while (state.load() < 100) {
      SyncStatus s = c.wait(generous());
      if (s != SyncStatus::kOk && s != SyncStatus::kOwnerDied) return 4;
    }
    c.unlock();
    return 0;
  };
  ChildProcess victim(waiter);
  ChildProcess live(waiter);
  ASSERT_TRUE(test::wait_until([&] { return state.load() == 2; }));
  victim.kill(SIGKILL);
  EXPECT_EQ(victim.wait(), 128 + SIGKILL);
  // The victim may have died holding the lock (after its wait re-took it): then this lock
  // reports it, which is the point of the robust lock.
  SyncStatus l = c.lock(generous());
  ASSERT_TRUE(l == SyncStatus::kOk || l == SyncStatus::kOwnerDied);
  state.store(100);
  c.notify(1);  // one wake suffices: the dead waiter is asleep nowhere
  c.unlock();
  EXPECT_EQ(live.wait(), 0);
}

TEST(SyncProcesses, CountersStayExactUnderTheLock) {
  test::ScopedRuntimeDir rd;
  SharedValue<int64_t> under_lock = SharedValue<int64_t>::create(0, 'q');
  SharedValue<int64_t> atomic_adds = SharedValue<int64_t>::create(0, 'l');
  RecursiveMutex r = RecursiveMutex::create();
  SharedValue<int64_t> under_rlock = SharedValue<int64_t>::create(0);
  constexpr int kKids = 4, kIters = 500;
  std::vector<std::unique_ptr<ChildProcess>> kids;
  for (int i = 0; i < kKids; ++i) {
    kids.push_back(std::make_unique<ChildProcess>([&] {
      for (int n = 0; n < kIters; ++n) {
        if (under_lock.get_lock().lock(generous()) != SyncStatus::kOk) return 2;
        under_lock.store(under_lock.load() + 1);  // a read-modify-write the lock makes whole
        under_lock.get_lock().unlock();
        atomic_adds.add(1);
        if (r.lock(generous()) != SyncStatus::kOk || r.lock(generous()) != SyncStatus::kOk) {
          return 3;
        }
        under_rlock.store(under_rlock.load() + 1);
        r.unlock();
        r.unlock();
      }
      return 0;
    }));
  }
  for (auto& k : kids) EXPECT_EQ(k->wait(), 0);
  EXPECT_EQ(under_lock.load(), kKids * kIters);
  EXPECT_EQ(atomic_adds.load(), kKids * kIters);
  EXPECT_EQ(under_rlock.load(), kKids * kIters);
}

TEST(SyncProcesses, SemaphoreLimitsConcurrencyAcrossProcesses) {
  test::ScopedRuntimeDir rd;
  Semaphore s = Semaphore::create(2, true);
  SharedValue<int32_t> inside = SharedValue<int32_t>::create(0);
  SharedValue<int32_t> too_many = SharedValue<int32_t>::create(0);
  std::vector<std::unique_ptr<ChildProcess>> kids;
  for (int i = 0; i < 4; ++i) {
    kids.push_back(std::make_unique<ChildProcess>([&] {
      for (int n = 0; n < 200; ++n) {
        if (s.acquire(generous()) != SyncStatus::kOk) return 2;
        if (inside.add(1) > 2) too_many.add(1);
        inside.add(-1);
        s.release();
      }
      return 0;
    }));
  }
  for (auto& k : kids) EXPECT_EQ(k->wait(), 0);
  EXPECT_EQ(too_many.load(), 0);
  EXPECT_EQ(s.value(), 2u);
}

}  // namespace
}  // namespace shoal
