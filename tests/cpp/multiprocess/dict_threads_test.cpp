// shoal::Dict from several threads of one process (run under TSan): writers that contend for
// the dict's lock through two mappings of the same dict, readers that validate every value and
// every iteration while the writers grow, shrink and clear the table under them.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "shoal/dict.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

std::string value_for(int64_t k, uint64_t ver) {
  std::string v = std::to_string(k) + ":" + std::to_string(ver) + ":";
  v.append((k * 13 + ver) % 700, static_cast<char>('a' + (k + ver) % 26));
  return v;
}
bool valid(int64_t k, const Item& v) {
  const std::string* s = std::get_if<std::string>(&v);
  if (s == nullptr) return false;
  const size_t a = s->find(':'), b = s->find(':', a + 1);
  if (a == std::string::npos || b == std::string::npos || std::stoll(s->substr(0, a)) != k) return false;
  return *s == value_for(k, std::stoull(s->substr(a + 1, b - a - 1)));
}

TEST(DictThreads, ReadersValidateEveryValueWhileWritersResizeAndClear) {
  test::ScopedRuntimeDir dir;
  Dict d = Dict::create(Dict::Options{64 * 1024});
  Dict second = Dict::attach(d.handle());  // the same dict through a second Dict
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<uint64_t> reads{0};
  auto writer = [&](Dict& w, unsigned seed) {
    std::mt19937_64 rng(seed);
    for (uint64_t ver = 0; ver < 3000; ++ver) {
      const int64_t k = static_cast<int64_t>(rng() % 200);
      const uint64_t what = rng() % 100;
      if (what < 65) {
        w.set(Item{k}, Item{value_for(k, ver)});
      } else if (what < 99) {
        w.erase(Item{k});
      } else {
        Dict::Guard g(w);  // a compound update under the lock, as Python's `with d.lock:`
        w.clear();
        w.set(Item{k}, Item{value_for(k, ver)});
      }
    }
  };
  auto reader = [&](Dict& r, unsigned seed) {
    std::mt19937_64 rng(seed);
    while (!stop.load()) {
      for (int i = 0; i < 100; ++i) {
        const int64_t k = static_cast<int64_t>(rng() % 200);
        if (auto v = r.get(Item{k}); v && !valid(k, *v)) ++bad;
        reads.fetch_add(1, std::memory_order_relaxed);
      }
      std::set<int64_t> seen;
      Dict::Cursor c = r.cursor();
      Item k, v;
      while (c.next(&k, &v)) {
        const int64_t key = std::get<int64_t>(k);
        if (!seen.insert(key).second || !valid(key, v)) ++bad;
      }
    }
  };
  std::vector<std::thread> readers;
  readers.emplace_back(reader, std::ref(d), 1u);
  readers.emplace_back(reader, std::ref(second), 2u);
  std::thread w1(writer, std::ref(d), 3u), w2(writer, std::ref(second), 4u);
  w1.join();
  w2.join();
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0u);
  d.check();
  for (const auto& [k, v] : d.items()) EXPECT_TRUE(valid(std::get<int64_t>(k), v));
}

}  // namespace
}  // namespace shoal
