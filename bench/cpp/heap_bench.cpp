// bench/cpp/heap_bench.cpp — shoal::Heap against glibc malloc/free, side by side, on the same
// sequences of sizes: the cost of an allocation and a free, and the memory held after 10^5
// random allocations and frees of log-uniform sizes between 8 B and 1 MiB.
//
// Run: make bench-heap (a release build), or build/release/bench/cpp/heap_bench [--quick].
// Prints a Markdown table for BENCHMARKS.md. One process, one thread: this measures the
// allocator, not contention (two cores here; the heap's lock serialises writers by design).
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "shoal/heap.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Allocator {
  const char* name;
  std::function<uint64_t(uint64_t)> alloc;
  std::function<void(uint64_t)> free;
};

double ns_per_op(Clock::time_point t0, Clock::time_point t1, uint64_t ops) {
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(ops);
}

// Sizes: log-uniform between lo and hi, fixed seed, the same for every allocator.
std::vector<uint64_t> sizes(size_t n, double lo, double hi, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(std::log2(lo), std::log2(hi));
  std::vector<uint64_t> out(n);
  for (auto& s : out) s = static_cast<uint64_t>(std::exp2(d(rng)));
  return out;
}

struct Cost {
  double pair_ns = 0;   // allocate then free at once (the hot path: a block reused)
  double alloc_ns = 0;  // allocate 10^5 blocks of 8 B - 4 KiB
  double free_ns = 0;   // free them in random order
};

Cost measure_cost(const Allocator& a, size_t pairs, size_t batch) {
  Cost c;
  auto t0 = Clock::now();
  for (size_t i = 0; i < pairs; ++i) a.free(a.alloc(64));
  c.pair_ns = ns_per_op(t0, Clock::now(), pairs);
  const std::vector<uint64_t> sz = sizes(batch, 8, 4096, 1);
  std::vector<uint64_t> refs(batch);
  t0 = Clock::now();
  for (size_t i = 0; i < batch; ++i) refs[i] = a.alloc(sz[i]);
  c.alloc_ns = ns_per_op(t0, Clock::now(), batch);
  std::shuffle(refs.begin(), refs.end(), std::mt19937_64(2));
  t0 = Clock::now();
  for (uint64_t r : refs) a.free(r);
  c.free_ns = ns_per_op(t0, Clock::now(), batch);
  return c;
}

// 1000 live blocks first, then `steps` random steps that free a random live block or
// allocate a new one (equally likely), sizes log-uniform in [8 B, 1 MiB]. Returns the live
// bytes (what callers asked for) and live blocks at the end.
void churn(const Allocator& a, size_t steps, uint64_t* live_bytes, uint64_t* live_blocks) {
  std::mt19937_64 rng(3);
  const std::vector<uint64_t> sz = sizes(steps + 1000, 8, 1 << 20, 4);
  std::vector<std::pair<uint64_t, uint64_t>> live;
  size_t next = 0;
  for (int i = 0; i < 1000; ++i, ++next) live.emplace_back(a.alloc(sz[next]), sz[next]);
  for (size_t s = 0; s < steps; ++s) {
    if (!live.empty() && rng() % 2 == 0) {
      const size_t i = rng() % live.size();
      a.free(live[i].first);
      live[i] = live.back();
      live.pop_back();
    } else {
      live.emplace_back(a.alloc(sz[next]), sz[next]);
      ++next;
    }
  }
  *live_bytes = 0;
  for (auto& [r, n] : live) *live_bytes += n;
  *live_blocks = live.size();
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const size_t pairs = quick ? 100000 : 2000000;
  const size_t batch = 100000;
  const size_t steps = 100000;

  Allocator libc{"glibc malloc",
                 [](uint64_t n) { return reinterpret_cast<uint64_t>(std::malloc(n)); },
                 [](uint64_t r) { std::free(reinterpret_cast<void*>(r)); }};
  // glibc's fragmentation first, while its state is fresh (later runs leave freed memory
  // that it would reuse, hiding what this sequence costs). The blocks left live stay.
  double glibc_ratio = 0;
  {
    const struct mallinfo2 before = mallinfo2();
    uint64_t l = 0, b = 0;
    churn(libc, steps, &l, &b);
    const struct mallinfo2 after = mallinfo2();
    glibc_ratio = (static_cast<double>(after.arena + after.hblkhd) -
                   static_cast<double>(before.arena + before.hblkhd)) /
                  static_cast<double>(l);
  }
  shoal::Heap heap = shoal::Heap::create();
  Allocator sh{"shoal::Heap", [&](uint64_t n) { return heap.allocate(n); },
               [&](uint64_t r) { heap.free(r); }};
  Allocator pending{"shoal::Heap (pending + commit)",
                    [&](uint64_t n) {
                      const uint64_t r = heap.allocate_pending(n);
                      heap.commit(r);
                      return r;
                    },
                    [&](uint64_t r) { heap.free(r); }};

  std::printf("## Heap allocator (bench/cpp/heap_bench.cpp%s)\n\n", quick ? ", --quick" : "");
  std::printf("| allocator | alloc+free pair (64 B) | alloc (8 B-4 KiB) | free (random order) |\n");
  std::printf("| --- | --- | --- | --- |\n");
  // Each allocator runs once unmeasured first: the figures are the steady state, not the
  // first touch of fresh pages (or, for the heap, the creation of its extents).
  auto warm = [&](const Allocator& a) {
    (void)measure_cost(a, pairs / 10, batch);
    return measure_cost(a, pairs, batch);
  };
  const Cost cl = warm(libc);
  for (const Allocator* a : {&libc, &sh, &pending}) {
    const Cost c = a == &libc ? cl : warm(*a);
    std::printf("| %s | %.0f ns (%.2fx) | %.0f ns (%.2fx) | %.0f ns (%.2fx) |\n", a->name,
                c.pair_ns, c.pair_ns / cl.pair_ns, c.alloc_ns, c.alloc_ns / cl.alloc_ns,
                c.free_ns, c.free_ns / cl.free_ns);
  }

  // Fragmentation: a fresh heap, so its figures are this sequence's alone.
  shoal::Heap fresh = shoal::Heap::create();
  Allocator fr{"shoal::Heap", [&](uint64_t n) { return fresh.allocate(n); },
               [&](uint64_t r) { fresh.free(r); }};
  uint64_t live = 0, blocks = 0;
  churn(fr, steps, &live, &blocks);
  const shoal::HeapReport rep = fresh.check();
  const uint64_t bound = 2 * live + shoal::Heap::kBlockOverhead * 2 * blocks;
  std::printf("\n| after 10^5 random allocations and frees, 8 B-1 MiB log-uniform | bytes |\n");
  std::printf("| --- | --- |\n");
  std::printf("| live blocks | %llu |\n", static_cast<unsigned long long>(blocks));
  std::printf("| live bytes (asked for) | %llu |\n", static_cast<unsigned long long>(live));
  std::printf("| used blocks' bytes (headers, rounding) | %llu |\n",
              static_cast<unsigned long long>(rep.used_bytes));
  std::printf("| free bytes inside the heap | %llu in %llu blocks |\n",
              static_cast<unsigned long long>(rep.free_bytes),
              static_cast<unsigned long long>(rep.free_blocks));
  std::printf("| memory the heap holds (extents) | %llu in %llu extents |\n",
              static_cast<unsigned long long>(rep.reserved_bytes),
              static_cast<unsigned long long>(rep.extents));
  std::printf("| held / live | %.2f |\n",
              static_cast<double>(rep.reserved_bytes) / static_cast<double>(live));
  std::printf("| target: held <= 2 x live + 32 B x blocks = %llu | %s |\n",
              static_cast<unsigned long long>(bound),
              rep.reserved_bytes <= bound ? "met" : "MISSED");
  std::printf("| glibc malloc on the same sequence (arena + mmap): held / live | %.2f |\n",
              glibc_ratio);
  return rep.reserved_bytes <= bound ? 0 : 1;
}
