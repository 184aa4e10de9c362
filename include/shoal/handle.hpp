// include/shoal/handle.hpp — the small, printable token that names a shared object.
//
// A handle is what crosses process boundaries: pickles, queues, command lines, environment
// variables. It never carries data, only enough to find the object through its session broker:
//
//   shoal1:<session 32 hex>:<object 32 hex>:<pin 16 hex>:<size 16 hex>:<kind 8 hex>:<flags 8 hex>:<crc 8 hex>
//
// Every field is fixed-width lower-case hex, so a handle is exactly kHandleTextSize (133) bytes
// and the parser is a strict, allocation-free scan (fuzzed by fuzz/handle_fuzzer.cpp). The CRC-32
// over everything before the last ':' turns truncation and bit flips into DecodeError; a forged
// handle with a valid CRC names an object the broker does not know and gets StaleHandleError.
// Ids are 128-bit random values from getrandom(2), so a handle cannot be guessed.
//
// `pin` is non-zero when the handle was made for sending: the broker then keeps the object
// alive until one process attaches with this pin or the pin's time-to-live passes
// (SHOAL_PIN_TTL seconds). A zero pin is a plain reference that keeps nothing alive.
//
// A pinned handle may carry an optional hint after those 133 bytes (kHandleHintedTextSize in
// all):
//
//   <133-byte handle>;h1:<broker pid 8 hex>:<broker fd 8 hex>:<crc 8 hex>
//
// the pid of the session's broker and the descriptor number under which it holds the object's
// memfd, when the handle was made. An attacher already connected to that broker opens
// /proc/<pid>/fd/<fd> instead of asking the broker for the descriptor (docs/design/segment.md,
// "Fast attach"). The hint is only a guess: a wrong or stale one costs a fallback to the round
// trip, never a wrong mapping (the segment header's object id is checked). Its CRC covers the
// whole text before its last ':', and the first 133 bytes stay a valid handle on their own, so
// cutting the hint off gives a handle without one. Handles without a hint decode as before.
//
// A *held* handle (flag kHandleHeld, pin 0) is valid while its sender holds the object: it keeps
// nothing alive itself, so it costs no round trip and no pin, and the same text may be sent any
// number of times (Segment::handle(HandleMode::kHeld), docs/design/segment.md, "Held handles").
// It carries the hint too: the broker's descriptor number is the object's for as long as the
// object lives, and the sender's hold keeps it living.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "shoal/error.hpp"
#include "shoal/kind.hpp"  // ObjectKind: what the kind field names

namespace shoal {

/// A 128-bit random identifier (session or object). Zero means "none".
struct Id128 {
  uint64_t hi = 0;
  uint64_t lo = 0;

  bool is_zero() const noexcept { return hi == 0 && lo == 0; }
  friend bool operator==(const Id128&, const Id128&) = default;
  /// 32 lower-case hex digits.
  std::string hex() const;
  /// Parses exactly 32 hex digits.
  static Result<Id128> from_hex(std::string_view s);
  /// A fresh id from getrandom(2); never zero.
  static Id128 random();
};

struct Id128Hash {
  size_t operator()(const Id128& id) const noexcept {
    return static_cast<size_t>(id.hi ^ (id.lo * 0x9E3779B97F4A7C15ULL));
  }
};


/// Handle flags.
inline constexpr uint32_t kHandleReadOnly = 1u << 0;  // the segment is sealed read-only
// Valid while the sender holds the object; no pin (the pin field must be 0).
inline constexpr uint32_t kHandleHeld = 1u << 1;
inline constexpr uint32_t kHandleKnownFlags = kHandleReadOnly | kHandleHeld;

inline constexpr size_t kHandleTextSize = 133;  // without a hint
inline constexpr std::string_view kHandlePrefix = "shoal1:";
inline constexpr std::string_view kHandleHintTag = ";h1:";  // version 1 of the hint
inline constexpr size_t kHandleHintedTextSize = kHandleTextSize + kHandleHintTag.size() + 8 + 1 +
                                                8 + 1 + 8;  // 163
static_assert(kHandleHintedTextSize == 163, "the hinted handle text is ABI");

struct Handle {
  Id128 session;
  Id128 object;
  uint64_t pin = 0;
  uint64_t size = 0;  // usable bytes (the segment's data area)
  uint32_t kind = 0;  // an ObjectKind; decode() refuses one this build does not list
  uint32_t flags = 0;
  // The hint (see above). hint_pid == 0: no hint, and hint_fd is 0. Both are at most INT32_MAX.
  uint32_t hint_pid = 0;  // the broker's pid
  uint32_t hint_fd = 0;   // the broker's descriptor number for the object's memfd

  bool has_hint() const noexcept { return hint_pid != 0; }
  bool held() const noexcept { return (flags & kHandleHeld) != 0; }
  /// The text form above (163 bytes with a hint, 133 without).
  std::string encode() const;
  /// Strict parser; DecodeError on anything but a well-formed handle, with the offset.
  static Result<Handle> decode(std::string_view text) noexcept;
  friend bool operator==(const Handle&, const Handle&) = default;
};

/// CRC-32 (IEEE 802.3 polynomial, as zlib's crc32).
uint32_t crc32(const void* data, size_t n, uint32_t seed = 0) noexcept;

}  // namespace shoal
