// shoal::List across real processes: a writer SIGKILLed at every step of every operation (the
// detail::list_kill_at hook) and at random times (a seeded torture loop, `make torture-list` at
// length), two writers at once, readers in other processes that never see a half-done operation
// and keep going while the writer is dead, and a lock holder killed with the lock held. After
// every kill: check() (L1-L7, no block leaked) and the contents equal the operations that
// returned, plus or minus the one in flight.
// The every-step walk, the random-kill loop and the killed holder are kill_walk.hpp's harnesses,
// shared with the Dict's tests.
#include "shoal/list.hpp"
#include "shoal/session.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "containers/list_core.hpp"
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

using Contents = std::vector<Item>;

std::string show(const Contents& c) {
  std::string s = "[";
  for (const Item& v : c) {
    if (s.size() > 1) s += ", ";
    s += item_repr(v).substr(0, 16);
  }
  return s + "]";
}

Item I(int64_t v) { return Item{v}; }
Item S(std::string v) { return Item{std::move(v)}; }
std::string val(int64_t k) { return "value-" + std::to_string(k) + std::string(40, 'x'); }

// ---- every step of every operation ---------------------------------------------------------

struct Scenario {
  const char* name;
  int64_t fill;                   // elements before (strs and ints, alternating)
  std::function<void(List&)> op;  // the operation killed at each step in turn
};

std::vector<Scenario> scenarios() {
  return {
      {"append in place", 3, [](List& l) { l.append(S(val(99))); }},
      {"append that grows", 8, [](List& l) { l.append(S(val(99))); }},
      {"extend", 2, [](List& l) { l.extend({S(val(97)), S(val(98)), I(5)}); }},
      {"extend that grows", 7, [](List& l) { l.extend({S(val(97)), S(val(98)), I(5)}); }},
      {"insert", 5, [](List& l) { l.insert(1, S(val(99))); }},
      {"set", 5, [](List& l) { l.set(2, S(val(99))); }},
      {"pop last", 5, [](List& l) { l.pop(); }},
      {"pop first", 5, [](List& l) { l.pop(0); }},
      {"pop that shrinks", 60, [](List& l) { l.del_slice(Slice{2, std::nullopt, 1}); l.pop(); }},
      {"remove", 6, [](List& l) { l.remove(S(val(2))); }},
      {"clear", 12, [](List& l) { l.clear(); }},
      {"slice assignment", 10, [](List& l) { l.set_slice(Slice{2, 7, 1}, {S(val(90)), I(91)}); }},
      {"extended slice assignment", 10,
       [](List& l) { l.set_slice(Slice{std::nullopt, std::nullopt, -3}, {S(val(90)), I(91), S(val(92)), I(93)}); }},
      {"slice deletion", 10, [](List& l) { l.del_slice(Slice{1, std::nullopt, 2}); }},
      {"reverse", 7, [](List& l) { l.reverse(); }},
      {"permute", 6, [](List& l) { l.permute({5, 0, 4, 1, 3, 2}); }},
  };
}

void fill(List& l, int64_t n) {
  for (int64_t k = 0; k < n; ++k) l.append(k % 2 ? I(k) : S(val(k)));
}

TEST(ListKill, EveryStepOfEveryOperationIsCompletedOrRolledBack) {
  ScopedRuntimeDir dir;
  int scenarios_run = 0;
  for (const Scenario& sc : scenarios()) {
    // For "pop that shrinks" the setup half of op runs killed too: both states are accepted
    // as long as each single operation is whole (checked by the states a kill may leave).
    List ref = List::create();
    fill(ref, sc.fill);
    const Contents before = ref.items();
    sc.op(ref);
    const Contents after = ref.items();
    ref.check();
    const KillWalk<List> walk{
        .name = sc.name,
        .kill_at = &detail::list_kill_at,
        .max_steps = 400,
        .more_kills_than = 3,
        .kill_recoveries = true,
        .make =
            [&] {
              List l = List::create();
              fill(l, sc.fill);
              return l;
            },
        .write = sc.op,
        .check =
            [&](List& l, int64_t n) {
              ASSERT_NO_THROW(l.check()) << sc.name << " killed at step " << n;
              const Contents now = l.items();
              bool ok = now == before || now == after;
              if (!ok && std::string(sc.name) == "pop that shrinks") {
                // The del_slice done, the pop not.
                Contents mid(before.begin(), before.begin() + 2);
                ok = now == mid;
              }
              EXPECT_TRUE(ok) << sc.name << " killed at step " << n << ": " << show(now)
                              << "\nbefore: " << show(before) << "\nafter: " << show(after);
              // The list goes on working.
              l.append(S("later"));
              EXPECT_EQ(*l.get(-1), S("later"));
              l.check();
            },
    };
    ASSERT_NO_FATAL_FAILURE(kill_walk(walk));
    ++scenarios_run;
  }
  EXPECT_EQ(scenarios_run, 16);
}

// ---- random kills of writers in a loop (seeded, bounded) ------------------------------------

struct OpRecord {
  uint32_t op = 0;  // see apply_op
  uint32_t a = 0, b = 0;
  uint32_t round = 0, index = 0, len = 0;
};
using OpLog = test::OpLog<OpRecord, 1 << 15>;

Item value_of(const OpRecord& r) {
  std::string v = "r" + std::to_string(r.round) + "i" + std::to_string(r.index) + ":";
  v.append(r.len, static_cast<char>('a' + (r.round + r.index) % 26));
  return S(std::move(v));
}

// The operation as List runs it (on `l`) or as a model runs it (on `m`): one of the two.
void run_op(List* l, Contents* m, const OpRecord& r) {
  const Item v = value_of(r);
  const int64_t n = l != nullptr ? static_cast<int64_t>(l->size()) : static_cast<int64_t>(m->size());
  (void)n;
  switch (r.op) {
    case 0:  // append
      if (l) l->append(v); else m->push_back(v);
      break;
    case 1:  // extend by three
      if (l) l->extend({v, I(r.a), v}); else m->insert(m->end(), {v, I(r.a), v});
      break;
    case 2: {  // insert at a % (n + 1)
      if (l) {
        l->insert(static_cast<int64_t>(r.a % (l->size() + 1)), v);
      } else {
        m->insert(m->begin() + static_cast<int64_t>(r.a % (m->size() + 1)), v);
      }
      break;
    }
    case 3:  // set a % n
      if (l) {
        if (l->size() > 0) l->set(static_cast<int64_t>(r.a % l->size()), v);
      } else if (!m->empty()) {
        (*m)[r.a % m->size()] = v;
      }
      break;
    case 4:  // pop last
      if (l) l->pop(); else if (!m->empty()) m->pop_back();
      break;
    case 5:  // pop a % n
      if (l) {
        if (l->size() > 0) l->pop(static_cast<int64_t>(r.a % l->size()));
      } else if (!m->empty()) {
        m->erase(m->begin() + static_cast<int64_t>(r.a % m->size()));
      }
      break;
    case 6: {  // del [a % n : a % n + b % 8]
      if (l) {
        const uint64_t sz = l->size();
        if (sz > 0) {
          const int64_t s = static_cast<int64_t>(r.a % sz);
          l->del_slice(Slice{s, s + static_cast<int64_t>(r.b % 8), 1});
        }
      } else if (!m->empty()) {
        const uint64_t s = r.a % m->size();
        const uint64_t e = std::min<uint64_t>(m->size(), s + r.b % 8);
        m->erase(m->begin() + static_cast<int64_t>(s), m->begin() + static_cast<int64_t>(e));
      }
      break;
    }
    case 7:  // reverse
      if (l) l->reverse(); else std::reverse(m->begin(), m->end());
      break;
    default:  // clear
      if (l) l->clear(); else m->clear();
  }
}

OpRecord random_op(std::mt19937_64& r, uint32_t round, uint32_t i) {
  OpRecord rec;
  const uint64_t what = r() % 1000;
  rec.op = what < 350 ? 0 : what < 450 ? 1 : what < 550 ? 2 : what < 700 ? 3 : what < 850 ? 4
           : what < 920 ? 5 : what < 990 ? 6 : what < 998 ? 7 : 8;
  rec.a = static_cast<uint32_t>(r());
  rec.b = static_cast<uint32_t>(r());
  rec.round = round;
  rec.index = i;
  // Log-uniform lengths up to 1 KiB: short encodes (before the intent) leave most of the time
  // to the operations themselves, whose replaces copy and free the whole list.
  rec.len = static_cast<uint32_t>(std::exp2(static_cast<double>(r() % 1000) / 100.0));
  return rec;
}

TEST(ListKill, RandomKillsOfAWriterKeepEveryOperationThatReturned) {
  ScopedRuntimeDir dir;
  random_kills<List, OpRecord, OpLog::kMax>({
      .name = "list",
      .rounds_env = "SHOAL_LIST_TORTURE_ROUNDS",
      .default_rounds = 100,
      .seed_env = "SHOAL_LIST_TORTURE_SEED",
      .default_seed = 15,
      .next_op = random_op,
      .run = [](List& l, const OpRecord& r) { run_op(&l, nullptr, r); },
      .model = [](Contents& m, const OpRecord& r) { run_op(nullptr, &m, r); },
      .same = [](const Contents& a, const Contents& b) { return a == b; },
      .show = show,
  });
}

// Two writers at once, both killed at a random time each round: each appends its own tagged
// values and pops/sets/deletes only at the end it... no: both write anywhere; what must hold is
// that check() passes and every element is a whole value one of them wrote.
bool whole_value(const Item& v) {
  const std::string* s = std::get_if<std::string>(&v);
  if (s == nullptr) return std::holds_alternative<int64_t>(v);
  const size_t colon = s->find(':');
  if (colon == std::string::npos || (*s)[0] != 'r') return false;
  const std::string tail = s->substr(colon + 1);
  return tail.empty() || tail == std::string(tail.size(), tail[0]);
}

TEST(ListKill, RandomKillsOfTwoConcurrentWritersLeaveAConsistentList) {
  ScopedRuntimeDir dir;
  const int rounds = env_int("SHOAL_LIST_TORTURE_ROUNDS", 100) / 2;
  std::mt19937_64 rng(static_cast<uint64_t>(env_int("SHOAL_LIST_TORTURE_SEED", 15)) + 1);
  List l = List::create(List::Options{64 * 1024});
  const std::string handle = l.handle();
  uint64_t appended = 0;
  for (int round = 0; round < rounds; ++round) {
    std::vector<std::unique_ptr<ChildProcess>> writers;
    for (int w = 0; w < 2; ++w) {
      const uint64_t wseed = rng();
      writers.push_back(std::make_unique<ChildProcess>([&, wseed] {
        after_fork_child();
        List c = List::attach(handle);
        std::mt19937_64 r(wseed);
        for (uint32_t i = 0;; ++i) {
          OpRecord rec = random_op(r, static_cast<uint32_t>(round), i);
          if (rec.op == 8) rec.op = 4;  // no clear: the list keeps growing and shrinking
          run_op(&c, nullptr, rec);
        }
        return 0;
      }));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 20000));
    for (auto& w : writers) w->kill(SIGKILL);
    for (auto& w : writers) ASSERT_EQ(w->wait(), 128 + SIGKILL);
    ASSERT_NO_THROW(l.check()) << "round " << round;
    for (const Item& v : l.items()) ASSERT_TRUE(whole_value(v)) << item_repr(v);
    appended += l.size();
  }
  std::printf("list two-writer torture: %d rounds, %llu elements seen\n", rounds,
              static_cast<unsigned long long>(appended));
}

// ---- readers in other processes while a writer is killed ----------------------------------

// The writer keeps the list a run: element i is "<gen>:<i>" for one gen throughout (every
// operation rewrites the whole list in one step, or appends/pops the next/last of the run), so
// a reader's slice copy that mixes two operations is seen.
std::string run_value(uint64_t gen, uint64_t i) {
  return std::to_string(gen) + ":" + std::to_string(i) + std::string(i % 50, '.');
}
bool valid_run(const std::vector<Item>& v) {
  if (v.empty()) return true;
  const std::string* first = std::get_if<std::string>(&v[0]);
  if (first == nullptr) return false;
  const uint64_t gen = std::stoull(first->substr(0, first->find(':')));
  for (uint64_t i = 0; i < v.size(); ++i) {
    if (v[i] != Item{run_value(gen, i)}) return false;
  }
  return true;
}

struct ReaderBoard {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads[2] = {};
};

TEST(ListProcesses, ReadersNeverSeeAHalfDoneOperationAndKeepReadingWhileTheWriterIsDead) {
  ScopedRuntimeDir dir;
  List l = List::create(List::Options{64 * 1024});
  const std::string handle = l.handle();
  ReaderBoard* board = shared_struct<ReaderBoard>();
  std::vector<std::unique_ptr<ChildProcess>> readers;
  for (int r = 0; r < 2; ++r) {
    readers.push_back(std::make_unique<ChildProcess>([&, r] {
      after_fork_child();
      List c = List::attach(handle);
      while (!board->stop.load()) {
        if (!valid_run(c.items())) return 2;
        const std::vector<Item> rev = c.slice(Slice{std::nullopt, std::nullopt, -1});
        if (!valid_run(std::vector<Item>(rev.rbegin(), rev.rend()))) return 3;
        const std::optional<Item> last = c.get(-1);
        if (last && !std::holds_alternative<std::string>(*last)) return 4;
        List::Cursor cur = c.cursor();
        Item v;
        uint64_t n = 0;
        while (cur.next(&v)) {
          if (++n > 100000) return 5;  // a loop
        }
        board->reads[r].fetch_add(1);
      }
      return 0;
    }));
  }
  std::mt19937_64 rng(7);
  for (int w = 0; w < 6; ++w) {
    const uint64_t wseed = rng();
    ChildProcess writer([&] {
      after_fork_child();
      List c = List::attach(handle);
      std::mt19937_64 r(wseed);
      for (uint64_t gen = 1;; ++gen) {
        c.lock();
        const std::vector<Item> now = c.items();
        uint64_t n = now.size();
        uint64_t g = 0;
        if (n > 0) g = std::stoull(std::get<std::string>(now[0]).substr(0, std::get<std::string>(now[0]).find(':')));
        const uint64_t what = r() % 10;
        if (what < 4) {
          c.append(S(run_value(g, n)));  // the run goes on
        } else if (what < 6 && n > 0) {
          c.pop();
        } else {  // a new run in one step: a slice assignment of everything
          std::vector<Item> vs;
          const uint64_t m = r() % 300;
          for (uint64_t i = 0; i < m; ++i) vs.push_back(S(run_value(gen + w * 1000000, i)));
          c.set_slice(Slice{}, vs);
        }
        c.unlock();
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 200));
    writer.kill(SIGKILL);
    ASSERT_EQ(writer.wait(), 128 + SIGKILL);
    const uint64_t r0 = board->reads[0].load(), r1 = board->reads[1].load();
    EXPECT_TRUE(test::wait_until([&] {
      return board->reads[0].load() > r0 + 3 && board->reads[1].load() > r1 + 3;
    })) << "readers stopped after writer " << w << " was killed";
  }
  board->stop = true;
  for (auto& r : readers) EXPECT_EQ(r->wait(), 0);
  ASSERT_NO_THROW(l.check());
  EXPECT_TRUE(valid_run(l.items()));
  release_struct(board);
}

TEST(ListProcesses, AHolderKilledWithTheLockHeldIsReportedAndTheListStaysUsable) {
  ScopedRuntimeDir dir;
  // Element v is appended at index v - 1.
  holder_killed_with_the_lock_held<List>([](List& l, int64_t v) { l.append(I(v)); },
                                         [](const List& l, int64_t v) { return l.get(v - 1); });
}


// ---- references to other objects (R1-R3 of dict_layout.hpp, shared through item_refs.hpp) ------

// A writer killed at every step of a write that stores or drops a reference: after the next
// writer's recovery every reference a live element holds names a living object, and once the
// list goes nothing it referred to is left.
TEST(ListKill, EveryStepOfAReferenceWriteLeavesEveryNamedObjectAlive) {
  ScopedRuntimeDir dir;
  struct RefOp {
    const char* name;
    std::function<void(List&)> op;
  };
  const std::vector<RefOp> ops = {
      {"set over a reference", [](List& l) { l.set(0, I(1)); }},
      {"pop a reference", [](List& l) { (void)l.pop(1); }},
      {"append a reference", [](List& l) { l.append(*l.get(0)); }},
      {"extend by references", [](List& l) { l.extend({*l.get(0), *l.get(1)}); }},
      {"insert a reference", [](List& l) { l.insert(0, *l.get(1)); }},
      {"delete a slice of references", [](List& l) { l.del_slice(Slice{0, 2, 1}); }},
      {"replace a slice by a reference", [](List& l) { l.set_slice(Slice{1, 3, 1}, {*l.get(0)}); }},
      {"clear", [](List& l) { l.clear(); }},
  };
  int ops_run = 0;
  for (const RefOp& ro : ops) {
    const RefKillWalk<List> walk{
        .name = ro.name,
        .who = "list",
        .kill_at = &detail::list_kill_at,
        .max_steps = 300,
        .more_kills_than = 1,
        .kill_recoveries = false,
        .hold =
            [](List& l, const Segment& t) {
              l.append(Item{ObjectRef::to(t)});
              l.append(Item{ObjectRef::to(t)});
              l.append(S("plain"));
            },
        .write = ro.op,
        // items() maps every reference: each is alive.
        .expect_alive = [](List&, const ObjectRef& r, int64_t) { EXPECT_TRUE(r.target.valid()); },
    };
    ASSERT_NO_FATAL_FAILURE(ref_kill_walk(walk));
    ++ops_run;
  }
  EXPECT_EQ(ops_run, 8);
}

}  // namespace
}  // namespace shoal
