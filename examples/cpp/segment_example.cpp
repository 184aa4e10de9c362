// examples/cpp/segment_example.cpp — create a segment, hand its handle to a fresh process
// (here: this program re-executed), and read the same bytes there.
//
//   ./segment_example            creates, fills, runs itself as a reader, waits
//   ./segment_example HANDLE     attaches and prints the sum of the bytes
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <numeric>
#include <string>

#include "shoal/segment.hpp"

int main(int argc, char** argv) {
  if (argc == 2) {
    shoal::Segment s = shoal::Segment::attach(argv[1]);
    auto* p = reinterpret_cast<const unsigned char*>(s.data());
    unsigned long sum = std::accumulate(p, p + s.size(), 0UL);
    std::printf("reader: %llu bytes, sum %lu\n", static_cast<unsigned long long>(s.size()), sum);
    return sum == 255UL * s.size() ? 0 : 1;
  }
  shoal::Segment s = shoal::Segment::create(1 << 20);
  std::fill_n(reinterpret_cast<unsigned char*>(s.data()), s.size(), 0xFF);
  std::string handle = s.handle();
  std::printf("creator: handle %s\n", handle.c_str());
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    execl("/proc/self/exe", argv[0], handle.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
