// RobustMutex in one process: states of the word, the non-recursive rule, deadlines, corrupt
// words, and platform::process_exited on which the takeover rests. No duration is asserted.
// Several processes and dead holders: tests/cpp/multiprocess/robust_mutex_test.cpp.
#include "sync/robust_mutex.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "platform/platform.hpp"
#include "test_support.hpp"

namespace shoal::sync {
namespace {

using layout::kRobustWaiters;
using layout::RobustMutexWord;
using platform::Deadline;
using test::SignalStorm;

uint32_t state_of(const RobustMutexWord& w) { return w.state(); }
uint32_t my_pid() { return static_cast<uint32_t>(::getpid()); }

TEST(RobustMutexLayout, EightBytesAndZeroIsFree) {
  static_assert(sizeof(RobustMutexWord) == 8);
  static_assert(layout::kRobustPidMask == 0x3fffffu);  // PID_MAX_LIMIT = 2^22
  RobustMutexWord w{};
  RobustMutex m(&w);
  EXPECT_FALSE(m.held_by_this_process());
  EXPECT_EQ(m.holder_pid(), 0u);
  auto r = m.try_lock();
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), Locked::kOk);
  m.unlock();
}

TEST(RobustMutex, LockUnlockNamesThisProcess) {
  RobustMutexWord w{};
  RobustMutex m(&w);
  auto r = m.lock();
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), Locked::kOk);
  EXPECT_TRUE(m.held_by_this_process());
  EXPECT_EQ(m.holder_pid(), my_pid());
  EXPECT_EQ(state_of(w), my_pid());  // uncontended: no waiters bit
  EXPECT_EQ(w.tag(), self_tag());  // the holder's start time
  m.unlock();
  EXPECT_EQ(state_of(w), 0u);
  EXPECT_FALSE(m.held_by_this_process());
  // And again: the word is reusable.
  ASSERT_TRUE(m.lock(Deadline::after(30.0).value()).has_value());
  m.unlock();
}

TEST(RobustMutex, NotRecursiveTryLockByTheHolderTimesOut) {
  RobustMutexWord w{};
  RobustMutex m(&w);
  ASSERT_TRUE(m.lock().has_value());
  auto r = m.try_lock();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kLockTimeout);
  EXPECT_NE(r.status().message().find("this process (pid " + std::to_string(my_pid())),
            std::string::npos)
      << r.status().message();
  EXPECT_TRUE(m.held_by_this_process());  // a failed try changes nothing that matters
  m.unlock();
  EXPECT_EQ(state_of(w), 0u);
}

TEST(RobustMutex, DeadlinePassesWhileHeld) {
  RobustMutexWord w{};
  RobustMutex m(&w);
  ASSERT_TRUE(m.lock().has_value());
  Deadline d = Deadline::after(0.05).value();  // long enough to sleep in at least one slice
  auto r = m.lock(d);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kLockTimeout);
  EXPECT_TRUE(d.passed());
  // The waiter set the waiters bit before sleeping; unlock clears the whole word (and wakes
  // nobody, harmlessly).
  EXPECT_EQ(state_of(w), my_pid() | kRobustWaiters);
  m.unlock();
  EXPECT_EQ(state_of(w), 0u);
}

TEST(RobustMutex, HeldByALiveProcessTimesOutNamingIt) {
  RobustMutexWord w{};
  const uint32_t parent = static_cast<uint32_t>(::getppid());  // alive: it runs this test
  ASSERT_GT(parent, 1u);
  w.store(parent);
  RobustMutex m(&w);
  EXPECT_FALSE(m.held_by_this_process());
  auto r = m.try_lock();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kLockTimeout);
  EXPECT_NE(r.status().message().find("process " + std::to_string(parent)), std::string::npos)
      << r.status().message();
  r = m.lock(Deadline::after(0.03).value());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kLockTimeout);
  EXPECT_EQ(state_of(w), parent | kRobustWaiters);
}

// A pid reused by an unrelated process: the word names a live process (our parent) with a tag
// whose start time is not that process's. The holder that wrote the tag is dead, so a waiter
// takes over and is told.
TEST(RobustMutex, AReusedPidIsNotTakenForTheDeadHolder) {
  RobustMutexWord w{};
  const uint32_t parent = static_cast<uint32_t>(::getppid());
  ASSERT_GT(parent, 1u);
  const uint64_t start = platform::process_start_time(static_cast<pid_t>(parent));
  ASSERT_NE(start, 0u) << "/proc/<ppid>/stat has no start time";
  w.store(parent, robust_tag_of(start + 1));  // another process that had this pid
  RobustMutex m(&w);
  auto r = m.lock(Deadline::after(60.0).value());
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), Locked::kOwnerDied);
  EXPECT_TRUE(m.held_by_this_process());
  EXPECT_EQ(w.tag(), self_tag());
  m.unlock();
  EXPECT_EQ(w.tag(), 0u);
  EXPECT_EQ(state_of(w), 0u);
}

// The same live process with its own start time in the tag is the holder: no takeover.
TEST(RobustMutex, ALiveHolderWithItsOwnTagIsWaitedFor) {
  RobustMutexWord w{};
  const uint32_t parent = static_cast<uint32_t>(::getppid());
  ASSERT_GT(parent, 1u);
  const uint64_t start = platform::process_start_time(static_cast<pid_t>(parent));
  ASSERT_NE(start, 0u);
  w.store(parent, robust_tag_of(start));
  RobustMutex m(&w);
  auto r = m.lock(Deadline::after(0.05).value());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kLockTimeout);
  // No tag (a holder that could not read its start time): judged by its pid alone, and it
  // lives.
  w.store(parent, 0);
  r = m.try_lock();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kLockTimeout);
}

// A process given the pid of a holder that died: the word names its own pid with another
// tag. It is not the holder (it must not re-enter, unlock it, or wait for itself): the holder
// is dead for certain, and the next lock takes it over and is told.
TEST(RobustMutex, ThisPidWithAnotherTagIsADeadPredecessorNotThisProcess) {
  ASSERT_NE(self_tag(), 0u) << "/proc/self/stat has no start time";
  RobustMutexWord w{};
  w.store(my_pid(), self_tag() + 1);
  RobustMutex m(&w);
  EXPECT_FALSE(m.held_by_this_process());
  EXPECT_EQ(m.holder_pid(), my_pid());
  auto r = m.try_lock();  // checks the holder once: no deadline to wait out
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), Locked::kOwnerDied);
  EXPECT_TRUE(m.held_by_this_process());
  EXPECT_EQ(w.tag(), self_tag());
  m.unlock();
  EXPECT_EQ(w.pair.load(), 0u);
}

// While this process holds the lock, another lock() by it waits (another thread may unlock):
// it is never judged dead, whatever the deadline.
TEST(RobustMutex, ThisProcessHoldingIsNeverTakenOver) {
  RobustMutexWord w{};
  RobustMutex m(&w);
  ASSERT_TRUE(m.lock().has_value());
  auto r = m.lock(Deadline::after(0.05).value());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kLockTimeout);
  EXPECT_NE(r.status().message().find("held by this process"), std::string::npos)
      << r.status().message();
  m.unlock();
  EXPECT_EQ(w.pair.load(), 0u);
}

// The tag is written with the pid in one CAS, so a free word with a tag is no state the
// protocol makes.
TEST(RobustMutex, AFreeWordWithATagIsCorrupt) {
  RobustMutexWord w{};
  w.store(0, 12345);
  RobustMutex m(&w);
  auto r = m.try_lock();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kCorrupt);
  EXPECT_EQ(w.tag(), 12345u);  // left as found
}

TEST(RobustMutex, StartTimeOfThisProcessIsKnownAndStable) {
  const uint64_t a = platform::process_start_time(::getpid());
  EXPECT_NE(a, 0u);
  EXPECT_EQ(a, platform::process_start_time(::getpid()));
  EXPECT_EQ(platform::process_start_time(0), 0u);
  EXPECT_EQ(self_tag(), robust_tag_of(a));
  EXPECT_NE(robust_tag_of(uint64_t{1} << 32), 0u);  // 0 means "no tag": never a process's
}

TEST(RobustMutex, LockOfADeadHoldersWordReportsOwnerDied) {
  // A child that exits at once and is reaped: its pid names nobody (until reused, which a
  // test cannot control, so the word is checked right away).
  pid_t c = ::fork();
  ASSERT_GE(c, 0);
  if (c == 0) ::_exit(0);
  int st = 0;
  ASSERT_EQ(::waitpid(c, &st, 0), c);
  RobustMutexWord w{};
  w.store(static_cast<uint32_t>(c));
  RobustMutex m(&w);
  auto r = m.try_lock();  // try_lock checks the holder once
  ASSERT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r.value(), Locked::kOwnerDied);
  EXPECT_TRUE(m.held_by_this_process());
  EXPECT_EQ(state_of(w), my_pid() | kRobustWaiters);
  m.unlock();
  EXPECT_EQ(state_of(w), 0u);
}

TEST(RobustMutex, CorruptWordsAreCorruptNotACrash) {
  const uint32_t bad[] = {kRobustWaiters,                 // waiters bit without a holder
                          1u << 22,                       // a reserved bit
                          1u << 30,                       //
                          0x7fc00000u,                    // every reserved bit
                          0xffffffffu,                    //
                          my_pid() | (1u << 25)};         // a valid holder plus a reserved bit
  for (uint32_t v : bad) {
    RobustMutexWord w{};
    w.store(v);
    RobustMutex m(&w);
    auto r = m.try_lock();
    ASSERT_FALSE(r.has_value()) << std::hex << v;
    EXPECT_EQ(r.status().code(), Errc::kCorrupt) << std::hex << v;
    r = m.lock(Deadline::after(30.0).value());
    ASSERT_FALSE(r.has_value()) << std::hex << v;
    EXPECT_EQ(r.status().code(), Errc::kCorrupt) << std::hex << v;
    EXPECT_EQ(state_of(w), v);  // left as found
  }
}

TEST(RobustMutex, RobustLockUnlocksAndThrows) {
  RobustMutexWord w{};
  RobustMutex m(&w);
  {
    RobustLock l(m);
    EXPECT_FALSE(l.owner_died());
    EXPECT_TRUE(m.held_by_this_process());
  }
  EXPECT_EQ(state_of(w), 0u);
  ASSERT_TRUE(m.lock().has_value());
  EXPECT_THROW(RobustLock(m, Deadline::after(0.0).value()), LockTimeoutError);
  EXPECT_TRUE(m.held_by_this_process());  // the failed RobustLock did not unlock
  m.unlock();
  w.store(1u << 23);
  EXPECT_THROW(RobustLock(m, Deadline::after(0.0).value()), CorruptSegmentError);
}

TEST(RobustMutex, ForkedChildDoesNotHoldItsParentsLock) {
  RobustMutexWord w{};  // copied by fork: the child sees the parent's pid in it
  RobustMutex m(&w);
  ASSERT_TRUE(m.lock().has_value());
  test::ChildProcess child([&] {
    if (m.held_by_this_process()) return 1;
    if (m.holder_pid() != static_cast<uint32_t>(::getppid())) return 2;
    auto r = m.try_lock();  // the parent is alive: not ours, not dead
    if (r.has_value() || r.status().code() != Errc::kLockTimeout) return 3;
    return 0;
  });
  EXPECT_EQ(child.wait(), 0);
  m.unlock();
}

// Signals that interrupt the futex wait are retried with the same deadline: they neither end
// the wait early nor stretch it (test::SignalStorm sends them).

TEST(RobustMutex, SignalsDuringTheWaitAreRetriedUntilTheUnlock) {
  RobustMutexWord w{};
  RobustMutex m(&w);
  ASSERT_TRUE(m.lock().has_value());
  std::atomic<bool> done{false};
  Result<Locked> got = Status(Errc::kSystem, "not run");
  std::thread waiter([&] {
    got = m.lock(Deadline::after(60.0).value());
    done = true;
  });
  {
    SignalStorm storm(waiter.native_handle());
    // Let a good number of signals hit the waiter while it waits (it cannot take the lock).
    ASSERT_TRUE(test::wait_until([&] { return storm.sent() >= 20; }));
    EXPECT_FALSE(done.load());
  }
  m.unlock();
  waiter.join();
  ASSERT_TRUE(got.has_value()) << got.status().message();
  EXPECT_EQ(got.value(), Locked::kOk);
  m.unlock();  // the waiter's thread locked it; this process holds it
}

TEST(RobustMutex, SignalsDuringTheWaitDoNotEndItBeforeTheDeadline) {
  RobustMutexWord w{};
  RobustMutex m(&w);
  ASSERT_TRUE(m.lock().has_value());
  SignalStorm storm(::pthread_self());
  Deadline d = Deadline::after(0.1).value();
  auto r = m.lock(d);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), Errc::kLockTimeout);
  EXPECT_TRUE(d.passed());
  m.unlock();
}

TEST(RobustMutexDeathTest, UnlockByANonHolder) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  RobustMutexWord w{};
  RobustMutex m(&w);
#ifdef NDEBUG
  m.unlock();  // free: nothing to release, nothing changes
  EXPECT_EQ(state_of(w), 0u);
  w.store(static_cast<uint32_t>(::getppid()));
  m.unlock();  // another process's lock is never released
  EXPECT_EQ(state_of(w), static_cast<uint32_t>(::getppid()));
#else
  EXPECT_DEATH(m.unlock(), "does not hold the lock");
  w.store(static_cast<uint32_t>(::getppid()));
  EXPECT_DEATH(m.unlock(), "does not hold the lock");
#endif
}

// ---- platform::process_exited ---------------------------------------------------------------

TEST(ProcessExited, LiveZombieAndReaped) {
  EXPECT_FALSE(platform::process_exited(::getpid()));
  EXPECT_FALSE(platform::process_exited(::getppid()));
  EXPECT_FALSE(platform::process_exited(0));
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  pid_t c = ::fork();
  ASSERT_GE(c, 0);
  if (c == 0) {
    ::close(go[1]);
    char b;
    (void)!::read(go[0], &b, 1);
    ::_exit(0);
  }
  ::close(go[0]);
  EXPECT_FALSE(platform::process_exited(c));  // blocked in read: alive
  ::close(go[1]);                             // it exits; not reaped: a zombie
  EXPECT_TRUE(test::wait_until([&] { return platform::process_exited(c); }));
  int st = 0;
  ASSERT_EQ(::waitpid(c, &st, 0), c);
  EXPECT_TRUE(platform::process_exited(c));  // reaped (unless the pid was reused meanwhile)
}

TEST(ProcessExited, AZombieMainThreadWithLiveThreadsIsAlive) {
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  pid_t c = ::fork();
  ASSERT_GE(c, 0);
  if (c == 0) {
    // The main thread exits; a second thread lives until the pipe closes. The process shows Z
    // in /proc/<pid>/stat meanwhile, yet it runs.
    ::close(go[1]);
    static int fd = go[0];
    pthread_t t;
    ::pthread_create(
        &t, nullptr,
        [](void*) -> void* {
          char b;
          (void)!::read(fd, &b, 1);
          ::_exit(0);
        },
        nullptr);
    // exit(2) of this thread alone; pthread_exit would unwind through GoogleTest's frames.
    ::syscall(SYS_exit, 0);
  }
  ::close(go[0]);
  // Wait for the leader to become a zombie, then it must still count as running.
  EXPECT_TRUE(test::wait_until([&] {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(c));
    FILE* f = std::fopen(path, "r");
    if (f == nullptr) return false;
    char buf[512] = {};
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    std::string s(buf, n);
    auto p = s.rfind(')');
    return p != std::string::npos && p + 2 < s.size() && s[p + 2] == 'Z';
  }));
  EXPECT_FALSE(platform::process_exited(c));
  ::close(go[1]);
  EXPECT_TRUE(test::wait_until([&] { return platform::process_exited(c); }));
  int st = 0;
  ASSERT_EQ(::waitpid(c, &st, 0), c);
}

}  // namespace
}  // namespace shoal::sync
