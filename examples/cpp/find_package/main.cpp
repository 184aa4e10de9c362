// examples/cpp/find_package/main.cpp — shares an array with a fresh process, using only what
// `cmake --install` put in the prefix (see CMakeLists.txt here).
//
//   ./find_package_example           creates 1000 float64 0..999, runs itself with the handle,
//                                    and checks that the reader saw the same sum
//   ./find_package_example HANDLE    attaches and prints "sum S"
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <numeric>
#include <string>

#include "shoal/shoal.hpp"

namespace {

double sum_of(const shoal::Array& a) {
  auto v = a.as<const double>();
  return std::accumulate(v.begin(), v.end(), 0.0);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 2) {
      std::printf("sum %.17g\n", sum_of(shoal::Array::attach(argv[1])));
      return 0;
    }
    const uint64_t shape[] = {1000};
    shoal::Array a = shoal::Array::create<double>(shape);
    auto v = a.as<double>();
    std::iota(v.begin(), v.end(), 0.0);
    const std::string handle = a.handle();
    std::printf("creator: handle %s (broker %s)\n", handle.c_str(), shoal::broker_path().c_str());
    std::fflush(stdout);
    int fds[2];
    if (::pipe(fds) != 0) return 1;
    const pid_t pid = ::fork();
    if (pid == 0) {  // a fresh process: no inherited mapping, only the handle
      ::dup2(fds[1], STDOUT_FILENO);
      ::execl("/proc/self/exe", argv[0], handle.c_str(), static_cast<char*>(nullptr));
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
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && out == expect;
    std::printf("reader said: %s%s\n", out.c_str(), ok ? "ok" : "MISMATCH");
    return ok ? 0 : 1;
  } catch (const shoal::Error& e) {
    std::fprintf(stderr, "find_package_example: %s\n", e.what());
    return 1;
  }
}
