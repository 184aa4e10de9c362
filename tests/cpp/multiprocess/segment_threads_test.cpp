// Threads of one process sharing the client (run under TSan: the client's locking and the
// mapping cache must be race-free).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "shoal/segment.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

TEST(SegmentThreads, ConcurrentCreateAttachHandleAndClose) {
  test::ScopedRuntimeDir rd;
  // Start the session before any thread exists (the broker is started with fork).
  Segment first = Segment::create(4096);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        Segment s = Segment::create(8192);
        auto* p = reinterpret_cast<int*>(s.data());
        p[0] = t * 1000 + i;
        Segment again = Segment::attach(s.handle());
        if (reinterpret_cast<int*>(again.data())[0] != t * 1000 + i) ++failures;
        Segment shared = Segment::attach(first.handle());
        if (shared.size() != 4096) ++failures;
        s.close();
        again.close();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace shoal
