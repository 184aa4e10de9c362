// shoal::Queue from many threads of one process, through two mappings of one queue, some
// messages out of band (run under TSan by `make test-tsan`: TSan cannot see across processes,
// so threads stand in for them).
#include "shoal/queue.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
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

}  // namespace
}  // namespace shoal
