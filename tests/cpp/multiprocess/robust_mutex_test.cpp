// RobustMutex across forked processes on MAP_SHARED memory: a holder SIGKILLed (left a zombie,
// or reaped) is taken over exactly once (kOwnerDied), and the lock keeps a counter exact. No
// duration is asserted: every wait polls with a generous deadline.
#include "sync/robust_mutex.hpp"

#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#include "shoal/segment.hpp"
#include "test_support.hpp"

namespace shoal::sync {
namespace {

using layout::RobustMutexWord;
using platform::Deadline;
using test::ChildProcess;

// What the processes of one test share: one page of MAP_SHARED anonymous memory, the same
// physical page in the parent and every forked child.
struct Shared {
  RobustMutexWord word;
  std::atomic<int> inside;      // processes between lock and unlock right now (must be <= 1)
  std::atomic<int> overlaps;    // times one found another inside
  std::atomic<int> waiting;     // children that announced they are about to lock
  std::atomic<int> go;          // set once every child is forked, so that they contend
  uint64_t counter;             // plain memory, guarded by word only
};

class SharedPage {
 public:
  SharedPage() {
    p_ = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p_ == MAP_FAILED) std::abort();
    s_ = new (p_) Shared{};  // zero-filled anyway: a zero word is a free mutex
  }
  ~SharedPage() { ::munmap(p_, 4096); }
  Shared& operator*() { return *s_; }
  Shared* operator->() { return s_; }

 private:
  void* p_;
  Shared* s_;
};

Deadline generous() { return Deadline::after(60.0).value(); }

// A child that takes the lock and then sleeps holding it until it is killed.
int hold_forever(Shared& s) {
  RobustMutex m(&s.word);
  auto r = m.lock(generous());
  if (!r.has_value()) return 2;
  for (;;) ::pause();
}

// Critical section shared by the waiters: proves mutual exclusion while it lasts.
void critical(Shared& s) {
  if (s.inside.fetch_add(1) != 0) s.overlaps.fetch_add(1);
  ++s.counter;
  s.inside.fetch_sub(1);
}

void expect_owner_died_then_normal(Shared& s) {
  RobustMutex m(&s.word);
  auto r = m.lock(generous());
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), Locked::kOwnerDied);
  EXPECT_TRUE(m.held_by_this_process());
  m.unlock();
  EXPECT_EQ(s.word.state(), 0u);
  // The lock is an ordinary lock again.
  r = m.lock(generous());
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), Locked::kOk);
  m.unlock();
  r = m.try_lock();
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), Locked::kOk);
  m.unlock();
}

TEST(RobustMutexProcesses, HolderKilledAndLeftAZombie) {
  SharedPage s;
  ChildProcess holder([&] { return hold_forever(*s); });
  RobustMutex m(&s->word);
  ASSERT_TRUE(test::wait_until(
      [&] { return m.holder_pid() == static_cast<uint32_t>(holder.pid()); }));
  // Held by a live process: a try fails, naming it.
  auto r = m.try_lock();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kLockTimeout);
  holder.kill(SIGKILL);  // not reaped until holder.wait() below: a zombie meanwhile
  expect_owner_died_then_normal(*s);
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
}

TEST(RobustMutexProcesses, HolderKilledAndReaped) {
  SharedPage s;
  ChildProcess holder([&] { return hold_forever(*s); });
  RobustMutex m(&s->word);
  ASSERT_TRUE(test::wait_until(
      [&] { return m.holder_pid() == static_cast<uint32_t>(holder.pid()); }));
  holder.kill(SIGKILL);
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
  expect_owner_died_then_normal(*s);
}

TEST(RobustMutexProcesses, HolderKilledWhileTheParentWaits) {
  SharedPage s;
  ChildProcess holder([&] { return hold_forever(*s); });
  RobustMutex m(&s->word);
  ASSERT_TRUE(test::wait_until(
      [&] { return m.holder_pid() == static_cast<uint32_t>(holder.pid()); }));
  // A child kills the holder once the parent is waiting (the waiters bit says so).
  ChildProcess killer([&] {
    if (!test::wait_until(
            [&] { return (s->word.state() & layout::kRobustWaiters) != 0; })) {
      return 2;
    }
    return ::kill(holder.pid(), SIGKILL) == 0 ? 0 : 3;
  });
  expect_owner_died_then_normal(*s);
  EXPECT_EQ(killer.wait(), 0);
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
}

TEST(RobustMutexProcesses, ChildrenKeepACounterExact) {
  constexpr int kChildren = 4, kIters = 10000;
  SharedPage s;
  std::vector<std::unique_ptr<ChildProcess>> kids;
  for (int c = 0; c < kChildren; ++c) {
    kids.push_back(std::make_unique<ChildProcess>([&] {
      RobustMutex m(&s->word);
      if (!test::wait_until([&] { return s->go.load() != 0; })) return 4;
      for (int i = 0; i < kIters; ++i) {
        auto r = m.lock(generous());
        if (!r.has_value()) return 2;
        if (r.value() != Locked::kOk) return 3;  // nobody died
        critical(*s);
        // Now and then give the CPU away while holding the lock, so that the others reach
        // the contended path (waiters bit, futex sleep, wake on unlock), not just the CAS.
        if (i % 64 == 0) ::sched_yield();
        m.unlock();
      }
      return 0;
    }));
  }
  s->go.store(1);
  for (auto& k : kids) EXPECT_EQ(k->wait(), 0);
  EXPECT_EQ(s->counter, uint64_t{kChildren} * kIters);
  EXPECT_EQ(s->overlaps.load(), 0);
  EXPECT_EQ(s->word.state(), 0u);
}

TEST(RobustMutexProcesses, ExactlyOneWaiterSeesTheHoldersDeath) {
  constexpr int kWaiters = 3;
  constexpr int kExitOk = 0, kExitOwnerDied = 10;
  SharedPage s;
  ChildProcess holder([&] { return hold_forever(*s); });
  RobustMutex m(&s->word);
  ASSERT_TRUE(test::wait_until(
      [&] { return m.holder_pid() == static_cast<uint32_t>(holder.pid()); }));
  std::vector<std::unique_ptr<ChildProcess>> waiters;
  for (int c = 0; c < kWaiters; ++c) {
    waiters.push_back(std::make_unique<ChildProcess>([&] {
      RobustMutex mine(&s->word);
      s->waiting.fetch_add(1);
      auto r = mine.lock(generous());
      if (!r.has_value()) return 2;
      critical(*s);
      mine.unlock();
      return r.value() == Locked::kOwnerDied ? kExitOwnerDied : kExitOk;
    }));
  }
  // Kill the holder once every waiter is on its way into lock() and one has set the waiters
  // bit. Exactly one kOwnerDied holds even if a waiter is late: after the first takeover the
  // word never names the dead pid again.
  ASSERT_TRUE(test::wait_until([&] {
    return s->waiting.load() == kWaiters &&
           (s->word.state() & layout::kRobustWaiters) != 0;
  }));
  holder.kill(SIGKILL);
  int died = 0, ok = 0;
  for (auto& w : waiters) {
    int rc = w->wait();
    if (rc == kExitOwnerDied) ++died;
    if (rc == kExitOk) ++ok;
  }
  EXPECT_EQ(died, 1);
  EXPECT_EQ(ok, kWaiters - 1);
  EXPECT_EQ(s->counter, uint64_t{kWaiters});
  EXPECT_EQ(s->overlaps.load(), 0);
  EXPECT_EQ(s->word.state(), 0u);
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
}

// A fresh process (re-executed, as spawn) that maps the segment at an address of its own,
// takes the mutex at the start of its data and sleeps holding it until killed.
SHOAL_CHILD_CASE(attach_lock_and_hold) {
  Segment s = Segment::attach(arg);
  RobustMutex m(reinterpret_cast<RobustMutexWord*>(s.data()));
  auto r = m.lock(generous());
  if (!r.has_value()) return 2;
  for (;;) ::pause();
}

TEST(RobustMutexProcesses, InASegmentMappedByAnUnrelatedProcess) {
  test::ScopedRuntimeDir rd;
  Segment seg = Segment::create(4096);  // zero-filled: a free mutex at data()
  auto* word = reinterpret_cast<RobustMutexWord*>(seg.data());
  RobustMutex m(word);
  ChildProcess holder("attach_lock_and_hold", seg.handle());
  ASSERT_TRUE(test::wait_until(
      [&] { return m.holder_pid() == static_cast<uint32_t>(holder.pid()); }));
  ChildProcess killer([&] {  // kills the holder once the parent waits in its futex
    if (!test::wait_until([&] { return (word->state() & layout::kRobustWaiters) != 0; })) {
      return 2;
    }
    return ::kill(holder.pid(), SIGKILL) == 0 ? 0 : 3;
  });
  auto r = m.lock(generous());
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), Locked::kOwnerDied);
  m.unlock();
  EXPECT_EQ(word->state(), 0u);
  EXPECT_EQ(killer.wait(), 0);
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
}

}  // namespace
}  // namespace shoal::sync
