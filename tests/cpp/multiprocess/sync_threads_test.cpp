// The sync objects under threads of one process (run under TSan by the tsan preset): plain
// memory guarded by each lock stays exact and race-free, semaphores bound concurrency, events
// and conditions hand data over, barriers pass in rounds. No duration is asserted.
#include "shoal/sync.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace shoal {
namespace {

constexpr int kThreads = 4;
constexpr int kIters = 300;

Deadline generous() { return Deadline::after(60.0); }

template <class F>
void run_threads(int n, F f) {
  std::vector<std::thread> ts;
  for (int i = 0; i < n; ++i) ts.emplace_back([&f, i] { f(i); });
  for (auto& t : ts) t.join();
}

TEST(SyncThreads, MutexGuardsPlainMemory) {
  test::ScopedRuntimeDir rd;
  Mutex m = Mutex::create();
  Mutex other = Mutex::attach(m.handle(false));  // a second mapping of the same lock
  uint64_t counter = 0;                           // plain memory: TSan checks the lock
  std::atomic<int> failures{0};
  run_threads(kThreads, [&](int i) {
    Mutex& mine = i % 2 == 0 ? m : other;
    for (int n = 0; n < kIters; ++n) {
      if (mine.lock(generous()) != SyncStatus::kOk) {
        failures.fetch_add(1);
        return;
      }
      ++counter;
      mine.unlock();
    }
  });
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(counter, uint64_t{kThreads} * kIters);
}

TEST(SyncThreads, RecursiveMutexGuardsPlainMemory) {
  test::ScopedRuntimeDir rd;
  RecursiveMutex r = RecursiveMutex::create();
  uint64_t counter = 0;
  std::atomic<int> failures{0};
  run_threads(kThreads, [&](int) {
    for (int n = 0; n < kIters; ++n) {
      if (r.lock(generous()) != SyncStatus::kOk || r.lock(generous()) != SyncStatus::kOk) {
        failures.fetch_add(1);
        return;
      }
      if (r.count() != 2) failures.fetch_add(1);
      ++counter;
      r.unlock();
      r.unlock();
    }
  });
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(counter, uint64_t{kThreads} * kIters);
}

void semaphore_bounds(Semaphore s) {
  std::atomic<int> inside{0}, too_many{0}, failures{0};
  run_threads(kThreads, [&](int) {
    for (int n = 0; n < kIters; ++n) {
      if (s.acquire(generous()) != SyncStatus::kOk) {
        failures.fetch_add(1);
        return;
      }
      if (inside.fetch_add(1) + 1 > 2) too_many.fetch_add(1);
      inside.fetch_sub(1);
      s.release();
    }
  });
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(too_many.load(), 0);
  EXPECT_EQ(s.value(), 2u);
}

TEST(SyncThreads, PlainSemaphoreBoundsConcurrency) {
  test::ScopedRuntimeDir rd;
  semaphore_bounds(Semaphore::create(2));
}

TEST(SyncThreads, BoundedSemaphoreBoundsConcurrency) {
  test::ScopedRuntimeDir rd;
  semaphore_bounds(Semaphore::create(2, true));
}

TEST(SyncThreads, EventHandsOverPlainData) {
  test::ScopedRuntimeDir rd;
  Event e = Event::create();
  int payload = 0;  // written before set, read after wait: ordered by the event
  std::atomic<int> seen{0};
  std::thread setter([&] {
    payload = 42;
    e.set();
  });
  run_threads(kThreads, [&](int) {
    if (e.wait(generous()) == SyncStatus::kOk && payload == 42) seen.fetch_add(1);
  });
  setter.join();
  EXPECT_EQ(seen.load(), kThreads);
}

TEST(SyncThreads, ConditionProducerConsumer) {
  test::ScopedRuntimeDir rd;
  Condition c = Condition::create();
  int items = 0;     // guarded by c's lock
  int consumed = 0;  // guarded by c's lock
  constexpr int kItems = 200;
  std::atomic<int> failures{0};
  std::thread producer([&] {
    for (int n = 0; n < kItems; ++n) {
      if (c.lock(generous()) != SyncStatus::kOk) {
        failures.fetch_add(1);
        return;
      }
      ++items;
      c.notify();
      c.unlock();
    }
  });
  run_threads(2, [&](int) {
    if (c.lock(generous()) != SyncStatus::kOk) {
      failures.fetch_add(1);
      return;
    }
    while (consumed < kItems) {
      if (items > 0) {
        --items;
        ++consumed;
        continue;
      }
      // A bounded wait: the other consumer may have taken the last item meanwhile.
      SyncStatus s = c.wait(Deadline::after(0.05));
      if (s != SyncStatus::kOk && s != SyncStatus::kTimeout) failures.fetch_add(1);
    }
    c.notify_all();
    c.unlock();
  });
  producer.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(consumed, kItems);
  EXPECT_EQ(items, 0);
}

TEST(SyncThreads, BarrierRounds) {
  test::ScopedRuntimeDir rd;
  Barrier b = Barrier::create(kThreads);
  std::vector<int> round_of(kThreads, 0);  // each thread writes its own; all read after a wait
  std::atomic<int> failures{0};
  run_threads(kThreads, [&](int i) {
    for (int round = 1; round <= 20; ++round) {
      round_of[i] = round;
      if (b.wait(generous()) != SyncStatus::kOk) {
        failures.fetch_add(1);
        return;
      }
      for (int j = 0; j < kThreads; ++j) {
        if (round_of[j] < round) failures.fetch_add(1);
      }
      if (b.wait(generous()) != SyncStatus::kOk) {
        failures.fetch_add(1);
        return;
      }
    }
  });
  EXPECT_EQ(failures.load(), 0);
}

TEST(SyncThreads, SharedValueAtomicAdds) {
  test::ScopedRuntimeDir rd;
  auto v = SharedValue<int64_t>::create(0);
  auto d = SharedValue<double>::create(0.0);
  run_threads(kThreads, [&](int) {
    for (int n = 0; n < kIters; ++n) {
      v.add(1);
      d.add(0.5);
      int64_t e = v.load();
      (void)v.compare_exchange(e, e);
    }
  });
  EXPECT_EQ(v.load(), int64_t{kThreads} * kIters);
  EXPECT_EQ(d.load(), 0.5 * kThreads * kIters);
}

}  // namespace
}  // namespace shoal
