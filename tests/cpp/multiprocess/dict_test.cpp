// shoal::Dict across real processes: a writer SIGKILLed at every step of every operation (the
// detail::dict_kill_at hook) and at random times (a seeded torture loop), readers in other
// processes that never see a torn value and keep going while the writer is dead, and a lock
// holder killed with the lock held. After every kill: check() (D1-D8, no block leaked) and the
// contents equal the operations that returned, plus or minus the one in flight.
// The every-step walk, the random-kill loop and the killed holder are kill_walk.hpp's harnesses,
// shared with the List's tests.
#include "shoal/dict.hpp"
#include "shoal/session.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "containers/dict_core.hpp"
#include "kill_walk.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

using test::ChildProcess;
using test::env_int;
using test::holder_killed_with_the_lock_held;
using test::kill_walk;
using test::KillWalk;
using test::random_kills;
using test::ref_kill_walk;
using test::RefKillWalk;
using test::release_struct;
using test::shared_struct;
using test::ScopedRuntimeDir;

// The dict's contents in insertion order, as Items.
using Contents = std::vector<std::pair<Item, Item>>;

bool same_contents(const Contents& a, const Contents& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!items_equal(a[i].first, b[i].first) || a[i].second != b[i].second) return false;
  }
  return true;
}

std::string show(const Contents& c) {
  std::string s = "{";
  for (const auto& [k, v] : c) {
    if (s.size() > 1) s += ", ";
    s += item_repr(k) + ": " + item_repr(v).substr(0, 24);
  }
  return s + "}";
}

// A dict's model: what Python's dict would hold after the same operations.
void model_set(Contents& m, const Item& k, const Item& v) {
  for (auto& [mk, mv] : m) {
    if (items_equal(mk, k)) {
      mv = v;
      return;
    }
  }
  m.emplace_back(k, v);
}
void model_erase(Contents& m, const Item& k) {
  m.erase(std::remove_if(m.begin(), m.end(), [&](const auto& e) { return items_equal(e.first, k); }),
          m.end());
}

// ---- every step of every operation ---------------------------------------------------------

struct Scenario {
  const char* name;
  std::function<void(Dict&)> setup;  // builds the state before
  std::function<void(Dict&)> op;     // the operation killed at each step in turn
};

Item I(int64_t v) { return Item{v}; }
Item S(std::string v) { return Item{std::move(v)}; }
std::string val(int64_t k, int tag) {
  return "value-" + std::to_string(k) + "-" + std::to_string(tag) + std::string(40, 'x');
}

std::vector<Scenario> scenarios() {
  auto fill = [](Dict& d, int64_t n) {
    for (int64_t k = 0; k < n; ++k) d.set(k % 2 ? I(k) : S("key" + std::to_string(k)), S(val(k, 0)));
  };
  return {
      {"insert", [=](Dict& d) { fill(d, 3); }, [](Dict& d) { d.set(S("new"), S(val(99, 1))); }},
      {"insert that grows", [=](Dict& d) { fill(d, 5); }, [](Dict& d) { d.set(I(1001), S(val(1001, 1))); }},
      {"overwrite", [=](Dict& d) { fill(d, 4); }, [](Dict& d) { d.set(I(1), S(val(1, 7))); }},
      {"overwrite by an equal float", [=](Dict& d) { fill(d, 4); }, [](Dict& d) { d.set(Item{3.0}, I(5)); }},
      {"erase", [=](Dict& d) { fill(d, 4); }, [](Dict& d) { d.erase(S("key2")); }},
      {"erase that shrinks",
       [=](Dict& d) {
         fill(d, 60);
         for (int64_t k = 0; k < 55; ++k) d.erase(k % 2 ? I(k) : S("key" + std::to_string(k)));
       },
       [](Dict& d) { d.erase(I(55)); }},
      {"clear", [=](Dict& d) { fill(d, 12); }, [](Dict& d) { d.clear(); }},
      {"popitem", [=](Dict& d) { fill(d, 6); }, [](Dict& d) { d.popitem(); }},
  };
}

TEST(DictKill, EveryStepOfEveryOperationIsCompletedOrRolledBack) {
  ScopedRuntimeDir dir;
  int scenarios_run = 0;
  for (const Scenario& sc : scenarios()) {
    // The state after, from a run that is not killed.
    Dict ref = Dict::create();
    sc.setup(ref);
    const Contents before = ref.items();
    sc.op(ref);
    const Contents after = ref.items();
    ref.check();
    const KillWalk<Dict> walk{
        .name = sc.name,
        .kill_at = &detail::dict_kill_at,
        .max_steps = 200,
        .more_kills_than = 3,
        .kill_recoveries = true,
        .make =
            [&] {
              Dict d = Dict::create();
              sc.setup(d);
              return d;
            },
        .write = sc.op,
        .check =
            [&](Dict& d, int64_t n) {
              ASSERT_NO_THROW(d.check()) << sc.name << " killed at step " << n;
              const Contents now = d.items();
              EXPECT_TRUE(same_contents(now, before) || same_contents(now, after))
                  << sc.name << " killed at step " << n << ": " << show(now)
                  << "\nbefore: " << show(before) << "\nafter: " << show(after);
              // The dict goes on working.
              d.set(S("later"), I(1));
              EXPECT_EQ(*d.get(S("later")), I(1));
              d.check();
            },
    };
    ASSERT_NO_FATAL_FAILURE(kill_walk(walk));
    ++scenarios_run;
  }
  EXPECT_EQ(scenarios_run, 8);
}

// ---- references to other objects: every step, and what stays alive ----------------------------

// R1-R3 of dict_layout.hpp under a writer killed at every step: after the next writer's
// recovery every reference a live entry holds names a living object (never a freed one), and
// once the dict itself goes nothing it referred to is left (a death between a reference's
// state store and its drop may keep the object until then, never longer).
TEST(DictKill, EveryStepOfAReferenceWriteLeavesEveryNamedObjectAlive) {
  ScopedRuntimeDir dir;
  struct RefOp {
    const char* name;
    std::function<void(Dict&)> op;
  };
  const std::vector<RefOp> ops = {
      {"overwrite a reference", [](Dict& d) { d.set(S("a"), I(1)); }},
      {"erase a reference", [](Dict& d) { d.erase(S("a")); }},
      {"pop a reference", [](Dict& d) { (void)d.pop(S("b")); }},
      {"insert a reference",
       [](Dict& d) { d.set(S("c"), *d.get(S("a"))); }},  // get maps it: a target to store
      {"overwrite by a reference", [](Dict& d) { d.set(S("x"), *d.get(S("b"))); }},
      {"clear", [](Dict& d) { d.clear(); }},
  };
  int ops_run = 0;
  for (const RefOp& ro : ops) {
    const RefKillWalk<Dict> walk{
        .name = ro.name,
        .who = "dict",
        .kill_at = &detail::dict_kill_at,
        .max_steps = 200,
        .more_kills_than = 2,
        .kill_recoveries = true,
        .hold =
            [](Dict& d, const Segment& t) {
              d.set(S("a"), Item{ObjectRef::to(t)});
              d.set(S("b"), Item{ObjectRef::to(t)});
              d.set(S("x"), S(val(1, 1)));
            },
        .write = ro.op,
        // Every reference a live entry holds maps: its object is alive.
        .expect_alive =
            [&](Dict& d, const ObjectRef& r, int64_t n) {
              EXPECT_NO_THROW((void)d.attach_ref(r)) << ro.name << " killed at step " << n;
            },
    };
    ASSERT_NO_FATAL_FAILURE(ref_kill_walk(walk));
    ++ops_run;
  }
  EXPECT_EQ(ops_run, 6);
}

// ---- random kills of a writer in a loop (seeded, bounded) -----------------------------------

struct OpRecord {
  uint32_t op = 0;  // 0 set, 1 erase, 2 clear, 3 popitem
  int32_t key = 0;
  uint32_t round = 0, index = 0, len = 0;
};
using OpLog = test::OpLog<OpRecord, 1 << 16>;

Item key_of(int32_t k) { return k % 3 == 0 ? S("k" + std::to_string(k)) : I(k); }
Item value_of(const OpRecord& r) {
  std::string v = "r" + std::to_string(r.round) + "i" + std::to_string(r.index) + ":";
  v.append(r.len, static_cast<char>('a' + (r.round + r.index) % 26));
  return S(std::move(v));
}
void apply_op(Contents& m, const OpRecord& r) {
  if (r.op == 0) model_set(m, key_of(r.key), value_of(r));
  if (r.op == 1) model_erase(m, key_of(r.key));
  if (r.op == 2) m.clear();
  if (r.op == 3 && !m.empty()) m.pop_back();
}
void run_op(Dict& d, const OpRecord& r) {
  if (r.op == 0) d.set(key_of(r.key), value_of(r));
  if (r.op == 1) d.erase(key_of(r.key));
  if (r.op == 2) d.clear();
  if (r.op == 3) d.popitem();
}

OpRecord random_op(std::mt19937_64& r, uint32_t round, uint32_t i) {
  OpRecord rec;
  const uint64_t what = r() % 1000;
  rec.op = what < 600 ? 0 : what < 960 ? 1 : what < 998 ? 3 : 2;
  rec.key = static_cast<int32_t>(r() % 400);
  rec.round = round;
  rec.index = i;
  // Log-uniform lengths up to 64 KiB: big copies and frees make for long operations.
  rec.len = static_cast<uint32_t>(std::exp2(static_cast<double>(r() % 1700) / 100.0));
  return rec;
}

TEST(DictKill, RandomKillsOfAWriterKeepEveryOperationThatReturned) {
  ScopedRuntimeDir dir;
  random_kills<Dict, OpRecord, OpLog::kMax>({
      .name = "dict",
      .rounds_env = "SHOAL_DICT_TORTURE_ROUNDS",
      .default_rounds = 120,
      .seed_env = "SHOAL_DICT_TORTURE_SEED",
      .default_seed = 15,
      .next_op = random_op,
      .run = run_op,
      .model = apply_op,
      .same = same_contents,
      .show = show,
  });
}

// Two writers at once, each on its own keys (key % 2 == writer), no clear: both killed at a
// random time each round. Each writer's keys, in the dict's order, must be its own model's
// (plus or minus its operation in flight); the interleaving of the two is free.
Contents project(const Contents& c, int w) {
  Contents out;
  for (const auto& e : c) {
    const int64_t k = std::holds_alternative<int64_t>(e.first)
                          ? std::get<int64_t>(e.first)
                          : std::stoll(std::get<std::string>(e.first).substr(1));
    if (k % 2 == w) out.push_back(e);
  }
  return out;
}

TEST(DictKill, RandomKillsOfTwoConcurrentWritersKeepEveryOperationThatReturned) {
  ScopedRuntimeDir dir;
  const int rounds = env_int("SHOAL_DICT_TORTURE_ROUNDS", 120) / 2;
  std::mt19937_64 rng(static_cast<uint64_t>(env_int("SHOAL_DICT_TORTURE_SEED", 15)) + 1);
  Dict d = Dict::create(Dict::Options{64 * 1024});
  const std::string handle = d.handle();
  OpLog* logs[2] = {shared_struct<OpLog>(), shared_struct<OpLog>()};
  std::vector<Contents> candidates[2] = {{Contents{}}, {Contents{}}};
  for (int round = 0; round < rounds; ++round) {
    std::vector<std::unique_ptr<ChildProcess>> writers;
    for (int w = 0; w < 2; ++w) {
      OpLog* log = logs[w];
      log->done = 0;
      log->inflight = 0;
      const uint64_t child_seed = rng();
      writers.push_back(std::make_unique<ChildProcess>([&, log, w, child_seed] {
        after_fork_child();
        Dict c = Dict::attach(handle);
        std::mt19937_64 r(child_seed);
        for (uint32_t i = 0; i < OpLog::kMax; ++i) {
          OpRecord rec;
          rec.op = r() % 10 < 6 ? 0 : 1;
          rec.key = static_cast<int32_t>(r() % 200) * 2 + w;
          rec.round = static_cast<uint32_t>(round * 2 + w);
          rec.index = i;
          rec.len = static_cast<uint32_t>(std::exp2(static_cast<double>(r() % 1500) / 100.0));
          log->inflight_rec = rec;
          log->inflight.store(i + 1, std::memory_order_release);
          run_op(c, rec);
          log->records[i] = rec;
          log->done.store(i + 1, std::memory_order_release);
        }
        return 0;
      }));
    }
    for (int w = 0; w < 2; ++w) {
      std::this_thread::sleep_for(std::chrono::microseconds(100 + rng() % 10000));
      writers[w]->kill(SIGKILL);
      ASSERT_EQ(writers[w]->wait(), 128 + SIGKILL);
    }
    ASSERT_NO_THROW(d.check()) << "round " << round;
    const Contents now = d.items();
    for (int w = 0; w < 2; ++w) {
      const std::vector<Contents> next = test::replay(candidates[w], *logs[w], apply_op);
      const Contents mine = project(now, w);
      const bool ok = std::any_of(next.begin(), next.end(),
                                  [&](const Contents& c) { return same_contents(c, mine); });
      ASSERT_TRUE(ok) << "round " << round << ", writer " << w << ": " << show(mine);
      candidates[w] = {mine};
    }
  }
  release_struct(logs[0]);
  release_struct(logs[1]);
}

// ---- readers in other processes while a writer is killed ----------------------------------

// A value that names its key and version, so a torn or misplaced value is seen.
std::string reader_value(int64_t k, uint64_t ver) {
  std::string v = std::to_string(k) + ":" + std::to_string(ver) + ":";
  v.append((k * 37 + ver) % 3000, static_cast<char>('a' + (k + ver) % 26));
  return v + "#";
}
bool valid_value(int64_t k, const Item& v) {
  const std::string* s = std::get_if<std::string>(&v);
  if (s == nullptr) return false;
  const size_t a = s->find(':'), b = s->find(':', a + 1);
  if (a == std::string::npos || b == std::string::npos) return false;
  if (std::stoll(s->substr(0, a)) != k) return false;
  return *s == reader_value(k, std::stoull(s->substr(a + 1, b - a - 1)));
}

struct ReaderBoard {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads[2] = {};
  std::atomic<uint64_t> walks[2] = {};
};

TEST(DictProcesses, ReadersNeverSeeATornValueAndKeepReadingWhileTheWriterIsDead) {
  ScopedRuntimeDir dir;
  Dict d = Dict::create(Dict::Options{64 * 1024});
  const std::string handle = d.handle();
  ReaderBoard* board = shared_struct<ReaderBoard>();
  std::vector<std::unique_ptr<ChildProcess>> readers;
  for (int r = 0; r < 2; ++r) {
    readers.push_back(std::make_unique<ChildProcess>([&, r] {
      after_fork_child();
      Dict c = Dict::attach(handle);
      std::mt19937_64 rng(static_cast<uint64_t>(r) + 1);
      while (!board->stop.load()) {
        for (int i = 0; i < 200; ++i) {
          const int64_t k = static_cast<int64_t>(rng() % 300);
          const std::optional<Item> v = c.get(I(k));
          if (v && !valid_value(k, *v)) return 2;
          board->reads[r].fetch_add(1);
        }
        std::set<int64_t> seen;
        Dict::Cursor cur = c.cursor();
        Item k, v;
        uint64_t n = 0;
        while (cur.next(&k, &v)) {
          const int64_t key = std::get<int64_t>(k);
          if (!seen.insert(key).second) return 3;  // a key twice
          if (!valid_value(key, v)) return 4;
          if (++n > 300) return 5;  // more keys than can exist: a loop
        }
        board->walks[r].fetch_add(1);
      }
      return 0;
    }));
  }
  std::mt19937_64 rng(7);
  for (int w = 0; w < 6; ++w) {
    const uint64_t wseed = rng();
    ChildProcess writer([&] {
      after_fork_child();
      Dict c = Dict::attach(handle);
      std::mt19937_64 r(wseed);
      for (uint64_t ver = 0;; ++ver) {
        const int64_t k = static_cast<int64_t>(r() % 300);
        const uint64_t what = r() % 100;
        if (what < 70) {
          c.set(I(k), S(reader_value(k, ver)));
        } else if (what < 99) {
          c.erase(I(k));
        } else if (r() % 20 == 0) {
          c.clear();
        }
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 200));
    writer.kill(SIGKILL);
    ASSERT_EQ(writer.wait(), 128 + SIGKILL);
    // Readers go on while the dead writer's operation is unrepaired.
    const uint64_t r0 = board->reads[0].load(), r1 = board->reads[1].load();
    const uint64_t w0 = board->walks[0].load(), w1 = board->walks[1].load();
    EXPECT_TRUE(test::wait_until([&] {
      return board->reads[0].load() > r0 + 1000 && board->reads[1].load() > r1 + 1000 &&
             board->walks[0].load() > w0 + 2 && board->walks[1].load() > w1 + 2;
    })) << "readers stopped after writer " << w << " was killed";
  }
  board->stop = true;
  for (auto& r : readers) EXPECT_EQ(r->wait(), 0);
  ASSERT_NO_THROW(d.check());
  for (const auto& [k, v] : d.items()) EXPECT_TRUE(valid_value(std::get<int64_t>(k), v));
  release_struct(board);
}

TEST(DictProcesses, AHolderKilledWithTheLockHeldIsReportedAndTheDictStaysUsable) {
  ScopedRuntimeDir dir;
  holder_killed_with_the_lock_held<Dict>([](Dict& d, int64_t v) { d.set(I(v), I(v)); },
                                         [](const Dict& d, int64_t v) { return d.get(I(v)); });
}

}  // namespace
}  // namespace shoal
