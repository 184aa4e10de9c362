// include/shoal/error.hpp — shoal's error vocabulary: Errc, Status, Result<T>, exceptions.
//
// The core returns Status/Result<T> and is noexcept wherever it holds a lock or is midway
// through changing shared state (an exception thrown there would leave other processes with a
// half-updated structure). Only the public edge (Segment::create, attach, ...) throws, and it
// throws exactly one exception class per Errc, generated from the table below, so the Python
// binding can translate each one to its ShoalError subclass in one place
// (python/bindings/errors.cpp).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shoal {

/// The closed list of failures a caller or the environment can cause. One line each: when.
/// The values travel in the broker's replies: append new codes before kCount, never renumber.
enum class Errc : uint8_t {
  kOk = 0,
  kInvalidArgument,  // a bad value (absurd size, bad name...) detected before touching shared memory
  kExists,           // a named object with that name already exists
  kNotFound,         // a named object does not exist
  kIncompatible,     // magic / format version / layout fingerprint of a segment or peer differ
  kCorrupt,          // an invariant failed on data read from shared memory
  kOutOfSpace,       // the request exceeds MemAvailable, the cgroup limit or SHOAL_MAX_BYTES
  kTimeout,          // a deadline passed that is not a lock's (broker start-up, an answer)
  kOwnerDied,        // a lock was acquired but its previous holder died holding it
  kStaleHandle,      // the object a handle names is gone, or its session is not running
  kSessionGone,      // the session broker died: existing mappings work, new attaches cannot
  kDecode,           // a malformed, truncated or forged handle, blob or file
  kPermission,       // the runtime directory or broker belongs to another user
  kSystem,           // an OS call failed in a way none of the above describes (errno in message)
  kLockTimeout,      // a lock, semaphore, condition, event or barrier wait passed its deadline
  kCount,            // the end marker, not an error: tables indexed by Errc are kCount long and
                     // checked full, so a new code without its exception class fails loudly
};

/// A short, stable name for an Errc ("kOutOfSpace" -> "out_of_space").
std::string_view errc_name(Errc c) noexcept;

/// An Errc plus a message that says what was expected, what was found and what to do.
class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  Status(Errc code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() noexcept { return {}; }

  bool is_ok() const noexcept { return code_ == Errc::kOk; }
  explicit operator bool() const noexcept { return is_ok(); }
  Errc code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

  /// Throws the exception class that matches code(); no-op when ok.
  void throw_if_error() const;

 private:
  Errc code_ = Errc::kOk;
  std::string message_;
};

/// A value or a Status. Deliberately small: has_value / value / status / take.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}              // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {}       // NOLINT(google-explicit-constructor)
  Result(Errc code, std::string msg) : v_(Status(code, std::move(msg))) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }
  const T& value() const& { return std::get<0>(v_); }
  T& value() & { return std::get<0>(v_); }
  Status status() const { return has_value() ? Status::ok() : std::get<1>(v_); }
  /// Moves the value out, or throws the matching exception.
  T take() {
    if (!has_value()) std::get<1>(v_).throw_if_error();
    return std::move(std::get<0>(v_));
  }

 private:
  std::variant<T, Status> v_;
};

/// Base of every exception the public C++ API throws.
class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

// One exception class per Errc, named exactly as its Python counterpart, so one name means one error on both sides.
#define SHOAL_DEFINE_ERROR(Name, Code) \
  class Name : public Error {          \
   public:                             \
    explicit Name(const std::string& what) : Error(Errc::Code, what) {} \
  };
SHOAL_DEFINE_ERROR(InvalidArgumentError, kInvalidArgument)
SHOAL_DEFINE_ERROR(SegmentExistsError, kExists)
SHOAL_DEFINE_ERROR(SegmentNotFoundError, kNotFound)
SHOAL_DEFINE_ERROR(IncompatibleSegmentError, kIncompatible)
SHOAL_DEFINE_ERROR(CorruptSegmentError, kCorrupt)
SHOAL_DEFINE_ERROR(OutOfSpaceError, kOutOfSpace)
SHOAL_DEFINE_ERROR(OwnerDiedError, kOwnerDied)
SHOAL_DEFINE_ERROR(StaleHandleError, kStaleHandle)
SHOAL_DEFINE_ERROR(SessionGoneError, kSessionGone)
SHOAL_DEFINE_ERROR(DecodeError, kDecode)
SHOAL_DEFINE_ERROR(AccessDeniedError, kPermission)
SHOAL_DEFINE_ERROR(ShoalOSError, kSystem)
#undef SHOAL_DEFINE_ERROR

/// Any deadline that passed (Python: ShoalTimeoutError, a TimeoutError).
class ShoalTimeoutError : public Error {
 public:
  explicit ShoalTimeoutError(const std::string& what) : Error(Errc::kTimeout, what) {}

 protected:
  ShoalTimeoutError(Errc code, const std::string& what) : Error(code, what) {}
};
/// A wait for a synchronisation primitive that passed its deadline.
class LockTimeoutError : public ShoalTimeoutError {
 public:
  explicit LockTimeoutError(const std::string& what)
      : ShoalTimeoutError(Errc::kLockTimeout, what) {}
};

/// Throws the exception class for `code` (never returns). kOk is a bug: aborts.
[[noreturn]] void throw_error(Errc code, const std::string& message);

/// "what: strerror(errno) (errno N)" — for kSystem messages.
std::string errno_message(std::string_view what, int err);

}  // namespace shoal

/// Checks a process-local invariant; a failure is a shoal bug, so the process aborts with
/// file:line. Never used on data read from shared memory (that is kCorrupt, not a bug).
#define SHOAL_ASSERT(cond)                                                 \
  do {                                                                     \
    if (!(cond)) ::shoal::detail::assert_fail(#cond, __FILE__, __LINE__); \
  } while (0)

namespace shoal::detail {
[[noreturn]] void assert_fail(const char* expr, const char* file, int line) noexcept;
}  // namespace shoal::detail
