// shoal::List from several threads of one process (run under TSan): writers that contend for
// the list's lock through two mappings of the same list, readers that validate every slice copy
// and element while the writers append, pop, insert, assign slices and clear under them.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shoal/list.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

// Every element names its own length, so a torn or freed-and-reused value is seen.
std::string value_for(uint64_t v) {
  const uint64_t n = v % 300;
  return std::to_string(n) + ":" + std::string(n, static_cast<char>('a' + v % 26));
}
bool valid(const Item& it) {
  const std::string* s = std::get_if<std::string>(&it);
  if (s == nullptr) return false;
  const size_t colon = s->find(':');
  if (colon == std::string::npos) return false;
  const uint64_t n = std::stoull(s->substr(0, colon));
  const std::string tail = s->substr(colon + 1);
  return tail.size() == n && (n == 0 || tail == std::string(n, tail[0]));
}

TEST(ListThreads, ReadersValidateEveryElementWhileWritersMoveThemAround) {
  test::ScopedRuntimeDir dir;
  List l = List::create(List::Options{64 * 1024});
  List second = List::attach(l.handle());  // the same list through a second List
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<uint64_t> reads{0};
  auto writer = [&](List& w, unsigned seed) {
    std::mt19937_64 rng(seed);
    for (uint64_t ver = 0; ver < 3000; ++ver) {
      const uint64_t what = rng() % 100;
      const Item v{value_for(rng())};
      if (what < 40) {
        w.append(v);
      } else if (what < 55) {
        w.pop();
      } else if (what < 65) {
        w.insert(static_cast<int64_t>(rng() % 50), v);
      } else if (what < 75) {
        w.set(static_cast<int64_t>(rng() % 50), v);
      } else if (what < 85) {
        w.del_slice(Slice{static_cast<int64_t>(rng() % 40), static_cast<int64_t>(rng() % 60), 1});
      } else if (what < 92) {
        w.set_slice(Slice{std::nullopt, std::nullopt, 1}, {v, v, v});
      } else if (what < 99) {
        w.reverse();
      } else {
        List::Guard g(w);  // a compound update under the lock, as Python's `with l.lock:`
        w.clear();
        w.append(v);
      }
    }
  };
  auto reader = [&](List& r, unsigned seed) {
    std::mt19937_64 rng(seed);
    while (!stop.load()) {
      for (int i = 0; i < 100; ++i) {
        if (auto v = r.get(static_cast<int64_t>(rng() % 60) - 30); v && !valid(*v)) ++bad;
        reads.fetch_add(1, std::memory_order_relaxed);
      }
      for (const Item& v : r.slice(Slice{std::nullopt, std::nullopt, -2})) {
        if (!valid(v)) ++bad;
      }
      List::Cursor c = r.cursor();
      Item v;
      uint64_t n = 0;
      while (c.next(&v) && ++n < 100000) {
        if (!valid(v)) ++bad;
      }
    }
  };
  std::thread r1(reader, std::ref(l), 1), r2(reader, std::ref(second), 2);
  std::thread w1(writer, std::ref(l), 3), w2(writer, std::ref(second), 4);
  w1.join();
  w2.join();
  stop = true;
  r1.join();
  r2.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0u);
  const ListReport rep = l.check();
  for (const Item& v : l.items()) EXPECT_TRUE(valid(v));
  EXPECT_EQ(rep.size, l.size());
}

}  // namespace
}  // namespace shoal
