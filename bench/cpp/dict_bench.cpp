// bench/cpp/dict_bench.cpp — shoal::Dict through its C++ API: get / set / overwrite / erase
// latency of small items (int keys, short str values), gets from a second process while this one
// sets, and the memory a dict holds under random sets and deletes of log-uniform value sizes
// against issue 15's bound (2x the encoded live data + 64 B per entry + 1 MiB).
//
//   dict_bench [keys=100000] [reps=5] [mem_keys=1000] [mem_ops=10000]
//
// Meaningful in a release build. Medians and spreads (min..max) over the repetitions; no
// comparison with other libraries here (that is bench/python's, with the Python layer).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "shoal/dict.hpp"
#include "shoal/session.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double ns_per(Clock::duration d, uint64_t n) {
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) /
         static_cast<double>(n);
}

struct Series {
  std::vector<double> v;
  void print(const char* what) {
    std::sort(v.begin(), v.end());
    std::printf("  %-34s median %8.1f ns/op  (%.1f .. %.1f)\n", what, v[v.size() / 2], v.front(),
                v.back());
  }
};

uint64_t arg(int argc, char** argv, int i, uint64_t fallback) {
  return argc > i ? std::strtoull(argv[i], nullptr, 10) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t n = arg(argc, argv, 1, 100000);
  const int reps = static_cast<int>(arg(argc, argv, 2, 5));
  const uint64_t mem_keys = arg(argc, argv, 3, 1000);
  const uint64_t mem_ops = arg(argc, argv, 4, 10000);
  std::printf("shoal::Dict, %llu int keys, short str values, %d repetitions\n",
              static_cast<unsigned long long>(n), reps);
  Series insert, get, overwrite, miss, erase, get2;
  for (int r = 0; r < reps; ++r) {
    shoal::Dict d = shoal::Dict::create();
    const shoal::Item value{std::string("value-1234")};
    auto t0 = Clock::now();
    for (uint64_t i = 0; i < n; ++i) d.set(shoal::Item{static_cast<int64_t>(i)}, value);
    insert.v.push_back(ns_per(Clock::now() - t0, n));
    std::mt19937_64 rng(static_cast<uint64_t>(r));
    std::vector<int64_t> order(n);
    for (uint64_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(rng() % n);
    t0 = Clock::now();
    uint64_t found = 0;
    for (int64_t k : order) found += d.get(shoal::Item{k}).has_value();
    get.v.push_back(ns_per(Clock::now() - t0, n));
    t0 = Clock::now();
    for (int64_t k : order) found += d.get(shoal::Item{k + static_cast<int64_t>(n)}).has_value();
    miss.v.push_back(ns_per(Clock::now() - t0, n));
    t0 = Clock::now();
    for (int64_t k : order) d.set(shoal::Item{k}, shoal::Item{std::string("value-5678")});
    overwrite.v.push_back(ns_per(Clock::now() - t0, n));
    // Gets in this process while a second process overwrites in a loop.
    const std::string handle = d.handle();
    const pid_t child = ::fork();
    if (child == 0) {
      shoal::after_fork_child();
      shoal::Dict c = shoal::Dict::attach(handle);
      for (uint64_t i = 0;; ++i) c.set(shoal::Item{static_cast<int64_t>(i % n)}, value);
    }
    usleep(20000);
    t0 = Clock::now();
    for (int64_t k : order) found += d.get(shoal::Item{k}).has_value();
    get2.v.push_back(ns_per(Clock::now() - t0, n));
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    t0 = Clock::now();
    for (uint64_t i = 0; i < n; ++i) d.erase(shoal::Item{static_cast<int64_t>(i)});
    erase.v.push_back(ns_per(Clock::now() - t0, n));
    if (found < n) std::printf("  (lost keys?)\n");
  }
  insert.print("insert");
  get.print("get (hit)");
  miss.print("get (miss)");
  overwrite.print("overwrite");
  get2.print("get while another process sets");
  erase.print("erase");

  // Memory: log-uniform value sizes between 8 B and 1 MiB.
  shoal::Dict d = shoal::Dict::create();
  std::mt19937_64 rng(2026);
  std::uniform_real_distribution<double> unit(0, 1);
  auto size = [&] {  // log-uniform in [8, 1 MiB]
    return static_cast<uint64_t>(std::exp(std::log(8.0) + std::log(131072.0) * unit(rng)));
  };
  std::vector<uint64_t> live(mem_keys, 0);
  uint64_t live_bytes = 0, peak_reserved = 0;
  auto set = [&](uint64_t k) {
    const uint64_t s = size();
    d.set(shoal::Item{static_cast<int64_t>(k)}, shoal::Item{shoal::Bytes{std::string(s, 'v')}});
    live_bytes += s - live[k];
    live[k] = s;
  };
  for (uint64_t k = 0; k < mem_keys; ++k) set(k);
  for (uint64_t i = 0; i < mem_ops; ++i) {
    const uint64_t k = rng() % mem_keys;
    if (rng() % 2 == 0 || live[k] == 0) {
      set(k);
    } else {
      d.erase(shoal::Item{static_cast<int64_t>(k)});
      live_bytes -= live[k];
      live[k] = 0;
    }
    peak_reserved = std::max(peak_reserved, d.heap().stats().reserved_bytes);
  }
  const shoal::DictStats st = d.stats();
  const double bound = 2.0 * static_cast<double>(live_bytes) + 64.0 * static_cast<double>(st.size) + 1048576.0;
  std::printf("memory: %llu live keys, %.1f MiB encoded live data, heap live %.1f MiB, reserved %.1f MiB "
              "(peak %.1f MiB); bound 2x+64 B/entry+1 MiB = %.1f MiB: %s\n",
              static_cast<unsigned long long>(st.size), live_bytes / 1048576.0,
              st.heap_live_bytes / 1048576.0, st.heap_reserved_bytes / 1048576.0,
              peak_reserved / 1048576.0, bound / 1048576.0,
              static_cast<double>(st.heap_reserved_bytes) <= bound ? "within" : "OVER");
  return 0;
}
