// The futex wrapper: Deadline arithmetic at its edges, every way futex_wait returns, wakes
// across threads, mappings and processes, and errors that must not crash. No test asserts a
// duration: "woken" is proven by seeing the waiter asleep in futex(2) on the word first
// (/proc/<tid>/syscall), and "timed out" by the deadline having passed on return.
#include "platform/futex.hpp"

#include <gtest/gtest.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cfloat>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "platform/platform.hpp"
#include "test_support.hpp"

namespace shoal::platform {
namespace {

using Word = std::atomic<uint32_t>;

// True when thread `tid` of process `pid` is blocked in futex(2) on `word`: the first fields of
// /proc/<pid>/task/<tid>/syscall are the syscall number and its first argument (the address).
bool asleep_on(pid_t pid, pid_t tid, const void* word) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/syscall");
  long nr = -1;
  std::string addr;
  if (!(f >> nr >> addr)) return false;  // "running", or not readable
  return nr == SYS_futex &&
         std::strtoull(addr.c_str(), nullptr, 16) == reinterpret_cast<uintptr_t>(word);
}

bool proc_syscall_readable() {
  std::ifstream f("/proc/self/syscall");
  std::string first;
  return static_cast<bool>(f >> first);
}

#define REQUIRE_PROC_SYSCALL() \
  if (!proc_syscall_readable()) GTEST_SKIP() << "/proc/<pid>/syscall is not readable here"

// Ends the wait of a waiter the wrapper failed to wake, so that a broken wrapper fails the test
// instead of hanging it: a raw shared FUTEX_WAKE, independent of the code under test.
void rescue(const void* word) {
  ::syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}
bool woke(const Result<int>& k, int n) { return k.has_value() && k.value() == n; }

pid_t this_tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

Deadline after(double s) { return Deadline::after(s).value(); }

// A thread that makes one futex_wait and records how it returned. Leaving a test by any path
// joins it; one the wrapper failed to wake is rescued first, so a broken wrapper fails the test
// instead of hanging it or terminating it with a joinable thread.
class Waiter {
 public:
  Waiter(const Word* w, uint32_t expected, Deadline d)
      : word_(w), t_([this, w, expected, d] {
          tid_ = this_tid();
          result_ = futex_wait(w, expected, d);
          done_ = true;
        }) {}
  ~Waiter() { (void)finish(); }
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  /// Asleep in futex(2) on the word right now (not merely started).
  bool asleep() const { return tid_ != 0 && asleep_on(::getpid(), tid_, word_); }
  std::thread& thread() { return t_; }
  /// Joins the thread and returns the outcome of its wait. The rescue comes only after a
  /// generous grace, so it never races the wake or signal under test.
  const Result<FutexWait>& finish() {
    (void)test::wait_until([&] { return done_.load(); });
    while (!done_) {
      rescue(word_);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (t_.joinable()) t_.join();
    return result_;
  }

 private:
  const Word* word_;
  std::atomic<pid_t> tid_{0};
  std::atomic<bool> done_{false};
  Result<FutexWait> result_ = Status(Errc::kSystem, "the waiter never ran");
  std::thread t_;  // last: started once every other member is ready
};

// A page of MAP_SHARED anonymous memory: survives fork as the same memory in both processes.
struct SharedPage {
  SharedPage() {
    p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
  }
  ~SharedPage() { ::munmap(p, 4096); }
  Word* word(size_t i = 0) { return static_cast<Word*>(p) + i; }
  void* p;
};

// ---- Deadline ------------------------------------------------------------------------------

TEST(Deadline, NeverNeverPasses) {
  Deadline d = Deadline::never();
  EXPECT_TRUE(d.is_never());
  EXPECT_FALSE(d.passed());
  EXPECT_EQ(d.remaining_ns(), Deadline::kNeverNs);
  EXPECT_TRUE(Deadline{}.is_never());  // the default is no deadline
}

TEST(Deadline, InfiniteAndHugeTimeoutsAreNever) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(after(inf).is_never());
  EXPECT_TRUE(after(1e300).is_never());
  EXPECT_TRUE(after(DBL_MAX).is_never());
  EXPECT_TRUE(after(1.8e10).is_never());
  EXPECT_TRUE(after(1.9e10).is_never());  // past 2^64 ns: must saturate, not wrap
  EXPECT_TRUE(Deadline::after_ns(UINT64_MAX).is_never());
  EXPECT_TRUE(Deadline::after_ns(UINT64_MAX - 1).is_never());
}

TEST(Deadline, LongButFiniteTimeoutsAreFinite) {
  Deadline d = after(1e9);  // 31 years: a real deadline, not never()
  EXPECT_FALSE(d.is_never());
  EXPECT_FALSE(d.passed());
  EXPECT_LE(d.remaining_ns(), 1000000000ULL * 1000000000ULL);
}

TEST(Deadline, ZeroNegativeAndTinyTimeoutsHaveAlreadyPassed) {
  const double inf = std::numeric_limits<double>::infinity();
  for (double s : {0.0, -0.0, -1.0, -1e300, -inf, 1e-12, DBL_MIN}) {
    Deadline d = after(s);
    EXPECT_FALSE(d.is_never()) << s;
    EXPECT_TRUE(d.passed()) << s;
    EXPECT_EQ(d.remaining_ns(), 0u) << s;
  }
  EXPECT_TRUE(Deadline::after_ns(0).passed());
  EXPECT_TRUE(Deadline{0}.passed());
}

TEST(Deadline, NanIsRejected) {
  auto d = Deadline::after(std::nan(""));
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.status().code(), Errc::kInvalidArgument);
  EXPECT_NE(d.status().message().find("NaN"), std::string::npos);
}

TEST(Deadline, RemainingNeverExceedsTheTimeout) {
  Deadline d = after(60);
  EXPECT_FALSE(d.is_never());
  EXPECT_FALSE(d.passed());
  EXPECT_GT(d.remaining_ns(), 0u);
  EXPECT_LE(d.remaining_ns(), 60000000000ULL);
}

// ---- futex_wait ----------------------------------------------------------------------------

TEST(FutexWait, ReturnsValueChangedWhenTheWordDiffers) {
  Word w{1};
  auto r = futex_wait(&w, 0, Deadline::never());  // would block forever if it slept
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), FutexWait::kValueChanged);
  // The word is compared before the deadline: a changed word wins over a passed deadline.
  r = futex_wait(&w, 0, Deadline{0});
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r.value(), FutexWait::kValueChanged);
}

TEST(FutexWait, PassedDeadlineTimesOut) {
  Word w{0};
  for (Deadline d : {Deadline{0}, after(-1), after(0)}) {
    auto r = futex_wait(&w, 0, d);
    ASSERT_TRUE(r.has_value()) << r.status().message();
    EXPECT_EQ(r.value(), FutexWait::kTimedOut);
  }
}

TEST(FutexWait, ShortDeadlineTimesOutOnlyOnceItPassed) {
  Word w{7};
  Deadline d = after(0.02);
  auto r = futex_wait(&w, 7, d);
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), FutexWait::kTimedOut);
  EXPECT_TRUE(d.passed());  // the kernel's monotonic clock is ours: it never returns early
}

TEST(FutexWait, MisalignedWordIsAnErrorNotACrash) {
  alignas(8) unsigned char buf[16] = {};
  auto* w = reinterpret_cast<const Word*>(buf + 1);  // never dereferenced
  auto r = futex_wait(w, 0, Deadline{0});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kInvalidArgument);
  EXPECT_NE(r.status().message().find("futex_wait"), std::string::npos);
  auto k = futex_wake(w, 1);
  ASSERT_FALSE(k.has_value());
  EXPECT_EQ(k.status().code(), Errc::kInvalidArgument);
}

TEST(FutexWait, InaccessibleWordIsASystemErrorNotACrash) {
  // A page no access can touch, kept reserved for the whole test: an unmapped address could be
  // handed to another thread's mmap (ASan's allocator, a leftover thread) between munmap and
  // the call, and the word would then be valid memory. The kernel faults on both alike.
  void* p = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  struct Unmap {
    void* p;
    ~Unmap() { ::munmap(p, 4096); }
  } unmap{p};
  auto* w = static_cast<const Word*>(p);
  auto r = futex_wait(w, 0, Deadline::never());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kSystem);
  EXPECT_NE(r.status().message().find("futex_wait"), std::string::npos) << r.status().message();
  auto k = futex_wake(w, 1);
  ASSERT_FALSE(k.has_value());
  EXPECT_EQ(k.status().code(), Errc::kSystem);
  EXPECT_NE(k.status().message().find("futex_wake"), std::string::npos);
}

// ---- futex_wake ----------------------------------------------------------------------------

TEST(FutexWake, NobodyWaitingWakesNobody) {
  Word w{0};
  auto k = futex_wake(&w, 1);
  ASSERT_TRUE(k.has_value()) << k.status().message();
  EXPECT_EQ(k.value(), 0);
  k = futex_wake_all(&w);
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k.value(), 0);
}

TEST(FutexWake, CountBelowOneIsRejected) {
  Word w{0};
  for (int c : {0, -1, std::numeric_limits<int>::min()}) {
    auto k = futex_wake(&w, c);
    ASSERT_FALSE(k.has_value()) << c;
    EXPECT_EQ(k.status().code(), Errc::kInvalidArgument);
  }
}

TEST(FutexWake, WakesAWaiterInAnotherThread) {
  REQUIRE_PROC_SYSCALL();
  Word w{0};
  Waiter waiter(&w, 0, Deadline::never());
  ASSERT_TRUE(test::wait_until([&] { return waiter.asleep(); }));
  // The word is unchanged: only the wake can end this wait.
  auto k = futex_wake(&w, 1);
  const auto& got = waiter.finish();
  ASSERT_TRUE(k.has_value()) << k.status().message();
  EXPECT_EQ(k.value(), 1);
  ASSERT_TRUE(got.has_value()) << got.status().message();
  EXPECT_EQ(got.value(), FutexWait::kWoken);
}

TEST(FutexWake, WakeCountBoundsWakeAllWakesTheRest) {
  REQUIRE_PROC_SYSCALL();
  constexpr int kWaiters = 3;
  Word w{0};
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int i = 0; i < kWaiters; ++i) waiters.push_back(std::make_unique<Waiter>(&w, 0, after(120)));
  auto asleep = [&] {
    int n = 0;
    for (auto& x : waiters) n += x->asleep();
    return n;
  };
  ASSERT_TRUE(test::wait_until([&] { return asleep() == kWaiters; }));
  auto one = futex_wake(&w, 1);
  ASSERT_TRUE(one.has_value()) << one.status().message();
  ASSERT_EQ(one.value(), 1);
  ASSERT_TRUE(test::wait_until([&] { return asleep() == kWaiters - 1; }));
  auto rest = futex_wake_all(&w);
  ASSERT_TRUE(rest.has_value()) << rest.status().message();
  EXPECT_EQ(rest.value(), kWaiters - 1);
  for (auto& x : waiters) {
    const auto& g = x->finish();
    ASSERT_TRUE(g.has_value()) << g.status().message();
    EXPECT_EQ(g.value(), FutexWait::kWoken);
  }
}

// Two mappings of one memfd at different addresses are one futex: the kernel keys a shared
// futex by (file, offset), not by virtual address. This is what lets processes that map a
// segment at different addresses wait and wake on the same lock word.
TEST(FutexWake, TwoMappingsOfOneMemfdAreOneWord) {
  REQUIRE_PROC_SYSCALL();
  auto fd = create_memfd("shoal-futex-test", 4096);
  ASSERT_TRUE(fd.has_value()) << fd.status().message();
  auto a = map_fd(fd.value().get(), 4096, true, false);
  auto b = map_fd(fd.value().get(), 4096, true, false);
  ASSERT_TRUE(a.has_value() && b.has_value());
  UniqueMapping ma(a.value(), 4096), mb(b.value(), 4096);
  ASSERT_NE(a.value(), b.value());
  Word* wa = static_cast<Word*>(a.value()) + 5;
  Word* wb = static_cast<Word*>(b.value()) + 5;
  Waiter waiter(wa, 0, Deadline::never());
  ASSERT_TRUE(test::wait_until([&] { return waiter.asleep(); }));
  auto k = futex_wake(wb, 1);
  const auto& got = waiter.finish();
  ASSERT_TRUE(k.has_value()) << k.status().message();
  EXPECT_EQ(k.value(), 1);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got.value(), FutexWait::kWoken);
}

// A child's exit code for each outcome of its wait.
int exit_code(const Result<FutexWait>& r) {
  if (!r.has_value()) return 10;
  return 20 + static_cast<int>(r.value());
}

TEST(FutexWake, WakesAWaiterInAnotherProcess) {
  REQUIRE_PROC_SYSCALL();
  SharedPage page;
  Word* w = page.word(3);
  w->store(0);
  test::ChildProcess child([&] { return exit_code(futex_wait(w, 0, after(120))); });
  ASSERT_TRUE(test::wait_until([&] { return asleep_on(child.pid(), child.pid(), w); }));
  auto k = futex_wake(w, 1);
  if (!woke(k, 1)) rescue(w);
  ASSERT_TRUE(k.has_value()) << k.status().message();
  EXPECT_EQ(k.value(), 1);
  EXPECT_EQ(child.wait(), 20 + static_cast<int>(FutexWait::kWoken));
}

// The child maps the memfd itself (its own mapping, at its own address) and the parent changes
// the word before waking, as a lock's release does.
TEST(FutexWake, WakesAWaiterInAnotherProcessThroughItsOwnMapping) {
  REQUIRE_PROC_SYSCALL();
  auto fd = create_memfd("shoal-futex-test", 4096);
  ASSERT_TRUE(fd.has_value()) << fd.status().message();
  auto a = map_fd(fd.value().get(), 4096, true, false);
  ASSERT_TRUE(a.has_value());
  UniqueMapping ma(a.value(), 4096);
  Word* w = static_cast<Word*>(a.value());
  SharedPage page;  // where the child's word is mapped, for asleep_on
  auto* child_addr = static_cast<std::atomic<uintptr_t>*>(page.p);
  child_addr->store(0);
  int raw_fd = fd.value().get();
  test::ChildProcess child([&] {
    auto m = map_fd(raw_fd, 4096, false, false);  // read-only is enough to wait
    if (!m.has_value()) return 11;
    const Word* cw = static_cast<const Word*>(m.value());
    child_addr->store(reinterpret_cast<uintptr_t>(cw));
    for (;;) {  // a lock-style loop: wait until the word says "released"
      uint32_t v = cw->load(std::memory_order_acquire);
      if (v == 1) return 0;
      auto r = futex_wait(cw, v, after(120));
      if (!r.has_value() || r.value() == FutexWait::kTimedOut) return exit_code(r);
    }
  });
  ASSERT_TRUE(test::wait_until([&] {
    uintptr_t at = child_addr->load();
    return at != 0 && asleep_on(child.pid(), child.pid(), reinterpret_cast<void*>(at));
  }));
  w->store(1, std::memory_order_release);
  auto k = futex_wake_all(w);
  if (!woke(k, 1)) rescue(w);
  ASSERT_TRUE(k.has_value()) << k.status().message();
  EXPECT_EQ(k.value(), 1);
  EXPECT_EQ(child.wait(), 0);
}

// ---- signals -------------------------------------------------------------------------------

std::atomic<int> g_handled{0};
void count_signal(int) { g_handled.fetch_add(1, std::memory_order_relaxed); }

// SIGUSR1 handled without SA_RESTART (as CPython installs its handlers) for the test's life.
class ScopedHandler {
 public:
  ScopedHandler() {
    struct sigaction sa = {};
    sa.sa_handler = count_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ::sigaction(SIGUSR1, &sa, &old_);
  }
  ~ScopedHandler() { ::sigaction(SIGUSR1, &old_, nullptr); }

 private:
  struct sigaction old_ = {};
};

void expect_interrupted(Deadline d) {
  ScopedHandler handler;
  Word w{0};
  int before = g_handled.load();
  Waiter waiter(&w, 0, d);
  ASSERT_TRUE(test::wait_until([&] { return waiter.asleep(); }));
  ASSERT_EQ(::pthread_kill(waiter.thread().native_handle(), SIGUSR1), 0);
  const auto& got = waiter.finish();
  EXPECT_GT(g_handled.load(), before);
  ASSERT_TRUE(got.has_value()) << got.status().message();
  EXPECT_EQ(got.value(), FutexWait::kInterrupted);
  // The caller retries with the same absolute deadline; a passed one now times out.
  if (!d.is_never()) {
    auto again = futex_wait(&w, 0, Deadline{0});
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again.value(), FutexWait::kTimedOut);
  }
}

TEST(FutexWait, SignalInterruptsAWaitWithoutDeadline) {
  REQUIRE_PROC_SYSCALL();
  expect_interrupted(Deadline::never());
}

TEST(FutexWait, SignalInterruptsAWaitWithDeadline) {
  REQUIRE_PROC_SYSCALL();
  expect_interrupted(after(120));
}

TEST(FutexWait, NamesEveryOutcome) {
  EXPECT_STREQ(futex_wait_name(FutexWait::kWoken), "woken");
  EXPECT_STREQ(futex_wait_name(FutexWait::kValueChanged), "value_changed");
  EXPECT_STREQ(futex_wait_name(FutexWait::kTimedOut), "timed_out");
  EXPECT_STREQ(futex_wait_name(FutexWait::kInterrupted), "interrupted");
}

}  // namespace
}  // namespace shoal::platform
