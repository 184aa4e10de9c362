// tests/cpp/multiprocess/kill_walk.hpp — the crash-injection harnesses that the Dict's and the
// List's multiprocess tests (dict_test.cpp, list_test.cpp) share, so that both containers are
// put through the same kills and the same checks:
//   kill_walk             a writer SIGKILLed at every step of one write in turn (the container's
//                         kill hook, detail::dict_kill_at / detail::list_kill_at), and every
//                         third time the next writer killed inside its recovery too;
//   ref_kill_walk         the same for a write that stores or drops references to other
//                         objects, checking that what the container names stays alive and that
//                         nothing outlives the container;
//   random_kills          a writer SIGKILLed at a random time in each round while it journals its
//                         operations in shared memory, the container checked against a replay of
//                         the journal (what returned, plus or minus the one in flight);
//   holder_killed_with_the_lock_held
//                         a process killed while it holds the write lock, twice, mid-update.
// C is shoal::Dict or shoal::List. What the harnesses use of it: C::create(C::Options),
// C::attach(handle), handle(), lock(), unlock(), try_lock(), lock_depth(),
// held_by_this_thread(), check() (a report with `size`), items() and stats().recoveries.
//
// Failures: ASSERT_* inside a harness ends the harness (gtest returns from the function), so a
// test calls a harness as ASSERT_NO_FATAL_FAILURE(kill_walk(...)) and stops there, as it did
// when the loop was its own body; EXPECT_* failures let the walk go on.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "shoal/dict.hpp"
#include "shoal/session.hpp"
#include "test_support.hpp"

namespace shoal::test {

/// An int from the environment (a torture's rounds or seed), `fallback` when unset or empty.
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

/// The values a container's items() holds: a Dict's values, a List's elements.
inline std::vector<Item> values_of(const std::vector<std::pair<Item, Item>>& items) {
  std::vector<Item> out;
  for (const auto& kv : items) out.push_back(kv.second);
  return out;
}
inline const std::vector<Item>& values_of(const std::vector<Item>& items) { return items; }

// ---- every step of one write -----------------------------------------------------------------

template <class C>
struct KillWalk {
  const char* name;               // the write, in every failure message
  std::atomic<int64_t>* kill_at;  // the container's hook: the writer SIGKILLs itself at step n
  int64_t max_steps;              // n runs from 1 while below this; the write must complete first
  int more_kills_than;            // the write has more steps than this (so the hook counts them)
  bool kill_recoveries;           // every third step, the next writer is killed in its recovery
  std::function<C()> make;        // parent: a new container in the state before the write
  std::function<void(C&)> write;  // child: the write, killed at step n
  // Parent, after the writer's child (and the recovery's) has ended, killed or not: what must
  // hold of the container made for step n. It is the next writer: it runs the recovery.
  std::function<void(C&, int64_t n)> check;
  // Parent, once the container made for step n is gone (optional).
  std::function<void(int64_t n)> after_release = {};
};

/// Kills a writer at step 1, 2, ... of `w.write` in turn, each time on a new container
/// (`w.make`), until a run completes; checks each outcome with `w.check`.
template <class C>
void kill_walk(const KillWalk<C>& w) {
  bool completed = false;
  int killed = 0;
  for (int64_t n = 1; !completed && n < w.max_steps; ++n) {
    {
      C c = w.make();
      const std::string handle = c.handle();
      ChildProcess child([&] {
        after_fork_child();
        C mine = C::attach(handle);
        w.kill_at->store(n);
        w.write(mine);
        w.kill_at->store(0);
        return 0;
      });
      const int rc = child.wait();
      if (rc == 0) {
        completed = true;
      } else {
        ASSERT_EQ(rc, 128 + SIGKILL) << w.name << " step " << n;
        ++killed;
        // Every third time, the next writer is killed in the middle of its recovery too.
        if (w.kill_recoveries && n % 3 == 0) {
          ChildProcess again([&] {
            after_fork_child();
            C mine = C::attach(handle);
            w.kill_at->store(n % 6 == 0 ? 1 : 2);
            mine.lock();
            mine.unlock();
            w.kill_at->store(0);
            return 0;
          });
          const int rc2 = again.wait();
          ASSERT_TRUE(rc2 == 0 || rc2 == 128 + SIGKILL) << rc2;
        }
      }
      ASSERT_NO_FATAL_FAILURE(w.check(c, n)) << w.name << " killed at step " << n;
    }
    if (w.after_release) {
      ASSERT_NO_FATAL_FAILURE(w.after_release(n)) << w.name << " step " << n;
    }
  }
  EXPECT_TRUE(completed) << w.name;
  EXPECT_GT(killed, w.more_kills_than) << w.name << ": the write has more steps than that";
}

// ---- every step of a write that stores or drops references -------------------------------

template <class C>
struct RefKillWalk {
  const char* name;               // the write, in every failure message
  const char* who;                // "dict", "list"
  std::atomic<int64_t>* kill_at;  // as KillWalk's
  int64_t max_steps;
  int more_kills_than;
  bool kill_recoveries;
  // Parent: stores two references to `target` (ObjectRef::to(target), each) and a plain value
  // into a new container, the state before the write.
  std::function<void(C&, const Segment& target)> hold;
  std::function<void(C&)> write;  // child: the write, killed at step n
  // Parent: what it takes for a reference the container holds to be alive (an EXPECT).
  std::function<void(C&, const ObjectRef&, int64_t n)> expect_alive;
};

/// kill_walk for R1-R3 of dict_layout.hpp (shared through item_refs.hpp): the target is a new
/// segment for each step that only the container holds once `hold` has run. After the next
/// writer's recovery (check(), R2 included) every reference a live item holds names a living
/// object, which the broker still lists, and once the container goes the broker frees the
/// target (a death between a reference's state store and its drop may keep it until then, never
/// longer).
template <class C>
void ref_kill_walk(const RefKillWalk<C>& r) {
  std::string target_bare;  // the target of the step under way, made anew for each
  const KillWalk<C> walk{
      .name = r.name,
      .kill_at = r.kill_at,
      .max_steps = r.max_steps,
      .more_kills_than = r.more_kills_than,
      .kill_recoveries = r.kill_recoveries,
      .make =
          [&] {
            C c = C::create();
            Segment t = Segment::create(4096);
            target_bare = t.handle(false);
            r.hold(c, t);
            return c;  // only the container holds the target now
          },
      .write = r.write,
      .check =
          [&](C& c, int64_t n) {
            ASSERT_NO_THROW(c.check()) << r.name << " killed at step " << n;  // R2 included
            int refs = 0;
            const auto items = c.items();
            for (const Item& v : values_of(items)) {
              if (const auto* ref = std::get_if<ObjectRef>(&v)) {
                ++refs;
                r.expect_alive(c, *ref, n);
              }
            }
            if (refs > 0) {
              EXPECT_EQ(objects_still_listed(target_bare), 1) << r.name << " step " << n;
            }
          },
      // The container has gone: the broker drops its references.
      .after_release =
          [&](int64_t n) {
            EXPECT_TRUE(wait_until([&] { return objects_still_listed(target_bare) == 0; }))
                << r.name << " killed at step " << n << ": the target outlived the " << r.who;
          },
  };
  ASSERT_NO_FATAL_FAILURE(kill_walk(walk));
}

// ---- random kills of a journaling writer -----------------------------------------------------

/// One writer's journal, in memory its parent shares (shared_struct): records[0, done) are the
/// operations that returned, inflight_rec the one begun last when inflight == done + 1.
template <class Rec, uint32_t Max>
struct OpLog {
  static constexpr uint32_t kMax = Max;
  std::atomic<uint64_t> done{0};      // records[0, done) returned
  std::atomic<uint64_t> inflight{0};  // index + 1 of the operation begun last
  Rec inflight_rec;
  Rec records[kMax];
};

/// The states a container may be in after the writer journaling in `log` died: each of
/// `candidates` with the operations that returned applied (`apply(model, rec)`), and, when one
/// was in flight, each of those with it applied too.
template <class Contents, class Log, class Apply>
std::vector<Contents> replay(const std::vector<Contents>& candidates, const Log& log,
                             Apply&& apply) {
  const uint64_t done = log.done.load();
  const bool in_flight = log.inflight.load() == done + 1;
  std::vector<Contents> next;
  for (Contents c : candidates) {
    for (uint64_t i = 0; i < done; ++i) apply(c, log.records[i]);
    next.push_back(c);
    if (in_flight) {
      apply(c, log.inflight_rec);
      next.push_back(c);
    }
  }
  return next;
}

template <class C, class Rec>
struct RandomKills {
  using Contents = decltype(std::declval<const C&>().items());
  const char* name;        // "dict", "list": the lines it prints
  const char* rounds_env;  // rounds: this variable, else default_rounds
  int default_rounds;
  const char* seed_env;    // the seed of every round's choices: this variable, else default_seed
  int default_seed;
  std::function<Rec(std::mt19937_64&, uint32_t round, uint32_t i)> next_op;  // child: the next op
  std::function<void(C&, const Rec&)> run;              // child: runs it on the container
  std::function<void(Contents&, const Rec&)> model;     // parent: runs it on a model
  std::function<bool(const Contents&, const Contents&)> same;  // the container's equality
  std::function<std::string(const Contents&)> show;     // for failure messages
};

/// Each round a child attaches the container and runs random operations, journaling each in
/// the shared log, until it is SIGKILLed at a random time; every second round (and the last) the
/// parent checks the container (the recovery, check()) and that its contents are one of the
/// states the journals since the last check allow. The other rounds leave the repair to the
/// next child, which may be killed in its recovery.
template <class C, class Rec, uint32_t kMaxOps>
void random_kills(const RandomKills<C, Rec>& t) {
  using Contents = typename RandomKills<C, Rec>::Contents;
  using Log = OpLog<Rec, kMaxOps>;
  const int rounds = env_int(t.rounds_env, t.default_rounds);
  const uint64_t seed = static_cast<uint64_t>(env_int(t.seed_env, t.default_seed));
  std::printf("%s torture: seed %llu, %d rounds\n", t.name, static_cast<unsigned long long>(seed),
              rounds);
  std::mt19937_64 rng(seed);
  C c = C::create(typename C::Options{64 * 1024});
  const std::string handle = c.handle();
  Log* log = shared_struct<Log>();
  struct Release {
    Log* p;
    ~Release() { release_struct(p); }
  } release{log};
  // The states the container may be in: one, or more while a killed operation is unresolved.
  std::vector<Contents> candidates{Contents{}};
  uint64_t recoveries_before = c.stats().recoveries;
  int kills_mid_op = 0;
  for (int round = 0; round < rounds; ++round) {
    log->done = 0;
    log->inflight = 0;
    const uint64_t child_seed = rng();
    ChildProcess child([&] {
      after_fork_child();
      C mine = C::attach(handle);
      std::mt19937_64 r(child_seed);
      for (uint32_t i = 0; i < Log::kMax; ++i) {
        const Rec rec = t.next_op(r, static_cast<uint32_t>(round), i);
        log->inflight_rec = rec;
        log->inflight.store(i + 1, std::memory_order_release);
        t.run(mine, rec);
        log->records[i] = rec;
        log->done.store(i + 1, std::memory_order_release);
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 20000));
    child.kill(SIGKILL);
    ASSERT_EQ(child.wait(), 128 + SIGKILL);
    candidates = replay(candidates, *log, t.model);
    // Half of the rounds leave the repair to the next child (killed in its recovery, maybe).
    if (round % 2 == 1 || round == rounds - 1) {
      ASSERT_NO_THROW(c.check()) << "round " << round;
      const Contents now = c.items();
      auto it = std::find_if(candidates.begin(), candidates.end(),
                             [&](const Contents& m) { return t.same(m, now); });
      ASSERT_NE(it, candidates.end()) << "round " << round << ": " << t.show(now);
      candidates = {now};
      const uint64_t rec = c.stats().recoveries;
      kills_mid_op += rec > recoveries_before;
      recoveries_before = rec;
    }
  }
  // Not an assertion on timing: most kills land between operations; say how many did not.
  std::printf("%s torture: %d rounds, %d checks found an operation to repair\n", t.name, rounds,
              kills_mid_op);
}

// ---- a lock holder killed --------------------------------------------------------------------

/// A child holds the lock twice (recursively) with a compound update half done (`write(c, 2)`
/// under the lock) and is SIGKILLed: until then another process's try_lock times out while its
/// reads (`read(c, 2)`) go on; after, its lock() reports kOwnerDied at depth 1 (the dead
/// holder's depth is not inherited), and the half-done update stays (a compound update is not
/// rolled back, only single operations are). `write(c, v)` adds an element I(v);
/// `read(c, v)` reads it back.
template <class C>
void holder_killed_with_the_lock_held(
    const std::function<void(C&, int64_t)>& write,
    const std::function<std::optional<Item>(const C&, int64_t)>& read) {
  C c = C::create();
  write(c, 1);
  const std::string handle = c.handle();
  HandlePipe pipe;
  ChildProcess child([&] {
    after_fork_child();
    C mine = C::attach(handle);
    mine.lock();
    write(mine, 2);  // a compound update, half done
    mine.lock();     // and recursively held
    pipe.send("held");
    ::pause();
    return 0;
  });
  ASSERT_EQ(pipe.receive(), "held");
  EXPECT_EQ(c.try_lock(), SyncStatus::kTimeout);
  EXPECT_EQ(*read(c, 2), Item{int64_t{2}});  // reads do not wait
  child.kill(SIGKILL);
  ASSERT_EQ(child.wait(), 128 + SIGKILL);
  EXPECT_EQ(c.lock(), SyncStatus::kOwnerDied);
  EXPECT_EQ(c.lock_depth(), 1u);  // the dead holder's depth is not inherited
  write(c, 3);
  c.unlock();
  EXPECT_FALSE(c.held_by_this_thread());
  EXPECT_EQ(c.check().size, 3u);  // a compound update is not rolled back
}

}  // namespace shoal::test
