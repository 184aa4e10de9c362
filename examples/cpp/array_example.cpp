// examples/cpp/array_example.cpp — a float64 array shared between a C++ program and any other
// process (C++ or Python: there it is a shoal.Array, `shoal.Array.attach(handle)`).
//
//   ./array_example [--n N]               creates N float64 (default 1000) filled with 0..N-1,
//                                          prints "handle H", waits for a line on stdin, then
//                                          prints "sum S" of the array as it is then (another
//                                          process may have written it) and exits
//   ./array_example HANDLE                 attaches, prints "elements N" and "sum S"
//   ./array_example --self-test [--n N]    creates, runs itself as a reader of the handle, and
//                                          checks the sum it reports (run as a test)
//
// A C++ process finds the session a handle names through SHOAL_RUNTIME_DIR, as Python does;
// one that creates objects needs the broker executable: SHOAL_BROKER=/path/to/shoal-broker.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <string>

#include "shoal/array.hpp"

namespace {

double sum_of(const shoal::Array& a) {
  auto v = a.as<const double>();
  return std::accumulate(v.begin(), v.end(), 0.0);
}

shoal::Array make(uint64_t n) {
  const uint64_t shape[] = {n};
  shoal::Array a = shoal::Array::create<double>(shape);
  auto v = a.as<double>();
  std::iota(v.begin(), v.end(), 0.0);
  return a;
}

int attach_and_sum(const char* handle) {
  shoal::Array a = shoal::Array::attach(handle);
  std::printf("elements %llu\nsum %.17g\n", static_cast<unsigned long long>(a.element_count()),
              sum_of(a));
  return 0;
}

int self_test(uint64_t n, const char* argv0) {
  shoal::Array a = make(n);
  std::string handle = a.handle();
  std::printf("creator: %llu float64, handle %s\n", static_cast<unsigned long long>(n),
              handle.c_str());
  std::fflush(stdout);
  int fds[2];
  if (::pipe(fds) != 0) return 1;
  pid_t pid = ::fork();
  if (pid == 0) {  // a fresh process: no inherited mapping, only the handle
    ::dup2(fds[1], STDOUT_FILENO);
    ::execl("/proc/self/exe", argv0, handle.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string out;
  char buf[256];
  for (ssize_t r; (r = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(r));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  char expect[64];
  std::snprintf(expect, sizeof expect, "sum %.17g\n", sum_of(a));
  std::printf("reader said: %s", out.c_str());
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                  out.find(expect) != std::string::npos;
  std::printf("%s\n", ok ? "ok: the reader saw the same elements" : "MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t n = 1000;
  bool self = false;
  const char* handle = nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--n" && i + 1 < argc) {
      n = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--self-test") {
      self = true;
    } else if (arg.rfind("--", 0) != 0) {
      handle = argv[i];
    } else {
      std::fprintf(stderr, "usage: %s [--n N] [--self-test] | HANDLE\n", argv[0]);
      return 2;
    }
  }
  try {
    if (handle != nullptr) return attach_and_sum(handle);
    if (self) return self_test(n, argv[0]);
    shoal::Array a = make(n);
    std::printf("handle %s\n", a.handle().c_str());
    std::fflush(stdout);
    std::string line;
    std::getline(std::cin, line);  // the other side is done (a line, or end of input)
    std::printf("sum %.17g\n", sum_of(a));
    return 0;
  } catch (const shoal::Error& e) {
    std::fprintf(stderr, "array_example: %s\n", e.what());
    return 1;
  }
}
