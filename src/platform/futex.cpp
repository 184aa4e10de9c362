// src/platform/futex.cpp — the futex(2) calls behind futex.hpp, and Deadline arithmetic.
#include "platform/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <string>

namespace shoal::platform {
namespace {

uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// now + add, or never() when the sum would reach or pass kNeverNs (no finite deadline may
// collide with the "never" encoding).
Deadline saturating_after(uint64_t now, uint64_t add) noexcept {
  if (add >= Deadline::kNeverNs - now) return Deadline::never();
  return Deadline{now + add};
}

std::string word_text(const void* word) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", word);
  return buf;
}

bool aligned(const void* word) noexcept {
  return reinterpret_cast<uintptr_t>(word) % alignof(uint32_t) == 0;
}

Status misaligned(const char* call, const void* word) {
  return {Errc::kInvalidArgument, std::string(call) + ": the futex word at " + word_text(word) +
                                      " is not 4-byte aligned (the kernel requires it)"};
}

// The errno values that are not part of a call's normal outcomes. EINVAL here means a bad
// word or timeout reached the kernel (a shoal bug, or corrupt shared memory handing out a bad
// offset), ENOSYS a kernel without futexes; EFAULT an unmapped word.
Status futex_error(const char* call, const void* word, int err) {
  std::string what = std::string(call) + " on the word at " + word_text(word);
  if (err == EINVAL) return {Errc::kInvalidArgument, errno_message(what, err)};
  return {Errc::kSystem, errno_message(what, err)};
}

long sys_futex(const void* word, int op, uint32_t val, const timespec* timeout,
               uint32_t val3) noexcept {
  // The kernel only reads the word (compares it for WAIT, hashes its address for both).
  return ::syscall(SYS_futex, const_cast<void*>(word), op, val, timeout, nullptr, val3);
}

}  // namespace

// ---- Deadline ------------------------------------------------------------------------------

Result<Deadline> Deadline::after(double seconds) noexcept {
  if (std::isnan(seconds)) {
    return {Errc::kInvalidArgument, "a timeout of NaN seconds has no meaning"};
  }
  uint64_t now = now_ns();
  if (seconds <= 0.0) return Deadline{now};  // includes -inf: already passed
  // 2^64 ns is ~1.845e10 s (584 years). A timeout of 1.8e10 s (570 years) or more is never():
  // no process waits that long, and it takes +inf and 1e300 here before the multiplication
  // below could leave uint64_t's range (converting such a double would be undefined).
  constexpr double kNeverSeconds = 1.8e10;
  if (seconds >= kNeverSeconds) return never();
  // seconds * 1e9 < 1.8e19 < 2^64 here, so the conversion is defined; it truncates toward now.
  return saturating_after(now, static_cast<uint64_t>(seconds * 1e9));
}

Deadline Deadline::after_ns(uint64_t ns) noexcept { return saturating_after(now_ns(), ns); }

bool Deadline::passed() const noexcept { return !is_never() && now_ns() >= ns; }

uint64_t Deadline::remaining_ns() const noexcept {
  if (is_never()) return kNeverNs;
  uint64_t now = now_ns();
  return now >= ns ? 0 : ns - now;
}

// ---- futex -----------------------------------------------------------------------------------

const char* futex_wait_name(FutexWait w) noexcept {
  switch (w) {
    case FutexWait::kWoken: return "woken";
    case FutexWait::kValueChanged: return "value_changed";
    case FutexWait::kTimedOut: return "timed_out";
    case FutexWait::kInterrupted: return "interrupted";
  }
  return "unknown";
}

Result<FutexWait> futex_wait(const std::atomic<uint32_t>* word, uint32_t expected,
                             Deadline deadline) noexcept {
  if (!aligned(word)) return misaligned("futex_wait", word);
  timespec ts{};
  const timespec* timeout = nullptr;  // nullptr: no deadline
  if (!deadline.is_never()) {
    // An absolute CLOCK_MONOTONIC time. tv_sec stays below 2^35, far inside time_t; the kernel
    // clamps a time beyond its own range to "as late as it can represent".
    ts.tv_sec = static_cast<time_t>(deadline.ns / 1000000000ULL);
    ts.tv_nsec = static_cast<long>(deadline.ns % 1000000000ULL);
    timeout = &ts;
  }
  // FUTEX_WAIT_BITSET (not FUTEX_WAIT) because only it takes an absolute timeout; without
  // FUTEX_CLOCK_REALTIME that timeout is on CLOCK_MONOTONIC. No FUTEX_PRIVATE_FLAG: the word
  // is shared between processes. MATCH_ANY pairs it with plain FUTEX_WAKE.
  long rc = sys_futex(word, FUTEX_WAIT_BITSET, expected, timeout, FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return FutexWait::kWoken;
  int err = errno;
  switch (err) {
    case EAGAIN: return FutexWait::kValueChanged;
    case ETIMEDOUT: return FutexWait::kTimedOut;
    case EINTR: return FutexWait::kInterrupted;
    default: return futex_error("futex_wait", word, err);
  }
}

Result<int> futex_wake(const std::atomic<uint32_t>* word, int count) noexcept {
  if (count < 1) {
    return {Errc::kInvalidArgument,
            "futex_wake: count must be at least 1, got " + std::to_string(count)};
  }
  if (!aligned(word)) return misaligned("futex_wake", word);
  // Shared, like the wait (a private wake would never find a waiter of another process).
  long rc = sys_futex(word, FUTEX_WAKE, static_cast<uint32_t>(count), nullptr, 0);
  if (rc < 0) return futex_error("futex_wake", word, errno);
  return static_cast<int>(rc);
}

Result<int> futex_wake_all(const std::atomic<uint32_t>* word) noexcept {
  return futex_wake(word, INT_MAX);
}

}  // namespace shoal::platform
