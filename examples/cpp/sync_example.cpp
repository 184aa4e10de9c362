// examples/cpp/sync_example.cpp — a C++ process and any other process (C++ or Python) taking
// turns on one lock and one shared counter (in Python: shoal.Lock and shoal.Value('q')).
//
//   ./sync_example LOCK_HANDLE VALUE_HANDLE K   attaches the Mutex and the SharedValue<long long>,
//                                               adds 1 to the value under the lock K times (a
//                                               load and a store: the lock is what keeps the
//                                               two processes' updates from being lost), prints
//                                               "done K" and exits
//   ./sync_example --self-test [K]              creates both, runs itself as a second process
//                                               doing the same, does its own K increments at
//                                               the same time and checks the total is 2K
//
// A lock whose holder died is still acquired (kOwnerDied): the example says so and goes on, as
// the value is one atomic number that a dead holder cannot leave half-written.
// A C++ process finds the session a handle names through SHOAL_RUNTIME_DIR, as Python does;
// one that creates objects needs the broker executable: SHOAL_BROKER=/path/to/shoal-broker.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "shoal/sync.hpp"

namespace {

void increment(shoal::Mutex& lock, shoal::SharedValue<long long>& value, long long k) {
  for (long long i = 0; i < k; ++i) {
    if (lock.lock() == shoal::SyncStatus::kOwnerDied) {
      std::fprintf(stderr, "sync_example: the lock's previous holder died; going on\n");
    }
    value.store(value.load() + 1);  // not atomic as a whole: only the lock makes it so
    lock.unlock();
  }
}

int attach_and_increment(const char* lock_handle, const char* value_handle, long long k) {
  shoal::Mutex lock = shoal::Mutex::attach(lock_handle);
  auto value = shoal::SharedValue<long long>::attach(value_handle);
  increment(lock, value, k);
  std::printf("done %lld\n", k);
  return 0;
}

int self_test(long long k, const char* argv0) {
  shoal::Mutex lock = shoal::Mutex::create();
  auto value = shoal::SharedValue<long long>::create(0);
  const std::string lh = lock.handle(), vh = value.handle(), ks = std::to_string(k);
  pid_t pid = ::fork();
  if (pid == 0) {  // a fresh process: no inherited mapping, only the handles
    ::execl("/proc/self/exe", argv0, lh.c_str(), vh.c_str(), ks.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  increment(lock, value, k);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const long long total = value.load();
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && total == 2 * k;
  std::printf("total %lld of %lld: %s\n", total, 2 * k, ok ? "ok, no update lost" : "MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 2 && std::string(argv[1]) == "--self-test") {
      return self_test(argc >= 3 ? std::strtoll(argv[2], nullptr, 10) : 100000, argv[0]);
    }
    if (argc == 4) return attach_and_increment(argv[1], argv[2], std::strtoll(argv[3], nullptr, 10));
    std::fprintf(stderr, "usage: %s LOCK_HANDLE VALUE_HANDLE K | --self-test [K]\n", argv[0]);
    return 2;
  } catch (const shoal::Error& e) {
    std::fprintf(stderr, "sync_example: %s\n", e.what());
    return 1;
  }
}
