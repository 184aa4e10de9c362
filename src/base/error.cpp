#include "shoal/error.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace shoal {

std::string_view errc_name(Errc c) noexcept {
  switch (c) {
    case Errc::kOk: return "ok";
    case Errc::kInvalidArgument: return "invalid_argument";
    case Errc::kExists: return "exists";
    case Errc::kNotFound: return "not_found";
    case Errc::kIncompatible: return "incompatible";
    case Errc::kCorrupt: return "corrupt";
    case Errc::kOutOfSpace: return "out_of_space";
    case Errc::kTimeout: return "timeout";
    case Errc::kOwnerDied: return "owner_died";
    case Errc::kStaleHandle: return "stale_handle";
    case Errc::kSessionGone: return "session_gone";
    case Errc::kDecode: return "decode";
    case Errc::kPermission: return "permission";
    case Errc::kSystem: return "system";
    case Errc::kLockTimeout: return "lock_timeout";
    case Errc::kCount: break;
  }
  return "unknown";
}

void Status::throw_if_error() const {
  if (!is_ok()) throw_error(code_, message_);
}

void throw_error(Errc code, const std::string& message) {
  switch (code) {
    case Errc::kOk: break;
    case Errc::kInvalidArgument: throw InvalidArgumentError(message);
    case Errc::kExists: throw SegmentExistsError(message);
    case Errc::kNotFound: throw SegmentNotFoundError(message);
    case Errc::kIncompatible: throw IncompatibleSegmentError(message);
    case Errc::kCorrupt: throw CorruptSegmentError(message);
    case Errc::kOutOfSpace: throw OutOfSpaceError(message);
    case Errc::kTimeout: throw ShoalTimeoutError(message);
    case Errc::kOwnerDied: throw OwnerDiedError(message);
    case Errc::kStaleHandle: throw StaleHandleError(message);
    case Errc::kSessionGone: throw SessionGoneError(message);
    case Errc::kDecode: throw DecodeError(message);
    case Errc::kPermission: throw AccessDeniedError(message);
    case Errc::kSystem: throw ShoalOSError(message);
    case Errc::kLockTimeout: throw LockTimeoutError(message);
    case Errc::kCount: break;
  }
  detail::assert_fail("throw_error called with Errc::kOk or no error code", __FILE__, __LINE__);
}

std::string errno_message(std::string_view what, int err) {
  std::string s(what);
  s += ": ";
  s += std::strerror(err);
  s += " (errno ";
  s += std::to_string(err);
  s += ")";
  return s;
}

namespace detail {
void assert_fail(const char* expr, const char* file, int line) noexcept {
  std::fprintf(stderr, "shoal: internal invariant failed: %s at %s:%d (this is a bug)\n", expr,
               file, line);
  std::abort();
}
}  // namespace detail

}  // namespace shoal
