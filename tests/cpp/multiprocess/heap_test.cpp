// shoal::Heap across real processes: growth seen by readers that map extents on demand,
// allocation from several processes at once, SIGKILL of a lock holder in the middle of a
// change, pending blocks of a killed process reclaimed, and nothing left once the last
// process that holds a heap is killed.
#include "shoal/heap.hpp"
#include "shoal/session.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "layout/heap_layout.hpp"
#include "sync/robust_mutex.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

using test::ChildProcess;
using test::HandlePipe;
using test::ScopedRuntimeDir;

std::string refs_text(const std::vector<HeapRef>& refs) {
  std::ostringstream o;
  for (HeapRef r : refs) o << r << ' ';
  return o.str();
}

std::vector<HeapRef> parse_refs(const std::string& s) {
  std::istringstream in(s);
  std::vector<HeapRef> out;
  for (HeapRef r; in >> r;) out.push_back(r);
  return out;
}

// Fills block i with a pattern that names it, so overlap or loss shows.
void fill(Heap& h, HeapRef r, uint64_t n, uint8_t tag) { std::memset(h.at(r, n), tag, n); }
bool holds(Heap& h, HeapRef r, uint64_t n, uint8_t tag) {
  const std::byte* p = h.at(r, n);
  for (uint64_t i = 0; i < n; i += 61) {
    if (std::to_integer<uint8_t>(p[i]) != tag) return false;
  }
  return std::to_integer<uint8_t>(p[n - 1]) == tag;
}

TEST(HeapProcesses, AChildGrowsTheHeapAndTheParentReadsTheNewExtentsOnDemand) {
  ScopedRuntimeDir dir;
  Heap h = Heap::create(Heap::Options{64 * 1024});
  const HeapRef mine = h.allocate(1000);
  fill(h, mine, 1000, 0x11);
  const std::string handle = h.handle();
  HandlePipe pipe;
  ChildProcess child([&] {
    after_fork_child();  // a forked C++ child adopts what it inherited (shoal/session.hpp)
    Heap c = Heap::attach(handle);
    if (!holds(c, mine, 1000, 0x11)) return 1;
    std::vector<HeapRef> refs;
    for (int i = 0; i < 40; ++i) {  // 40 x 100 KiB: several extents beyond the root
      const HeapRef r = c.allocate(100 * 1024);
      fill(c, r, 100 * 1024, static_cast<uint8_t>(i + 1));
      refs.push_back(r);
    }
    pipe.send(refs_text(refs));
    return c.extent_count() > 1 ? 0 : 2;
  });
  const std::vector<HeapRef> refs = parse_refs(pipe.receive());
  ASSERT_EQ(child.wait(), 0);
  ASSERT_EQ(refs.size(), 40u);
  EXPECT_GT(h.extent_count(), 1u);
  for (size_t i = 0; i < refs.size(); ++i) {
    EXPECT_TRUE(holds(h, refs[i], 100 * 1024, static_cast<uint8_t>(i + 1))) << i;
  }
  const HeapReport rep = h.check();
  EXPECT_EQ(rep.used_blocks, 41u);
  for (HeapRef r : refs) h.free(r);
  EXPECT_EQ(h.check().used_blocks, 1u);
}

TEST(HeapProcesses, SeveralProcessesAllocateAndFreeAtOnceWithoutLosingABlock) {
  ScopedRuntimeDir dir;
  Heap h = Heap::create();
  const std::string handle = h.handle(false);
  auto work = [handle](unsigned seed) {
    after_fork_child();  // a forked C++ child adopts what it inherited (shoal/session.hpp)
    Heap c = Heap::attach(handle);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> logsize(3.0, 16.0);
    std::map<HeapRef, std::pair<uint64_t, uint8_t>> live;
    for (int step = 0; step < 3000; ++step) {
      if (live.size() < 20 || rng() % 2 == 0) {
        const uint64_t n = static_cast<uint64_t>(std::exp2(logsize(rng)));
        const HeapRef r = c.allocate(n);
        const auto tag = static_cast<uint8_t>(rng() | 1);
        fill(c, r, n, tag);
        live[r] = {n, tag};
      } else {
        auto it = live.begin();
        std::advance(it, static_cast<long>(rng() % live.size()));
        if (!holds(c, it->first, it->second.first, it->second.second)) return 3;
        c.free(it->first);
        live.erase(it);
      }
    }
    for (auto& [r, v] : live) {
      if (!holds(c, r, v.first, v.second)) return 4;
      c.free(r);
    }
    return 0;
  };
  ChildProcess a([&] { return work(1); });
  ChildProcess b([&] { return work(2); });
  EXPECT_EQ(work(3), 0);
  EXPECT_EQ(a.wait(), 0);
  EXPECT_EQ(b.wait(), 0);
  const HeapReport rep = h.check();
  EXPECT_EQ(rep.used_blocks, 0u);
  EXPECT_EQ(rep.free_bytes, rep.tiled_bytes) << rep.free_blocks << " free blocks in "
                                             << rep.extents << " extents";
}

// A process SIGKILLed while it holds the heap's lock in the middle of a change: the next
// process to take the lock is told, rebuilds the allocator's state, and the heap checks clean.
TEST(HeapProcesses, ALockHolderKilledMidChangeIsRecoveredFrom) {
  ScopedRuntimeDir dir;
  Heap h = Heap::create();
  std::vector<HeapRef> refs;
  for (int i = 0; i < 50; ++i) refs.push_back(h.allocate(300));
  for (int i = 0; i < 50; i += 2) h.free(refs[i]);
  const std::string handle = h.handle(false);
  HandlePipe pipe;
  ChildProcess child([&] {
    after_fork_child();  // a forked C++ child adopts what it inherited (shoal/session.hpp)
    Heap c = Heap::attach(handle);
    auto* hh = reinterpret_cast<layout::HeapHeader*>(c.root_segment().data());
    sync::RobustMutex m(&hh->lock);
    if (!m.lock().has_value()) return 1;
    // Half of a free: the block marked free, not in any bin yet; a bin head half rewritten.
    auto* hdr = reinterpret_cast<layout::BlockHeader*>(c.at(refs[1], 0) - 16);
    hdr->size_flags.store(hdr->size_flags.load() & ~layout::kBlockFlagMask);
    hh->bins[25] = 0xdeadbeef;
    pipe.send("locked");
    pause();
    return 0;
  });
  ASSERT_EQ(pipe.receive(), "locked");
  child.kill(SIGKILL);
  const HeapRef fresh = h.allocate(300);  // takes the lock over: recovery runs
  fill(h, fresh, 300, 0x77);
  const HeapStats st = h.stats();
  EXPECT_EQ(st.recoveries, 1u);
  const HeapReport rep = h.check();
  EXPECT_EQ(rep.used_blocks, 25u - 1u + 1u);  // refs[1] was freed by the dead process
  EXPECT_TRUE(holds(h, fresh, 300, 0x77));
}

TEST(HeapProcesses, KillsAtRandomMomentsNeverLeaveACorruptHeap) {
  ScopedRuntimeDir dir;
  Heap h = Heap::create(Heap::Options{64 * 1024});
  const std::string handle = h.handle(false);
  for (int round = 0; round < 6; ++round) {
    HandlePipe pipe;
    ChildProcess child([&]() -> int {
      after_fork_child();  // a forked C++ child adopts what it inherited (shoal/session.hpp)
    Heap c = Heap::attach(handle);
      std::mt19937_64 rng(static_cast<unsigned>(round));
      std::vector<HeapRef> live;
      pipe.send("go");
      for (;;) {  // until killed
        if (live.size() < 64 || rng() % 2 == 0) {
          const uint64_t n = 8 + rng() % 20000;
          live.push_back(rng() % 3 == 0 ? c.allocate_pending(n) : c.allocate(n));
        } else {
          const size_t i = rng() % live.size();
          c.free(live[i]);
          live[i] = live.back();
          live.pop_back();
        }
      }
    });
    ASSERT_EQ(pipe.receive(), "go");
    const uint64_t before = h.stats().allocations;
    const uint64_t enough = before + 200 + static_cast<uint64_t>(round) * 300;
    ASSERT_TRUE(test::wait_until([&] { return h.stats().allocations > enough; }));
    child.kill(SIGKILL);
    child.wait();
    const HeapReport rep = h.check();  // recovers if the child died holding the lock
    EXPECT_EQ(rep.pending_blocks, 0u) << round;  // the dead child's pending blocks are gone
  }
  // Whatever the dead children left used is reachable by nobody: a leak the heap reports,
  // bounded by what they had live; the heap itself stays sound and usable.
  const HeapRef r = h.allocate(1 << 20);
  fill(h, r, 1 << 20, 0x42);
  EXPECT_TRUE(holds(h, r, 1 << 20, 0x42));
  h.check();
}

TEST(HeapProcesses, APendingBlockOfAKilledProcessIsReclaimed) {
  ScopedRuntimeDir dir;
  Heap h = Heap::create();
  const std::string handle = h.handle(false);
  HandlePipe pipe;
  ChildProcess child([&] {
    after_fork_child();  // a forked C++ child adopts what it inherited (shoal/session.hpp)
    Heap c = Heap::attach(handle);
    const HeapRef kept = c.allocate_pending(5000);
    c.commit(kept);
    const HeapRef lost = c.allocate_pending(7000);
    pipe.send(refs_text({kept, lost}));
    pause();
    return 0;
  });
  const std::vector<HeapRef> refs = parse_refs(pipe.receive());
  ASSERT_EQ(refs.size(), 2u);
  EXPECT_EQ(h.check().pending_blocks, 1u);  // its owner lives: kept
  child.kill(SIGKILL);
  child.wait();
  const HeapReport rep = h.check();
  EXPECT_EQ(rep.pending_blocks, 0u);
  EXPECT_EQ(rep.used_blocks, 1u);
  EXPECT_EQ(h.stats().reclaimed, 1u);
  EXPECT_GE(h.usable_size(refs[0]), 5000u);
  EXPECT_THROW(h.free(refs[1]), InvalidArgumentError);  // already free
}

// The root references its extents: when the only process that holds the heap is SIGKILLed,
// the broker frees the root and, with it, every extent.
TEST(HeapProcesses, CommittedBlockIsTrueOnlyAtTheStartOfAUsedCommittedBlock) {
  ScopedRuntimeDir dir;
  Heap h = Heap::create();
  const HeapRef a = h.allocate(100);
  const HeapRef p = h.allocate_pending(200);
  const HeapRef c = h.allocate(300);
  EXPECT_TRUE(h.committed_block(a));
  EXPECT_FALSE(h.committed_block(p));  // pending
  EXPECT_FALSE(h.committed_block(a + 16));  // inside a's payload
  EXPECT_FALSE(h.committed_block(0));
  h.commit(p);
  EXPECT_TRUE(h.committed_block(p));
  h.free(a);
  EXPECT_FALSE(h.committed_block(a));  // free
  EXPECT_TRUE(h.committed_block(c));
  h.free(p);
  h.free(c);
  EXPECT_FALSE(h.committed_block(c));  // merged into one free block
}

TEST(HeapProcesses, NothingIsLeftWhenTheLastHolderIsKilled) {
  ScopedRuntimeDir dir;
  HandlePipe pipe;
  ChildProcess child([&] {
    after_fork_child();
    Heap c = Heap::create(Heap::Options{64 * 1024});
    for (int i = 0; i < 8; ++i) c.allocate(3 << 20);
    pipe.send(test::heap_object_handles(c));
    pause();
    return 0;
  });
  test::expect_freed_after_kill(child, pipe.receive());
}

}  // namespace
}  // namespace shoal
