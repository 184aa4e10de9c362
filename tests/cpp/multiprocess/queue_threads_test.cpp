// shoal::Queue from many threads of one process, through two mappings of one queue, some
// messages out of band (run under TSan by `make test-tsan`: TSan cannot see across processes,
// so threads stand in for them).
#include "shoal/queue.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace shoal {
namespace {

TEST(QueueThreads, ProducerAndConsumerThreadsDeliverEachMessageExactlyOnce) {
  test::ScopedRuntimeDir dir;
  constexpr int kProducers = 3, kConsumers = 3, kPerProducer = 2000;
  Queue a = Queue::create({.ring_bytes = 2048, .max_messages = 50});
  Queue b = Queue::attach(a.handle());
  std::vector<std::vector<uint64_t>> got(kConsumers);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      Queue& q = c % 2 ? a : b;
      std::vector<std::string> batch;
      for (;;) {
        batch.clear();
        const QueueStatus s = c == 0 ? q.get_many(batch, 8, Deadline::after(60.0))
                                     : (batch.emplace_back(), q.get(batch[0], Deadline::after(60.0)));
        if (s != QueueStatus::kOk) {
          failures.fetch_add(1);
          return;
        }
        for (const std::string& m : batch) {
          if (m == "stop") {
            for (size_t r = &m - batch.data() + 1; r < batch.size(); ++r) (void)q.put(batch[r]);
            return;
          }
          uint64_t v = 0;
          std::memcpy(&v, m.data(), 8);
          got[c].push_back(v);
        }
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      Queue& q = p % 2 ? a : b;
      for (uint64_t i = 0; i < kPerProducer; ++i) {
        const uint64_t v = uint64_t(p) << 32 | i;
        std::string m(reinterpret_cast<const char*>(&v), 8);
        if (i % 50 == 0) m.resize(600, 'x');  // over a quarter ring: out of band
        if (q.put(m) != QueueStatus::kOk) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : producers) t.join();
  for (int c = 0; c < kConsumers; ++c) ASSERT_EQ(a.put("stop"), QueueStatus::kOk);
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  std::set<uint64_t> all;
  for (const auto& g : got) {
    std::vector<uint64_t> last(kProducers, 0);
    std::vector<bool> any(kProducers, false);
    for (uint64_t v : g) {
      EXPECT_TRUE(all.insert(v).second) << v;
      const uint64_t p = v >> 32, i = v & 0xffffffff;
      ASSERT_LT(p, uint64_t{kProducers});
      if (any[p]) {
        EXPECT_GT(i, last[p]);  // each consumer sees each producer in order
      }
      any[p] = true;
      last[p] = i;
    }
  }
  EXPECT_EQ(all.size(), size_t{kProducers} * kPerProducer);
  a.check();
}

// Zero-copy receive from threads: consumer threads take big messages as handed-out blocks
// (claims under the lock), keep a few, and release them from another thread than the one that
// took them (a QueueBlock is deallocated wherever its last view goes), while a thread reads
// stats() without the lock and producers put more big messages (each may run the put's
// reclaim). Every block comes back once: no slot, no stray block.
TEST(QueueThreads, HandedOutBlocksTakenAndReleasedByThreadsComeBackOnce) {
  test::ScopedRuntimeDir dir;
  constexpr int kProducers = 2, kConsumers = 2, kPerProducer = 400;
  Queue a = Queue::create({.ring_bytes = 2048});
  Queue b = Queue::attach(a.handle());
  const uint64_t base_blocks = a.heap().stats().live_blocks;
  std::mutex held_mu;
  std::vector<HeapRef> held;  // blocks waiting to be released by the releaser thread
  std::atomic<int> failures{0}, consumers_left{kConsumers};
  std::atomic<uint64_t> received{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      Queue& q = c % 2 ? a : b;
      std::vector<QueueMessage> out;
      for (;;) {
        if (q.get_messages(out, 4, Deadline::after(60.0), false, 0, true) != QueueStatus::kOk) {
          failures.fetch_add(1);
          break;
        }
        int stops = 0;
        for (const QueueMessage& m : out) {
          if (m.block == 0) {  // "stop", or copied: the table was full (the releaser lags)
            if (m.data == "stop") {
              ++stops;
            } else {
              if (m.data != std::string(600, 'x')) failures.fetch_add(1);
              received.fetch_add(1);
            }
            continue;
          }
          const char* p = reinterpret_cast<const char*>(q.heap().at(m.block, m.length));
          if (m.length != 600 || p[599] != 'x') failures.fetch_add(1);
          received.fetch_add(1);
          std::lock_guard<std::mutex> g(held_mu);
          held.push_back(m.block);
        }
        for (int k = 1; k < stops; ++k) (void)q.put("stop");  // another consumer's
        if (stops != 0) break;
      }
      consumers_left.fetch_sub(1);
    });
  }
  threads.emplace_back([&] {  // releases what the consumers hold, from its own thread
    for (;;) {
      std::vector<HeapRef> batch;
      {
        std::lock_guard<std::mutex> g(held_mu);
        batch.swap(held);
      }
      for (HeapRef r : batch) a.release(r);
      if (batch.empty() && consumers_left.load() == 0) {
        std::lock_guard<std::mutex> g(held_mu);
        if (held.empty()) return;
      }
      (void)a.stats();  // lock-free reads of the table while others write it
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      Queue& q = p % 2 ? a : b;
      const std::string m(600, 'x');  // over a quarter ring: out of band
      for (int i = 0; i < kPerProducer; ++i) {
        if (q.put(m) != QueueStatus::kOk) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : producers) t.join();
  for (int c = 0; c < kConsumers; ++c) ASSERT_EQ(a.put("stop"), QueueStatus::kOk);
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(received.load(), uint64_t{kProducers} * kPerProducer);
  const QueueStats s = a.check();
  std::printf("queue: %llu of %d big messages copied (the hand-out table full)\n",
              static_cast<unsigned long long>(s.handouts_copied), kProducers * kPerProducer);
  EXPECT_EQ(s.handed_out, 0u);
  EXPECT_EQ(s.stray_blocks, 0u);
  EXPECT_EQ(a.heap().stats().live_blocks, base_blocks);
}

}  // namespace
}  // namespace shoal
