// shoal::Heap from several threads of one process (run under TSan): allocation, free and the
// on-demand mapping of extents that another thread added.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "shoal/heap.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

TEST(HeapThreads, ThreadsAllocateWriteAndFreeWithoutOverlap) {
  test::ScopedRuntimeDir dir;
  Heap h = Heap::create(Heap::Options{64 * 1024});
  std::atomic<int> bad{0};
  auto work = [&](unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<std::pair<HeapRef, uint8_t>> live;
    for (int step = 0; step < 2000; ++step) {
      if (live.size() < 16 || rng() % 2 == 0) {
        const uint64_t n = 16 + rng() % 8000;
        const HeapRef r = h.allocate(n);
        const auto tag = static_cast<uint8_t>(seed * 16 + step % 16);
        std::memset(h.at(r, 16), tag, 16);
        live.emplace_back(r, tag);
      } else {
        const size_t i = rng() % live.size();
        if (std::to_integer<uint8_t>(h.at(live[i].first, 16)[15]) != live[i].second) ++bad;
        h.free(live[i].first);
        live[i] = live.back();
        live.pop_back();
      }
    }
    for (auto& [r, tag] : live) h.free(r);
  };
  std::vector<std::thread> ts;
  for (unsigned i = 1; i <= 4; ++i) ts.emplace_back(work, i);
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
  const HeapReport rep = h.check();
  EXPECT_EQ(rep.used_blocks, 0u);
  EXPECT_GT(rep.extents, 1u);
}

}  // namespace
}  // namespace shoal
