// examples/cpp/dict_example.cpp — a C++ process and any other process (C++ or Python) updating
// one shoal::Dict (in Python: shoal.Dict) at the same time, each seeing the other's writes.
//
//   ./dict_example HANDLE K ME OTHER   attaches the dict; K times, under the dict's lock, adds 1
//                                      to d["n"] (a get and a set: the lock is what keeps the two
//                                      processes' updates from being lost) and writes
//                                      d[ME + i] = i; then sets d[ME + "_done"] = K, waits for
//                                      d[OTHER + "_done"], checks that every OTHER + i the other
//                                      process wrote is there with its value, prints
//                                      "done K saw M" (M: the other's entries seen) and exits
//   ./dict_example --self-test [K]     creates the dict, runs itself as a second process doing
//                                      the same, does its own K at the same time and checks
//                                      that d["n"] is 2K and each saw the other's K entries
//
// Keys and values are shoal::Item: None, bool, int64_t, double, std::string (str), Bytes.
// A C++ process finds the session a handle names through SHOAL_RUNTIME_DIR, as Python does;
// one that creates objects needs the broker executable: SHOAL_BROKER=/path/to/shoal-broker.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "shoal/dict.hpp"

namespace {

int64_t as_int(const std::optional<shoal::Item>& v) {
  if (!v) return 0;
  if (const int64_t* i = std::get_if<int64_t>(&*v)) return *i;
  throw shoal::InvalidArgumentError("dict_example: expected an int, got " + shoal::item_repr(*v));
}

// Returns how many of the other side's K entries were seen (K when all were), or -1 when the
// other side did not finish within the deadline.
int64_t update_and_watch(shoal::Dict& d, int64_t k, const std::string& me,
                         const std::string& other) {
  for (int64_t i = 0; i < k; ++i) {
    shoal::Dict::Guard g(d);  // other processes' writes wait; their reads do not
    d.set(std::string("n"), as_int(d.get(std::string("n"))) + 1);
    d.set(me + std::to_string(i), i);
  }
  d.set(me + "_done", k);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::optional<shoal::Item> theirs;
  while (!(theirs = d.get(other + "_done"))) {
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const int64_t their_k = as_int(theirs);
  int64_t seen = 0;
  for (int64_t i = 0; i < their_k; ++i) {
    auto v = d.get(other + std::to_string(i));
    if (v && shoal::items_equal(*v, shoal::Item{i})) ++seen;
  }
  return seen;
}

int attach_and_update(const char* handle, int64_t k, const std::string& me,
                      const std::string& other) {
  shoal::Dict d = shoal::Dict::attach(handle);
  const int64_t seen = update_and_watch(d, k, me, other);
  if (seen < 0) {
    std::fprintf(stderr, "dict_example: %s_done never appeared\n", other.c_str());
    return 1;
  }
  std::printf("done %lld saw %lld\n", static_cast<long long>(k), static_cast<long long>(seen));
  return 0;
}

int self_test(int64_t k, const char* argv0) {
  shoal::Dict d = shoal::Dict::create();
  const std::string h = d.handle(), ks = std::to_string(k);
  pid_t pid = ::fork();
  if (pid == 0) {  // a fresh process: no inherited mapping, only the handle
    ::execl("/proc/self/exe", argv0, h.c_str(), ks.c_str(), "b", "a",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const int64_t seen = update_and_watch(d, k, "a", "b");
  int status = 0;
  ::waitpid(pid, &status, 0);
  const int64_t n = as_int(d.get(std::string("n")));
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && n == 2 * k && seen == k;
  std::printf("n %lld of %lld, saw %lld of the other's %lld: %s\n", static_cast<long long>(n),
              static_cast<long long>(2 * k), static_cast<long long>(seen),
              static_cast<long long>(k), ok ? "ok, no update lost" : "MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 2 && std::string(argv[1]) == "--self-test") {
      return self_test(argc >= 3 ? std::strtoll(argv[2], nullptr, 10) : 20000, argv[0]);
    }
    if (argc == 5) {
      return attach_and_update(argv[1], std::strtoll(argv[2], nullptr, 10), argv[3], argv[4]);
    }
    std::fprintf(stderr, "usage: %s HANDLE K ME OTHER | --self-test [K]\n", argv[0]);
    return 2;
  } catch (const shoal::Error& e) {
    std::fprintf(stderr, "dict_example: %s\n", e.what());
    return 1;
  }
}
