// The futex wrapper under contention (run under TSan): the patterns the lock layer will build
// on it — a hand-off, a mutex, an event — must order plain memory between threads through the
// word's atomics alone, and must never lose a wake-up. No duration is asserted.
#include "platform/futex.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace shoal::platform {
namespace {

using Word = std::atomic<uint32_t>;

// Waits until the word leaves `v`, in bounded slices as the lock layer will (a lost wake-up
// would show as a hang only as long as the test's own timeout, never as a wrong result).
bool wait_while(const Word& w, uint32_t v) {
  while (w.load(std::memory_order_acquire) == v) {
    auto r = futex_wait(&w, v, Deadline::after(1.0).value());
    if (!r.has_value()) return false;
  }
  return true;
}

TEST(FutexThreads, PingPongHandsPlainMemoryBackAndForth) {
  constexpr int kRounds = 2000;
  Word turn{0};
  long plain = 0;  // not atomic: only the thread whose turn it is touches it
  bool ok_a = true, ok_b = true;
  auto player = [&](uint32_t me, bool* ok) {
    for (int i = 0; i < kRounds; ++i) {
      if (!wait_while(turn, 1 - me)) *ok = false;
      ++plain;
      turn.store(1 - me, std::memory_order_release);
      if (!futex_wake(&turn, 1).has_value()) *ok = false;
    }
  };
  std::thread a(player, 0, &ok_a);
  std::thread b(player, 1, &ok_b);
  a.join();
  b.join();
  EXPECT_TRUE(ok_a);
  EXPECT_TRUE(ok_b);
  EXPECT_EQ(plain, 2 * kRounds);
}

// Drepper's three-state mutex ("Futexes are tricky"): 0 free, 1 locked, 2 locked with waiters.
class FutexMutex {
 public:
  void lock() {
    uint32_t c = 0;
    if (w_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
    if (c != 2) c = w_.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      (void)futex_wait(&w_, 2, Deadline::after(1.0).value());
      c = w_.exchange(2, std::memory_order_acquire);
    }
  }
  void unlock() {
    if (w_.fetch_sub(1, std::memory_order_release) != 1) {
      w_.store(0, std::memory_order_release);
      (void)futex_wake(&w_, 1);
    }
  }

 private:
  Word w_{0};
};

TEST(FutexThreads, MutexKeepsACounterExact) {
  constexpr int kThreads = 4, kIters = 2000;
  FutexMutex m;
  long counter = 0;  // guarded by m only
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < kIters; ++i) {
        m.lock();
        ++counter;
        m.unlock();
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter, long{kThreads} * kIters);
}

TEST(FutexThreads, EventSetWakesEveryWaiter) {
  constexpr int kWaiters = 6;
  for (int round = 0; round < 20; ++round) {
    Word event{0};
    int payload = 0;  // written before the event is set, read after it is seen
    std::atomic<int> seen{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kWaiters; ++t) {
      ts.emplace_back([&] {
        while (event.load(std::memory_order_acquire) == 0) {
          // set() always wakes, so no slice is needed; an error ends the loop (seen falls short).
          if (!futex_wait(&event, 0, Deadline::never()).has_value()) return;
        }
        if (payload == 42) seen.fetch_add(1);
      });
    }
    payload = 42;
    event.store(1, std::memory_order_release);
    auto k = futex_wake_all(&event);
    for (auto& t : ts) t.join();
    ASSERT_TRUE(k.has_value()) << k.status().message();
    EXPECT_LE(k.value(), kWaiters);
    EXPECT_EQ(seen.load(), kWaiters);
  }
}

}  // namespace
}  // namespace shoal::platform
