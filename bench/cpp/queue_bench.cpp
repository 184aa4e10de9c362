// bench/cpp/queue_bench.cpp — shoal::Queue between two processes: messages/s one producer to one
// consumer (100-byte messages, get and get_many), one-way latency (half a ping-pong round trip,
// p50/p99), and GB/s of 8 MiB messages (out of band) beside the floor of one memcpy. Five
// interleaved repetitions, median and spread; no assertion on any figure.
//
// Run: build/release/bench/cpp/queue_bench [--quick] (built by any preset, meaningful in release).
// Two cores shared with other work here: figures are noisy; compare within one run.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "shoal/queue.hpp"
#include "shoal/session.hpp"

namespace {

using Clock = std::chrono::steady_clock;

template <class Fn>
pid_t fork_child(Fn fn) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    shoal::after_fork_child();
    ::_exit(fn());
  }
  return pid;
}

int reap(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Messages per second, 1 producer process -> 1 consumer process (the parent).
double throughput(uint64_t n, size_t len, size_t batch) {
  shoal::Queue q = shoal::Queue::create({.ring_bytes = 1 << 20});
  const std::string msg(len, 'x');
  const pid_t child = fork_child([&] {
    for (uint64_t i = 0; i < n; ++i) {
      if (q.put(msg) != shoal::QueueStatus::kOk) return 2;
    }
    return 0;
  });
  const auto t0 = Clock::now();
  std::string m;
  std::vector<std::string> out;
  for (uint64_t got = 0; got < n;) {
    if (batch <= 1) {
      if (q.get(m) != shoal::QueueStatus::kOk) return 0;
      ++got;
    } else {
      out.clear();
      if (q.get_many(out, batch) != shoal::QueueStatus::kOk) return 0;
      got += out.size();
    }
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  reap(child);
  return static_cast<double>(n) / s;
}

// GB/s of `count` messages of `len` bytes (out of band), 1 producer -> 1 consumer process,
// the first message excluded (it populates the heap's extents).
double big_throughput(uint64_t count, size_t len) {
  shoal::Queue q = shoal::Queue::create({.ring_bytes = 1 << 16});
  const std::string msg(len, 'b');
  const pid_t child = fork_child([&] {
    for (uint64_t i = 0; i < count + 1; ++i) {
      if (q.put(msg) != shoal::QueueStatus::kOk) return 2;
    }
    return 0;
  });
  std::string m;
  (void)q.get(m);
  const auto t0 = Clock::now();
  for (uint64_t i = 0; i < count; ++i) (void)q.get(m);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  reap(child);
  return static_cast<double>(count * len) / s / 1e9;
}

// The floor: one memcpy of `len` bytes into memory already populated, GB/s.
double memcpy_floor(size_t len) {
  std::string a(len, 'a'), b(len, 'b');
  const auto t0 = Clock::now();
  for (int i = 0; i < 8; ++i) {
    std::memcpy(b.data(), a.data(), len);
    a[i] = b[len - 1 - i];
  }
  return 8.0 * static_cast<double>(len) / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9;
}

// One-way latency in ns (half a round trip): p50 and p99 over `rounds` ping-pongs.
std::pair<double, double> latency(int rounds) {
  shoal::Queue ping = shoal::Queue::create({.ring_bytes = 4096});
  shoal::Queue pong = shoal::Queue::create({.ring_bytes = 4096});
  const pid_t child = fork_child([&] {
    std::string m;
    for (int i = 0; i < rounds; ++i) {
      if (ping.get(m) != shoal::QueueStatus::kOk || pong.put(m) != shoal::QueueStatus::kOk) {
        return 2;
      }
    }
    return 0;
  });
  std::vector<double> half(rounds);
  const std::string msg(100, 'p');
  std::string m;
  for (int i = 0; i < rounds; ++i) {
    const auto t0 = Clock::now();
    (void)ping.put(msg);
    (void)pong.get(m);
    half[i] = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2;
  }
  reap(child);
  std::sort(half.begin(), half.end());
  return {half[half.size() / 2], half[half.size() * 99 / 100]};
}

struct Spread {
  double median, lo, hi;
};
Spread spread(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const uint64_t n = quick ? 20000 : 200000;
  const int reps = 5;
  std::vector<double> one, many, p50, p99, big, floor;
  for (int r = 0; r < reps; ++r) {  // interleaved
    one.push_back(throughput(n, 100, 1));
    many.push_back(throughput(n, 100, 64));
    const auto [a, b] = latency(quick ? 2000 : 20000);
    p50.push_back(a);
    p99.push_back(b);
    big.push_back(big_throughput(quick ? 4 : 16, 8u << 20));
    floor.push_back(memcpy_floor(8u << 20));
  }
  const Spread s1 = spread(one), s2 = spread(many), l50 = spread(p50), l99 = spread(p99);
  std::printf("| shoal::Queue, 1 -> 1 process, 100-byte messages | median | min | max |\n");
  std::printf("| --- | --- | --- | --- |\n");
  std::printf("| put / get (messages/s, %llu per run) | %.3g | %.3g | %.3g |\n",
              static_cast<unsigned long long>(n), s1.median, s1.lo, s1.hi);
  std::printf("| put / get_many(64) (messages/s) | %.3g | %.3g | %.3g |\n", s2.median, s2.lo,
              s2.hi);
  std::printf("| one-way latency p50 (ns, half a ping-pong) | %.0f | %.0f | %.0f |\n",
              l50.median, l50.lo, l50.hi);
  std::printf("| one-way latency p99 (ns) | %.0f | %.0f | %.0f |\n", l99.median, l99.lo,
              l99.hi);
  const Spread g = spread(big), f = spread(floor);
  std::printf("| 8 MiB messages, out of band (GB/s, first excluded) | %.2f | %.2f | %.2f |\n",
              g.median, g.lo, g.hi);
  std::printf("| floor: one memcpy of 8 MiB into populated memory (GB/s) | %.2f | %.2f | %.2f |\n",
              f.median, f.lo, f.hi);
  return 0;
}
