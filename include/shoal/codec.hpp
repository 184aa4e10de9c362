// include/shoal/codec.hpp — the one value codec's key rules: hashes and numeric equality.
//
// Every shoal container that looks keys up (frozen tables today, the shared Dict and Set of the
// containers layer next) hashes and compares keys with these functions, so a key written by one
// container, one process or one build is found by any other: Python's numeric hash for
// bool/int/float (so 1, 1.0 and True are one key, as in a dict), shoal's seeded hash for str and
// bytes (Python salts those per process), CPython's tuple and frozenset rules over those. The
// value encoding itself (tags, inline ints, nodes) is described in docs/design/codec.md and
// shoal/detail/frozen_format.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace shoal::codec {

/// The hashes stored in tables. Equal keys hash equal, in every process.
namespace hash {
/// Python's hash() of an int / float / bool (sys.hash_info: modulus 2**61 - 1; -1 becomes -2).
int64_t of_int(int64_t v) noexcept;
int64_t of_bigint(std::span<const std::byte> twos_complement_le) noexcept;
int64_t of_float(double v) noexcept;  // NaN hashes to 0 (Python salts it per object)
/// shoal's seeded hash of bytes (str keys hash their UTF-8 bytes, bytes keys their bytes).
uint64_t of_bytes(uint64_t seed, const void* data, size_t n) noexcept;
/// CPython's tuplehash / frozenset hash rules, over shoal's element hashes.
int64_t of_tuple(std::span<const uint64_t> item_hashes) noexcept;
int64_t of_frozenset(std::span<const uint64_t> item_hashes) noexcept;
/// The hash of None: CPython 3.12's constant hash(None), so that it is the same everywhere.
inline constexpr uint64_t kNoneHash = 0xFCA8'6420ULL;
}  // namespace hash

/// A number as Python's == sees it: an int64, a big int (canonical little-endian two's
/// complement of more than 8 bytes, not owned), or a double.
struct Number {
  enum Kind { kNotNumber, kInt, kBig, kFloat } kind = kNotNumber;
  int64_t i = 0;
  double f = 0;
  const uint8_t* b = nullptr;  // kBig only; the bytes must outlive the Number
  size_t n = 0;

  static Number of_int(int64_t v) noexcept { return {kInt, v, 0, nullptr, 0}; }
  static Number of_float(double v) noexcept { return {kFloat, 0, v, nullptr, 0}; }
  /// Any little-endian two's complement bytes (an empty span reads as 0); a value that fits in
  /// an int64 becomes kInt, so each number has one form.
  static Number of_bigint(std::span<const std::byte> twos_complement_le) noexcept;
};

/// The minimal length of little-endian two's complement bytes: high bytes that only repeat the
/// sign dropped (0 for an empty span). An image stores every big int at this length.
size_t canonical_int_len(std::span<const std::byte> twos_complement_le) noexcept;

/// Python's == between two numbers: 1 == 1.0 == True, 2**60 == 2.0**60, nan != nan.
bool numbers_equal(const Number& a, const Number& b) noexcept;

}  // namespace shoal::codec
