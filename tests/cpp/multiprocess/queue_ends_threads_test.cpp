// tests/cpp/multiprocess/queue_ends_threads_test.cpp — the end table under threads (run under
// TSan): consumers blocked in recv on two mappings while producer threads send and the last one
// closes the producer end; every message arrives once, then every consumer sees kClosed.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "shoal/queue.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

TEST(QueueEndsThreads, ConsumersSeeEveryMessageThenEndOfStream) {
  test::ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 1024});
  Queue other = Queue::attach(q.handle());
  q.open_end(QueueEnd::kConsumer);
  constexpr int kProducers = 3, kEach = 2000, kConsumers = 3;
  for (int i = 0; i < kProducers; ++i) q.open_end(QueueEnd::kProducer);  // one per thread
  std::atomic<int> received{0}, closed{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      Queue& mine = c % 2 == 0 ? q : other;
      std::string m;
      for (;;) {
        const QueueStatus s = mine.recv(m);
        if (s == QueueStatus::kClosed) break;
        ASSERT_EQ(s, QueueStatus::kOk);
        received.fetch_add(1);
      }
      closed.fetch_add(1);
    });
  }
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      Queue& mine = p % 2 == 0 ? other : q;
      for (int i = 0; i < kEach; ++i) ASSERT_EQ(mine.send("message"), QueueStatus::kOk);
      mine.close_end(QueueEnd::kProducer);  // the last of the three ends the stream
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(received.load(), kProducers * kEach);
  EXPECT_EQ(closed.load(), kConsumers);
  EXPECT_TRUE(q.end_closed(QueueEnd::kProducer));
  q.check();
}

}  // namespace
}  // namespace shoal
