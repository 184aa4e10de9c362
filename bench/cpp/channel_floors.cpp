// bench/cpp/channel_floors.cpp — the floors bench/channels.py measures every channel against, in
// the same run: what no channel between two processes can beat on this machine.
//
//   channel_floors futex ROUNDS   one-way latency of a futex wake between two processes: a
//                                 ping-pong on two futex words in a MAP_SHARED page, each side
//                                 sleeping in FUTEX_WAIT until the other wakes it
//   channel_floors spin ROUNDS    the same ping-pong with both sides spinning on the words (no
//                                 system call): the hand-off of one cache line
//   channel_floors memcpy BYTES   seconds of one memcpy of BYTES into memory already populated
//                                 (both buffers written once before; the median of 5 copies)
//
// The latency modes print "p50 p99" of the one-way time (half of each round trip) in seconds;
// memcpy prints the seconds. Built by any preset (bench/cpp/CMakeLists.txt), meaningful in
// release. No shoal code is involved: these are the kernel's and the hardware's costs.
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// Two words on separate cache lines, so the ping and the pong do not share a line.
struct alignas(64) Word {
  std::atomic<uint32_t> v{0};
};
struct Shared {
  Word ping;
  Word pong;
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

long futex(std::atomic<uint32_t>* w, int op, uint32_t val) {
  return ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), op, val, nullptr, nullptr, 0);
}

// Waits until *w == want: spinning only, or sleeping in FUTEX_WAIT while it is not.
void await_value(std::atomic<uint32_t>* w, uint32_t want, bool spin) {
  for (;;) {
    const uint32_t cur = w->load(std::memory_order_acquire);
    if (cur == want) return;
    if (!spin) {
      futex(w, FUTEX_WAIT, cur);  // returns at once if *w changed meanwhile
    } else {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();  // what a spin-wait loop does (shoal's included)
#endif
    }
  }
}

void publish(std::atomic<uint32_t>* w, uint32_t value, bool spin) {
  w->store(value, std::memory_order_release);
  if (!spin) futex(w, FUTEX_WAKE, 1);
}

int ping_pong(uint64_t rounds, bool spin) {
  void* mem = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  auto* s = new (mem) Shared{};
  const pid_t child = ::fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) {
    for (uint32_t i = 1; i <= rounds; ++i) {
      await_value(&s->ping.v, i, spin);
      publish(&s->pong.v, i, spin);
    }
    ::_exit(0);
  }
  std::vector<double> one_way;
  one_way.reserve(rounds);
  for (uint32_t i = 1; i <= rounds; ++i) {
    const auto t0 = Clock::now();
    publish(&s->ping.v, i, spin);
    await_value(&s->pong.v, i, spin);
    one_way.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / 2);
  }
  int st = 0;
  ::waitpid(child, &st, 0);
  std::sort(one_way.begin(), one_way.end());
  const auto at = [&](double q) { return one_way[static_cast<size_t>(q * (one_way.size() - 1))]; };
  std::printf("%.9g %.9g\n", at(0.50), at(0.99));
  return 0;
}

int copy_once(size_t bytes) {
  std::vector<char> src(bytes, 'a');  // both written: populated before any copy is timed
  std::vector<char> dst(bytes, 'b');
  std::vector<double> times;
  for (int i = 0; i < 5; ++i) {
    src[static_cast<size_t>(i)] = static_cast<char>('c' + i);  // not the same copy twice
    const auto t0 = Clock::now();
    std::memcpy(dst.data(), src.data(), bytes);
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    // Read the copy back, so the compiler must keep it.
    if (dst[static_cast<size_t>(i)] != src[static_cast<size_t>(i)]) return 1;
  }
  std::sort(times.begin(), times.end());
  std::printf("%.9g\n", times[times.size() / 2]);
  return 0;
}

int usage() {
  std::fprintf(stderr, "usage: channel_floors futex|spin ROUNDS | memcpy BYTES\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return usage();
  const std::string mode = argv[1];
  char* end = nullptr;
  const unsigned long long n = std::strtoull(argv[2], &end, 10);
  if (end == argv[2] || *end != '\0' || n == 0 || n > (uint64_t{1} << 30)) return usage();
  if (mode == "futex") return ping_pong(n, false);
  if (mode == "spin") return ping_pong(n, true);
  if (mode == "memcpy") return copy_once(static_cast<size_t>(n));
  return usage();
}
