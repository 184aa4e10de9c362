// tests/cpp/programs/queue_peer.cpp — the C++ side of tests/python/test_queue_cpp.py: one end of
// a queue that a Python process holds the other end of (a shoal.Queue's handle on argv).
//
//   queue_peer produce HANDLE N   puts messages 0..N-1 (message(i) below), prints "done N"
//   queue_peer consume HANDLE N   gets N messages, checks each is message(i) in order, prints
//                                 "ok N"; on a mismatch prints what differed and exits 1
//
// C++ messages are bytes: a Python consumer receives them as `bytes`, and a Python `bytes` put
// arrives here as those bytes. Message i is "m<i>:" then a pattern of i-dependent bytes; every
// 16th is 300 KiB, more than a quarter of the default ring, so it travels out of band. The Python
// test builds the same messages (tests/python/test_queue_cpp.py: message()).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "shoal/queue.hpp"

namespace {

std::string message(unsigned long i) {
  std::string m = "m" + std::to_string(i) + ":";
  const size_t extra = i % 16 == 15 ? 300u << 10 : (i * 37) % 500;
  m.reserve(m.size() + extra);
  for (size_t j = 0; j < extra; ++j) m.push_back(static_cast<char>((i * 31 + j * 7) & 0xff));
  return m;
}

int produce(shoal::Queue& q, unsigned long n) {
  for (unsigned long i = 0; i < n; ++i) {
    const shoal::QueueStatus st = q.put_for(message(i), 30.0);
    if (st != shoal::QueueStatus::kOk) {
      std::fprintf(stderr, "queue_peer: put %lu: %s\n", i, shoal::queue_status_name(st));
      return 1;
    }
  }
  std::printf("done %lu\n", n);
  return 0;
}

int consume(shoal::Queue& q, unsigned long n) {
  std::string got;
  for (unsigned long i = 0; i < n; ++i) {
    const shoal::QueueStatus st = q.get_for(got, 30.0);
    if (st != shoal::QueueStatus::kOk) {
      std::fprintf(stderr, "queue_peer: get %lu: %s\n", i, shoal::queue_status_name(st));
      return 1;
    }
    const std::string want = message(i);
    if (got != want) {
      std::fprintf(stderr, "queue_peer: message %lu: %zu bytes, expected %zu (starts \"%.12s\")\n",
                   i, got.size(), want.size(), got.c_str());
      return 1;
    }
  }
  std::printf("ok %lu\n", n);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: queue_peer produce|consume HANDLE N\n");
    return 2;
  }
  const std::string mode = argv[1];
  const unsigned long n = std::strtoul(argv[3], nullptr, 10);
  try {
    shoal::Queue q = shoal::Queue::attach(argv[2]);
    if (mode == "produce") return produce(q, n);
    if (mode == "consume") return consume(q, n);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "queue_peer: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "queue_peer: unknown mode %s\n", mode.c_str());
  return 2;
}
