// src/platform/spin.hpp — a spin-wait bounded in time, before a futex sleep.
// A waiter that expects a peer on another core to change a word soon polls it for a while
// instead of sleeping at once: a hand-off caught while spinning costs neither side a system
// call, and the waiter is not left to be woken on an idle core (a futex wake-up there costs
// tens of microseconds when the core has gone idle). The budget is in nanoseconds, not in pause
// instructions, because a pause lasts anywhere from a few to 140 cycles depending on the CPU: a
// count of pauses is no budget. Nothing here knows what the word means; the callers' notes
// (docs/design/queue.md, docs/design/robust_mutex.md) say which budgets they chose and why.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "platform/futex.hpp"
#include "platform/platform.hpp"

namespace shoal::platform {

/// Pauses between two reads of CLOCK_MONOTONIC in spin_until: a read is about 20-50 ns (vDSO),
/// a pause 3-50 ns, so the clock costs at most a few per cent of the spin and the spin overruns
/// its budget by at most this many pauses (under a microsecond).
inline constexpr int kSpinClockEvery = 16;

/// Spins until `ready()` returns true, `budget_ns` nanoseconds have passed since the call, or
/// `deadline` has passed, whichever comes first. Returns true as soon as `ready()` is true
/// (it is asked before the first pause, and after every pause), false when time ran out.
///
/// What must stay true:
///  - the spin never outlasts its deadline or budget by more than kSpinClockEvery pauses: a
///    caller with a deadline sees it honoured, and a budget of 0 or a deadline that has passed
///    asks `ready()` at most kSpinClockEvery + 1 times and returns;
///  - `ready()` is a cheap check (a load of a word another process changes): it is called
///    tens of times per microsecond;
///  - nothing here sleeps or yields: the spinner is never interrupted by a signal, so callers
///    keep budgets to microseconds and look for signals in the futex sleep that follows. (A
///    sched_yield inside the spin was measured and left out: with CPU-bound processes on the
///    spinner's core, each yield hands the core to one of them for a whole time slice, and
///    the hand-off's p99 grew from tens of microseconds to milliseconds; docs/design/queue.md.)
template <class Ready>
bool spin_until(Ready&& ready, uint64_t budget_ns, Deadline deadline) noexcept {
  if (ready()) return true;
  if (budget_ns == 0) return false;
  const uint64_t start = monotonic_ns();
  uint64_t end = budget_ns > Deadline::kNeverNs - start ? Deadline::kNeverNs : start + budget_ns;
  if (deadline.ns < end) end = deadline.ns;
  for (;;) {
    for (int i = 0; i < kSpinClockEvery; ++i) {
      cpu_relax();
      if (ready()) return true;
    }
    if (monotonic_ns() >= end) return false;
  }
}

/// A spin budget that adapts to how the spins of one call site in this process end, between
/// min_ns and max_ns. A spin that sees its condition within the budget doubles the budget;
/// one that runs out, or that sees it only after the budget (the spinner was preempted
/// meanwhile), halves it. With idle cores the peer answers while we spin and the budget stays
/// at max_ns: hand-offs cost no system call. With more runnable processes than cores the peer
/// is often not running at all, spins fail, and the budget falls to min_ns, so the waiter
/// sleeps almost at once and leaves its core to the peer (a fixed budget of tens of
/// microseconds was measured to burn all of it on most hand-offs there, tripling latency). A
/// waiter that waits long for a peer with nothing to say (an idle consumer) likewise burns
/// min_ns, not max_ns, per wait once its first spins have failed. How the budget grows back
/// from min_ns: woken_after.
class AdaptiveSpin {
 public:
  /// After this many failed probes in a row a probe is tried once per 1024 wakes that ask for
  /// one (woken_after): its cost, one failed spin of at most max_ns, is then negligible.
  static constexpr uint32_t kMaxProbeBackoff = 1024;

  /// 0 < min_ns <= max_ns: a budget of 0 would never grow again.
  constexpr AdaptiveSpin(uint64_t min_ns, uint64_t max_ns) noexcept
      : min_ns_(min_ns), max_ns_(max_ns), budget_ns_(max_ns) {}

  /// spin_until(ready, the current budget, deadline); then the budget adapts to how it ended.
  /// A spin cut short by the caller's deadline says nothing about the peer and leaves it. A
  /// probe (woken_after) that fails sends the budget back to min_ns, not to half the probe.
  template <class Ready>
  bool spin(Ready&& ready, Deadline deadline) noexcept {
    if (ready()) return true;
    const uint64_t budget = budget_ns_.load(std::memory_order_relaxed);
    const uint64_t start = monotonic_ns();
    const bool seen = spin_until(ready, budget, deadline);
    const uint64_t spent = monotonic_ns() - start;
    if (seen && spent <= budget) {
      if (probing_.exchange(false, std::memory_order_relaxed)) {
        probe_backoff_.store(0, std::memory_order_relaxed);
      }
      budget_ns_.store(std::min(max_ns_, budget * 2), std::memory_order_relaxed);
    } else if (spent >= budget) {
      if (probing_.exchange(false, std::memory_order_relaxed)) {
        const uint32_t b = probe_backoff_.load(std::memory_order_relaxed);
        const uint32_t next = b == 0 ? 1 : std::min(kMaxProbeBackoff, b * 2);
        probe_backoff_.store(next, std::memory_order_relaxed);
        probe_skip_.store(next, std::memory_order_relaxed);
        budget_ns_.store(min_ns_, std::memory_order_relaxed);
      } else {
        budget_ns_.store(std::max(min_ns_, budget / 2), std::memory_order_relaxed);
      }
    }
    return seen;
  }

  /// A spin of this call site ran out, the caller then slept, and the change it waited for
  /// woke it `waited_ns` after the spin began. When that is within max_ns, a spin that long
  /// would have caught it without a sleep. Without this rule a budget that has fallen to min_ns
  /// (the peer was idle or preempted for a while) could only grow back through a change seen
  /// within min_ns; a ping-pong whose replies take longer than that (a Python peer's round is
  /// several us) would sleep on every hand-off for ever, both sides at min_ns.
  ///
  /// When doubling the budget covers waited_ns, it doubles. When it does not, the next spin is
  /// a probe of waited_ns: doubling alone cannot get out once both sides sleep on every
  /// hand-off, because each side's reply then comes only after the other's wake-up (tens of us
  /// from an idle core), every spin of 2-4 us fails and halves what the wake doubled
  /// (measured: a Pipe ping-pong stuck at 0.97 sleeps per round and 57 us one way for 4000
  /// rounds; docs/design/queue.md "The spin budget"). waited_ns includes the sleeper's own
  /// wake-up, so a probe that long covers the peer's wake-up and reply. A probe that sees the
  /// change doubles as any spin; one that fails (the peer had no core: CPU-bound processes on
  /// every core, where wakes come within tens of us too) drops the budget to min_ns, and the
  /// next probe comes only after 1, 2, 4 ... kMaxProbeBackoff such wakes (doubling between
  /// them as before), so that a loaded machine pays for one failed probe in a thousand wakes.
  void woken_after(uint64_t waited_ns) noexcept {
    if (waited_ns > max_ns_) return;
    const uint64_t doubled = std::min(max_ns_, budget_ns_.load(std::memory_order_relaxed) * 2);
    if (waited_ns > doubled) {
      const uint32_t skip = probe_skip_.load(std::memory_order_relaxed);
      if (skip == 0) {
        probing_.store(true, std::memory_order_relaxed);
        budget_ns_.store(waited_ns, std::memory_order_relaxed);
        return;
      }
      probe_skip_.store(skip - 1, std::memory_order_relaxed);
    }
    budget_ns_.store(doubled, std::memory_order_relaxed);
  }

  /// The budget the next spin gets.
  uint64_t budget_ns() const noexcept { return budget_ns_.load(std::memory_order_relaxed); }

 private:
  uint64_t min_ns_;
  uint64_t max_ns_;
  // Process-local, shared by the call site's threads. Relaxed: a lost update only delays the
  // adaptation by one spin (or counts a probe as another thread's plain spin), and any value
  // stored is within [min_ns, max_ns], any backoff within [0, kMaxProbeBackoff].
  std::atomic<uint64_t> budget_ns_;
  std::atomic<bool> probing_{false};        // the next spin is a probe (woken_after)
  std::atomic<uint32_t> probe_backoff_{0};  // wakes skipped after the last failed probe
  std::atomic<uint32_t> probe_skip_{0};     // wakes still to skip before the next probe
};

/// One wait's use of an AdaptiveSpin: it spins once, before its first sleep, and its first
/// futex sleep that the peer ends (woken, or the word changed before it slept) tells the budget
/// how long after the spin began that came (AdaptiveSpin::woken_after). A timed-out slice, an
/// interruption or an error says nothing about the peer. What the queue's waiters and the
/// robust mutex both keep per operation.
class SpinWait {
 public:
  explicit SpinWait(AdaptiveSpin& budget) noexcept : budget_(budget) {}

  /// Whether spin() has run for this wait.
  bool spun() const noexcept { return spun_; }

  /// AdaptiveSpin::spin, noting when it began.
  template <class Ready>
  bool spin(Ready&& ready, Deadline deadline) noexcept {
    spun_ = true;
    start_ns_ = monotonic_ns();
    return budget_.spin(ready, deadline);
  }

  /// After each futex sleep of the wait, with what futex_wait returned.
  void slept(const Result<FutexWait>& r) noexcept {
    if (!slept_ && spun_ && r.has_value() &&
        (r.value() == FutexWait::kWoken || r.value() == FutexWait::kValueChanged)) {
      budget_.woken_after(monotonic_ns() - start_ns_);
    }
    slept_ = true;
  }

 private:
  AdaptiveSpin& budget_;
  bool spun_ = false;
  bool slept_ = false;
  uint64_t start_ns_ = 0;
};

}  // namespace shoal::platform
