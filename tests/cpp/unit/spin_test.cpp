// platform::spin_until, the clock-bounded spin before a futex sleep: it returns as soon as the
// condition holds, and gives up once its budget or the caller's deadline has passed. No test
// asserts a duration: "gave up at the deadline" is proven by the deadline having passed on
// return, and "the budget bounds the spin" by a spin on a word nobody changes returning at all.
#include "platform/spin.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "platform/futex.hpp"
#include "platform/platform.hpp"

namespace shoal::platform {
namespace {

constexpr uint64_t kMinuteNs = 60'000'000'000;

TEST(SpinUntil, ReadyAtOnceReturnsTrueAfterOneLook) {
  int asked = 0;
  EXPECT_TRUE(spin_until([&] { return ++asked > 0; }, kMinuteNs, Deadline::never()));
  EXPECT_EQ(asked, 1);
}

TEST(SpinUntil, ZeroBudgetLooksOnceAndGivesUp) {
  int asked = 0;
  EXPECT_FALSE(spin_until([&] { return ++asked < 0; }, 0, Deadline::never()));
  EXPECT_EQ(asked, 1);
}

TEST(SpinUntil, PassedDeadlineGivesUpWithinOneClockRead) {
  // A huge budget does not outlive a deadline that has passed: at most one stretch of pauses
  // between two clock reads, and the deadline has passed on return.
  int asked = 0;
  const Deadline passed{0};
  EXPECT_FALSE(spin_until([&] { return ++asked < 0; }, kMinuteNs, passed));
  EXPECT_LE(asked, 1 + kSpinClockEvery);
}

TEST(SpinUntil, GivesUpOnceTheDeadlinePassed) {
  const Deadline d = Deadline::after_ns(2'000'000);  // 2 ms
  std::atomic<uint32_t> word{0};
  EXPECT_FALSE(spin_until([&] { return word.load(std::memory_order_acquire) != 0; },
                          kMinuteNs, d));
  EXPECT_TRUE(d.passed());
}

TEST(SpinUntil, GivesUpOnceTheBudgetIsSpent) {
  // A word nobody changes and no deadline: only the budget can end the spin, so returning at
  // all (false) shows it is bounded; the clock has moved by at least the budget meanwhile.
  std::atomic<uint32_t> word{0};
  const uint64_t before = monotonic_ns();
  EXPECT_FALSE(spin_until([&] { return word.load(std::memory_order_acquire) != 0; }, 1'000'000,
                          Deadline::never()));
  EXPECT_GE(monotonic_ns() - before, uint64_t{1'000'000});
}

TEST(SpinUntil, HugeBudgetDoesNotOverflowTheEnd) {
  // start + budget would wrap past 2**64: the end saturates at never rather than wrapping to a
  // time already passed (which would give up at once, without the deadline passing).
  std::atomic<uint32_t> word{0};
  const Deadline d = Deadline::after_ns(1'000'000);
  EXPECT_FALSE(spin_until([&] { return word.load(std::memory_order_acquire) != 0; },
                          Deadline::kNeverNs, d));
  EXPECT_TRUE(d.passed());
}

TEST(SpinUntil, ReturnsTrueWhenAnotherThreadChangesTheWord) {
  // The budget and the deadline are a minute away: only the change can end this spin in time
  // for the test, and it must be reported as a change, not as time running out.
  std::atomic<uint32_t> word{0};
  std::atomic<bool> spinning{false};
  std::thread t([&] {
    while (!spinning.load(std::memory_order_acquire)) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    word.store(1, std::memory_order_release);
  });
  const bool changed = spin_until(
      [&] {
        spinning.store(true, std::memory_order_release);
        return word.load(std::memory_order_acquire) != 0;
      },
      kMinuteNs, Deadline::after_ns(kMinuteNs));
  t.join();
  EXPECT_TRUE(changed);
  EXPECT_EQ(word.load(), 1u);
}

TEST(AdaptiveSpin, FailedSpinsHalveTheBudgetDownToTheFloor) {
  AdaptiveSpin s(1'000'000, 8'000'000);  // 1 ms .. 8 ms
  EXPECT_EQ(s.budget_ns(), 8'000'000u);
  std::atomic<uint32_t> word{0};
  const uint64_t want[] = {4'000'000, 2'000'000, 1'000'000, 1'000'000};
  for (uint64_t w : want) {
    EXPECT_FALSE(s.spin([&] { return word.load(std::memory_order_acquire) != 0; },
                        Deadline::never()));
    EXPECT_EQ(s.budget_ns(), w);
  }
}

TEST(AdaptiveSpin, SpinsThatSeeTheChangeDoubleTheBudgetUpToTheCap) {
  // Bring the budget down with one failed spin, then succeed: each spin sees the change on its
  // third look, microseconds in, far inside a budget of 50 ms or more.
  AdaptiveSpin s(50'000'000, 200'000'000);  // 50 ms .. 200 ms
  EXPECT_FALSE(s.spin([] { return false; }, Deadline::never()));
  EXPECT_EQ(s.budget_ns(), 100'000'000u);
  for (uint64_t w : {uint64_t{200'000'000}, uint64_t{200'000'000}}) {
    int asked = 0;
    EXPECT_TRUE(s.spin([&] { return ++asked >= 3; }, Deadline::never()));
    EXPECT_EQ(s.budget_ns(), w);
  }
}

TEST(AdaptiveSpin, ASpinCutShortByTheDeadlineLeavesTheBudget) {
  AdaptiveSpin s(1'000'000, 60'000'000'000);
  EXPECT_FALSE(s.spin([] { return false; }, Deadline{0}));
  EXPECT_EQ(s.budget_ns(), 60'000'000'000u);
  EXPECT_TRUE(s.spin([] { return true; }, Deadline{0}));  // ready at once: nothing learnt
  EXPECT_EQ(s.budget_ns(), 60'000'000'000u);
}

TEST(AdaptiveSpin, AWakeThatDoublingCoversDoublesTheBudgetAndALaterOneLeavesIt) {
  // A budget at its floor grows back through wakes that a spin of max_ns would have caught,
  // not only through spins that succeed within the floor.
  AdaptiveSpin s(1'000'000, 8'000'000);  // 1 ms .. 8 ms
  for (int i = 0; i < 3; ++i) (void)s.spin([] { return false; }, Deadline::never());
  EXPECT_EQ(s.budget_ns(), 1'000'000u);
  s.woken_after(8'000'001);  // later than any spin would wait: nothing learnt
  EXPECT_EQ(s.budget_ns(), 1'000'000u);
  // Each wake comes within twice the budget: the budget doubles, up to the cap.
  const uint64_t want[] = {2'000'000, 4'000'000, 8'000'000, 8'000'000};
  for (uint64_t w : want) {
    s.woken_after(w);
    EXPECT_EQ(s.budget_ns(), w);
  }
}

// Spins that fail from the cap down to the floor: 8, 4, 2 ms -> 1 ms (14 ms of spinning).
void to_floor(AdaptiveSpin& s) {
  while (s.budget_ns() > 1'000'000) (void)s.spin([] { return false; }, Deadline::never());
}

TEST(AdaptiveSpin, AWakeBeyondTheDoubledBudgetProbesThatLongAndAFailedProbeBacksOff) {
  // Both sides of a ping-pong sleeping on every hand-off: each wake comes 6 ms after the spin
  // began, beyond the doubled floor (2 ms), so doubling alone (1 -> 2 ms, then a failed 2 ms
  // spin halving it back) never gets out. The next spin is a probe of 6 ms instead.
  AdaptiveSpin s(1'000'000, 8'000'000);  // 1 ms .. 8 ms
  to_floor(s);
  // A probe failing means the peer had no core: the budget goes back to the floor, not to
  // half the probe, and the next probes come after 1, 2, 4, ... such wakes, doubling between.
  for (int skipped : {0, 1, 2, 4, 8}) {
    for (int i = 0; i < skipped; ++i) {
      s.woken_after(6'000'000);
      EXPECT_EQ(s.budget_ns(), 2'000'000u) << "skipped " << i << " of " << skipped;
      EXPECT_FALSE(s.spin([] { return false; }, Deadline::never()));  // a plain spin: halves
      EXPECT_EQ(s.budget_ns(), 1'000'000u);
    }
    s.woken_after(6'000'000);
    EXPECT_EQ(s.budget_ns(), 6'000'000u) << "the probe after " << skipped << " skipped wakes";
    EXPECT_FALSE(s.spin([] { return false; }, Deadline::never()));
    EXPECT_EQ(s.budget_ns(), 1'000'000u);
  }
  // A wake that doubling covers doubles as before; one beyond the cap teaches nothing.
  s.woken_after(2'000'000);
  EXPECT_EQ(s.budget_ns(), 2'000'000u);
  s.woken_after(8'000'001);
  EXPECT_EQ(s.budget_ns(), 2'000'000u);
}

TEST(AdaptiveSpin, AProbeThatSeesTheChangeKeepsTheBudgetAndEndsTheBackoff) {
  // Budgets of tens of ms: the successful spins below see the change on their third look,
  // microseconds in, far inside the budget even on a loaded machine.
  AdaptiveSpin s(5'000'000, 40'000'000);  // 5 ms .. 40 ms
  for (int i = 0; i < 3; ++i) (void)s.spin([] { return false; }, Deadline::never());
  EXPECT_EQ(s.budget_ns(), 5'000'000u);
  s.woken_after(30'000'000);
  EXPECT_EQ(s.budget_ns(), 30'000'000u);  // a probe
  EXPECT_FALSE(s.spin([] { return false; }, Deadline::never()));  // fails: the floor, skip 1
  EXPECT_EQ(s.budget_ns(), 5'000'000u);
  s.woken_after(30'000'000);
  EXPECT_EQ(s.budget_ns(), 10'000'000u);  // skipped: doubled
  s.woken_after(30'000'000);
  EXPECT_EQ(s.budget_ns(), 30'000'000u);  // the next probe
  int asked = 0;
  EXPECT_TRUE(s.spin([&] { return ++asked >= 3; }, Deadline::never()));
  EXPECT_EQ(s.budget_ns(), 40'000'000u);  // doubled, to the cap
  // Back at the floor, a wake beyond the doubled budget probes at once: the success ended the
  // backoff.
  for (int i = 0; i < 3; ++i) (void)s.spin([] { return false; }, Deadline::never());
  EXPECT_EQ(s.budget_ns(), 5'000'000u);
  s.woken_after(30'000'000);
  EXPECT_EQ(s.budget_ns(), 30'000'000u);
}

TEST(SpinWait, OnlyTheFirstSleepThePeerEndedGrowsTheBudget) {
  AdaptiveSpin s(1'000'000, 8'000'000);  // 1 ms .. 8 ms: the wakes below come within the cap
  {
    SpinWait w(s);
    EXPECT_FALSE(w.spun());
    EXPECT_FALSE(w.spin([] { return false; }, Deadline{0}));  // cut short: budget left as is
    EXPECT_TRUE(w.spun());
    w.slept(Result<FutexWait>(FutexWait::kTimedOut));  // a slice ran out: nothing learnt
    w.slept(Result<FutexWait>(FutexWait::kWoken));     // not the wait's first sleep
    EXPECT_EQ(s.budget_ns(), 8'000'000u);
  }
  for (int i = 0; i < 3; ++i) (void)s.spin([] { return false; }, Deadline::never());
  EXPECT_EQ(s.budget_ns(), 1'000'000u);
  for (FutexWait r : {FutexWait::kWoken, FutexWait::kValueChanged}) {
    SpinWait w(s);
    const uint64_t before = s.budget_ns();
    (void)w.spin([] { return false; }, Deadline{0});
    w.slept(Result<FutexWait>(r));
    EXPECT_EQ(s.budget_ns(), before * 2);
    w.slept(Result<FutexWait>(r));  // the second sleep of the same wait: nothing more
    EXPECT_EQ(s.budget_ns(), before * 2);
  }
  SpinWait never_spun(s);
  const uint64_t before = s.budget_ns();
  never_spun.slept(Result<FutexWait>(FutexWait::kWoken));  // no spin began: nothing to time
  EXPECT_EQ(s.budget_ns(), before);
}

}  // namespace
}  // namespace shoal::platform
