// shoal::Dict across real processes: a writer SIGKILLed at every step of every operation (the
// detail::dict_kill_at hook) and at random times (a seeded torture loop), readers in other
// processes that never see a torn value and keep going while the writer is dead, and a lock
// holder killed with the lock held. After every kill: check() (D1-D8, no block leaked) and the
// contents equal the operations that returned, plus or minus the one in flight.
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
#include "test_support.hpp"

namespace shoal {
namespace {

using test::ChildProcess;
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
    bool completed = false;
    int killed = 0;
    for (int64_t n = 1; !completed && n < 200; ++n) {
      Dict d = Dict::create();
      sc.setup(d);
      const std::string handle = d.handle();
      ChildProcess child([&] {
        after_fork_child();
        Dict c = Dict::attach(handle);
        detail::dict_kill_at.store(n);
        sc.op(c);
        detail::dict_kill_at.store(0);
        return 0;
      });
      const int rc = child.wait();
      if (rc == 0) {
        completed = true;
      } else {
        ASSERT_EQ(rc, 128 + SIGKILL) << sc.name << " step " << n;
        ++killed;
        // Every third time, the next writer is killed in the middle of its recovery too.
        if (n % 3 == 0) {
          ChildProcess again([&] {
            after_fork_child();
            Dict c = Dict::attach(handle);
            detail::dict_kill_at.store(n % 6 == 0 ? 1 : 2);
            c.lock();
            c.unlock();
            detail::dict_kill_at.store(0);
            return 0;
          });
          const int rc2 = again.wait();
          ASSERT_TRUE(rc2 == 0 || rc2 == 128 + SIGKILL) << rc2;
        }
      }
      ASSERT_NO_THROW(d.check()) << sc.name << " killed at step " << n;
      const Contents now = d.items();
      EXPECT_TRUE(same_contents(now, before) || same_contents(now, after))
          << sc.name << " killed at step " << n << ": " << show(now) << "\nbefore: " << show(before)
          << "\nafter: " << show(after);
      // The dict goes on working.
      d.set(S("later"), I(1));
      EXPECT_EQ(*d.get(S("later")), I(1));
      d.check();
    }
    EXPECT_TRUE(completed) << sc.name;
    EXPECT_GT(killed, 3) << sc.name << ": the operation has more steps than that";
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
    bool completed = false;
    int killed = 0;
    for (int64_t n = 1; !completed && n < 200; ++n) {
      std::string target_bare;
      {
        Dict d = Dict::create();
        {
          Segment t = Segment::create(4096);
          target_bare = t.handle(false);
          d.set(S("a"), Item{ObjectRef::to(t)});
          d.set(S("b"), Item{ObjectRef::to(t)});
          d.set(S("x"), S(val(1, 1)));
        }  // only the dict holds the target now
        const std::string handle = d.handle();
        ChildProcess child([&] {
          after_fork_child();
          Dict c = Dict::attach(handle);
          detail::dict_kill_at.store(n);
          ro.op(c);
          detail::dict_kill_at.store(0);
          return 0;
        });
        const int rc = child.wait();
        if (rc == 0) {
          completed = true;
        } else {
          ASSERT_EQ(rc, 128 + SIGKILL) << ro.name << " step " << n;
          ++killed;
          if (n % 3 == 0) {  // the recovery killed too, every third time
            ChildProcess again([&] {
              after_fork_child();
              Dict c = Dict::attach(handle);
              detail::dict_kill_at.store(n % 6 == 0 ? 1 : 2);
              c.lock();
              c.unlock();
              detail::dict_kill_at.store(0);
              return 0;
            });
            const int rc2 = again.wait();
            ASSERT_TRUE(rc2 == 0 || rc2 == 128 + SIGKILL) << rc2;
          }
        }
        ASSERT_NO_THROW(d.check()) << ro.name << " killed at step " << n;  // R2 included
        // Every reference a live entry holds maps: its object is alive.
        int refs = 0;
        for (const auto& [k, v] : d.items()) {
          if (const auto* r = std::get_if<ObjectRef>(&v)) {
            ++refs;
            EXPECT_NO_THROW((void)d.attach_ref(*r)) << ro.name << " killed at step " << n;
          }
        }
        if (refs > 0) {
          EXPECT_EQ(test::objects_still_listed(target_bare), 1) << ro.name << " step " << n;
        }
      }  // the dict goes: the broker drops its references
      EXPECT_TRUE(test::wait_until([&] { return test::objects_still_listed(target_bare) == 0; }))
          << ro.name << " killed at step " << n << ": the target outlived the dict";
    }
    EXPECT_TRUE(completed) << ro.name;
    EXPECT_GT(killed, 2) << ro.name;
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
struct OpLog {
  static constexpr uint32_t kMax = 1 << 16;
  std::atomic<uint64_t> done{0};      // records[0, done) returned
  std::atomic<uint64_t> inflight{0};  // index + 1 of the operation begun last
  OpRecord inflight_rec;
  OpRecord records[kMax];
};

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

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

TEST(DictKill, RandomKillsOfAWriterKeepEveryOperationThatReturned) {
  ScopedRuntimeDir dir;
  const int rounds = env_int("SHOAL_DICT_TORTURE_ROUNDS", 120);
  const uint64_t seed = static_cast<uint64_t>(env_int("SHOAL_DICT_TORTURE_SEED", 15));
  std::mt19937_64 rng(seed);
  Dict d = Dict::create(Dict::Options{64 * 1024});
  const std::string handle = d.handle();
  OpLog* log = shared_struct<OpLog>();
  // The states the dict may be in: one, or two while a killed operation is unresolved.
  std::vector<Contents> candidates{Contents{}};
  uint64_t recoveries_before = d.stats().recoveries;
  int kills_mid_op = 0;
  for (int round = 0; round < rounds; ++round) {
    log->done = 0;
    log->inflight = 0;
    const uint64_t child_seed = rng();
    ChildProcess child([&] {
      after_fork_child();
      Dict c = Dict::attach(handle);
      std::mt19937_64 r(child_seed);
      for (uint32_t i = 0; i < OpLog::kMax; ++i) {
        OpRecord rec;
        const uint64_t what = r() % 1000;
        rec.op = what < 600 ? 0 : what < 960 ? 1 : what < 998 ? 3 : 2;
        rec.key = static_cast<int32_t>(r() % 400);
        rec.round = static_cast<uint32_t>(round);
        rec.index = i;
        // Log-uniform lengths up to 64 KiB: big copies and frees make for long operations.
        rec.len = static_cast<uint32_t>(std::exp2(static_cast<double>(r() % 1700) / 100.0));
        log->inflight_rec = rec;
        log->inflight.store(i + 1, std::memory_order_release);
        if (rec.op == 0) c.set(key_of(rec.key), value_of(rec));
        if (rec.op == 1) c.erase(key_of(rec.key));
        if (rec.op == 2) c.clear();
        if (rec.op == 3) c.popitem();
        log->records[i] = rec;
        log->done.store(i + 1, std::memory_order_release);
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 20000));
    child.kill(SIGKILL);
    ASSERT_EQ(child.wait(), 128 + SIGKILL);
    const uint64_t done = log->done.load();
    const bool in_flight = log->inflight.load() == done + 1;
    std::vector<Contents> next;
    for (Contents c : candidates) {
      for (uint64_t i = 0; i < done; ++i) apply_op(c, log->records[i]);
      next.push_back(c);
      if (in_flight) {
        apply_op(c, log->inflight_rec);
        next.push_back(c);
      }
    }
    candidates = std::move(next);
    // Half of the rounds leave the repair to the next child (killed in its recovery, maybe).
    if (round % 2 == 1 || round == rounds - 1) {
      ASSERT_NO_THROW(d.check()) << "round " << round;
      const Contents now = d.items();
      auto it = std::find_if(candidates.begin(), candidates.end(),
                             [&](const Contents& c) { return same_contents(c, now); });
      ASSERT_NE(it, candidates.end()) << "round " << round << ": " << show(now);
      candidates = {now};
      const uint64_t rec = d.stats().recoveries;
      kills_mid_op += rec > recoveries_before;
      recoveries_before = rec;
    }
  }
  release_struct(log);
  // Not an assertion on timing: most kills land between operations; say how many did not.
  std::printf("dict torture: %d rounds, %d checks found an operation to repair\n", rounds, kills_mid_op);
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
          if (rec.op == 0) c.set(key_of(rec.key), value_of(rec));
          if (rec.op == 1) c.erase(key_of(rec.key));
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
      const uint64_t done = logs[w]->done.load();
      const bool in_flight = logs[w]->inflight.load() == done + 1;
      std::vector<Contents> next;
      for (Contents c : candidates[w]) {
        for (uint64_t i = 0; i < done; ++i) apply_op(c, logs[w]->records[i]);
        next.push_back(c);
        if (in_flight) {
          apply_op(c, logs[w]->inflight_rec);
          next.push_back(c);
        }
      }
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
  Dict d = Dict::create();
  d.set(I(1), I(1));
  const std::string handle = d.handle();
  test::HandlePipe pipe;
  ChildProcess child([&] {
    after_fork_child();
    Dict c = Dict::attach(handle);
    c.lock();
    c.set(I(2), I(2));  // a compound update, half done
    c.lock();           // and recursively held
    pipe.send("held");
    ::pause();
    return 0;
  });
  ASSERT_EQ(pipe.receive(), "held");
  EXPECT_EQ(d.try_lock(), SyncStatus::kTimeout);
  EXPECT_EQ(*d.get(I(2)), I(2));  // reads do not wait
  child.kill(SIGKILL);
  ASSERT_EQ(child.wait(), 128 + SIGKILL);
  EXPECT_EQ(d.lock(), SyncStatus::kOwnerDied);
  EXPECT_EQ(d.lock_depth(), 1u);  // the dead holder's depth is not inherited
  d.set(I(3), I(3));
  d.unlock();
  EXPECT_FALSE(d.held_by_this_thread());
  const DictReport r = d.check();
  EXPECT_EQ(r.size, 3u);  // a compound update is not rolled back (only single operations are)
}

}  // namespace
}  // namespace shoal
