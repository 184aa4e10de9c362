// include/shoal/system.hpp — what this machine lets shoal do: memory headroom, runtime dir.
//
// Every anonymous segment is checked against these figures before a byte is reserved, so an
// impossible request fails at creation with OutOfSpaceError instead of SIGBUS or the OOM killer
// later. All functions are thread-safe and read the kernel's figures afresh on each call.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "shoal/error.hpp"

namespace shoal {

struct MemoryInfo {
  uint64_t mem_available = 0;                // /proc/meminfo MemAvailable
  std::optional<uint64_t> cgroup_limit;      // tightest memory.max of this cgroup and ancestors
  std::optional<uint64_t> cgroup_current;    // memory.current of the cgroup with that limit
  std::optional<uint64_t> max_bytes;         // SHOAL_MAX_BYTES, if set
  uint64_t dev_shm_total = 0;                // statvfs(/dev/shm): named objects live there
                                             // unless SHOAL_NAMED_DIR says otherwise
  uint64_t dev_shm_free = 0;
  /// The most one new segment may reserve now: the smaller of the MemAvailable and cgroup
  /// headrooms (SHOAL_MAX_BYTES is per session and checked separately).
  uint64_t headroom() const noexcept;
};

/// Reads the figures above. Never throws: a missing file leaves its field empty.
MemoryInfo memory_info() noexcept;

/// OK if `bytes` more can be reserved now; kOutOfSpace with a message that says which limit
/// refuses it and what to do otherwise. `session_bytes` is what the session already holds
/// (counted against SHOAL_MAX_BYTES).
Status check_capacity(uint64_t bytes, uint64_t session_bytes = 0) noexcept;

/// Whether memfd_create works here (it does on Linux >= 3.17 unless seccomp forbids it).
bool memfd_supported() noexcept;

/// The session runtime directory: $SHOAL_RUNTIME_DIR, else $XDG_RUNTIME_DIR/shoal, else
/// /tmp/shoal-<uid>. With create=true it is made 0700 if missing; either way it must be owned by
/// this user and not accessible to others (kPermission otherwise).
Result<std::string> runtime_dir(bool create) noexcept;

/// Where named objects live: $SHOAL_NAMED_DIR, else /dev/shm/shoal-<uid> (0700).
Result<std::string> named_dir(bool create) noexcept;

/// Parses a byte count such as "1073741824", "512M", "4GiB", "1.5G". Empty on bad input.
std::optional<uint64_t> parse_bytes(const std::string& text) noexcept;

}  // namespace shoal
