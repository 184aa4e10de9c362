// RobustMutex between threads of one process (run under TSan): every thread counts as the
// holding process, the word's atomics alone must order the plain memory it guards, and no
// wake-up may be lost. No duration is asserted.
#include "sync/robust_mutex.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace shoal::sync {
namespace {

TEST(RobustMutexThreads, ThreadsKeepACounterExact) {
  constexpr int kThreads = 4, kIters = 5000;
  layout::RobustMutexWord w{};
  long counter = 0;  // plain memory, guarded by the mutex only
  std::atomic<int> failures{0}, died{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      RobustMutex m(&w);  // a view per thread, one word
      for (int i = 0; i < kIters; ++i) {
        auto r = m.lock(platform::Deadline::after(60.0).value());
        if (!r.has_value()) {
          failures.fetch_add(1);
          continue;
        }
        if (r.value() == Locked::kOwnerDied) died.fetch_add(1);
        ++counter;
        if (i % 64 == 0) std::this_thread::yield();  // let the others reach the futex path
        m.unlock();
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(died.load(), 0);  // the holder is this process, always alive
  EXPECT_EQ(counter, long{kThreads} * kIters);
  EXPECT_EQ(w.state(), 0u);
}

TEST(RobustMutexThreads, RobustLockHandsOffBetweenThreads) {
  constexpr int kThreads = 3, kIters = 2000;
  layout::RobustMutexWord w{};
  std::vector<int> log;  // plain memory, guarded by the lock
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        RobustLock l{RobustMutex(&w)};
        log.push_back(t);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(log.size(), size_t{kThreads} * kIters);
  EXPECT_EQ(w.state(), 0u);
}

}  // namespace
}  // namespace shoal::sync
