// tests/cpp/support/test_support.hpp — what every C++ test that touches a session needs.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "shoal/handle.hpp"
#include "shoal/heap.hpp"
#include "shoal/segment.hpp"

namespace shoal::test {

/// A fresh runtime directory for this test (SHOAL_RUNTIME_DIR), so tests run in parallel and
/// leave nothing behind; SHOAL_SESSION is cleared so the test starts its own session.
class ScopedRuntimeDir {
 public:
  ScopedRuntimeDir();
  ~ScopedRuntimeDir();
  const std::string& path() const { return path_; }
  /// Names of the files in the directory (sockets, locks).
  std::vector<std::string> entries() const;

 private:
  std::string path_;
};

/// Anonymous shared memory a test and its forked children both write (not a shoal object): a
/// T constructed in a MAP_SHARED page; release_struct destroys and unmaps it.
template <class T>
T* shared_struct() {
  void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::abort();
  return new (p) T();
}
template <class T>
void release_struct(T* p) {
  p->~T();
  ::munmap(p, sizeof(T));
}

/// A forked child running `fn`; its exit code is fn's return value (an exception: 99).
class ChildProcess {
 public:
  explicit ChildProcess(std::function<int()> fn);
  /// Re-executes this test binary with --shoal-child=NAME ARG (a fresh process: no inherited
  /// mappings, as with spawn); the case is registered with SHOAL_CHILD_CASE.
  ChildProcess(const std::string& case_name, const std::string& arg);
  ~ChildProcess();
  pid_t pid() const { return pid_; }
  void kill(int sig);
  /// Waits up to `timeout`; returns the exit code, 128+signal, or -1 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

using ChildCase = int (*)(const std::string& arg);
/// Registers a case runnable through ChildProcess(case_name, arg).
bool register_child_case(const char* name, ChildCase fn);
#define SHOAL_CHILD_CASE(name)                                              \
  static int name(const std::string& arg);                                  \
  static const bool name##_registered = ::shoal::test::register_child_case(#name, name); \
  static int name(const std::string& arg)

/// Polls `pred` every millisecond until true or `timeout` passes (generous by design: tests
/// never assert a maximum duration: a busy machine must not fail them).
bool wait_until(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// The broker pid recorded in <dir>/<session>.lock, or -1.
pid_t broker_pid(const std::string& dir, const std::string& session_hex);

/// A pipe to pass a handle from a child to its parent.
struct HandlePipe {
  HandlePipe();
  ~HandlePipe();
  void send(const std::string& s);
  std::string receive(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  int rd = -1, wr = -1;
};

/// Writes a pattern that depends on each byte's offset and `seed` over a segment's data, so
/// that check() tells its bytes from any other segment's or a shifted copy's.
void fill(Segment& s, uint8_t seed);
/// True if the segment holds fill(s, seed)'s pattern.
bool check(const Segment& s, uint8_t seed);

/// The broker's description of a session (kList's JSON text), empty if it cannot be had.
std::string describe(const Id128& session);

/// The handle (unpinned) of a heap's root and of each of its extents, space-separated: for
/// tests that check with the broker (list_sessions) that every one of them is freed, without
/// attaching (which would hold them).
std::string heap_object_handles(const Heap& heap);
/// How many of the objects named by `handles` (space-separated) the broker of any session still
/// lists, asked without attaching them.
int objects_still_listed(const std::string& handles);
/// For a child that sent heap_object_handles() and waits: SIGKILLs and reaps it, then expects
/// the broker to free every object named (a root and at least two extents), after which each
/// handle is stale.
void expect_freed_after_kill(ChildProcess& child, const std::string& handles);

// SIGUSR1 without SA_RESTART (as CPython installs its handlers), sent to one thread every
// 2 ms while the object lives: waits that signals interrupt must go on with their deadline.
// Installs a no-op SIGUSR1 handler for the rest of the process (see the destructor).
class SignalStorm {
 public:
  explicit SignalStorm(pthread_t target) : target_(target) {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sa.sa_flags = 0;  // no SA_RESTART, as CPython installs its handlers
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(SIGUSR1, &sa, nullptr);
    t_ = std::thread([this] {
      while (!stop_) {
        ::pthread_kill(target_, SIGUSR1);
        sent_.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
  }
  ~SignalStorm() {
    stop_ = true;
    t_.join();
    // The no-op handler stays installed: a signal sent by pthread_kill is only pending until its
    // target thread next runs, and on a busy machine that can be after this destructor. With
    // the default action restored, that late SIGUSR1 killed the whole test binary.
  }
  int sent() const { return sent_.load(); }

 private:
  pthread_t target_;
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0};
  std::thread t_;
};

}  // namespace shoal::test
