// src/codec/number.cpp — numeric key equality as Python's == (include/shoal/codec.hpp).
//
// Two numbers are one key exactly when Python says they are equal, across the three forms an
// image stores: an int64, a big int's canonical bytes, a double. An integral double is compared
// with a big int through the double's exact integer bytes, never by rounding the int.
#include <cmath>
#include <cstring>

#include "shoal/codec.hpp"

namespace shoal::codec {
namespace {

// Drops high bytes that only repeat the sign: the minimal two's complement length.
size_t canonical_len(const uint8_t* b, size_t n) {
  while (n > 1) {
    const uint8_t top = b[n - 1];
    const bool next_neg = (b[n - 2] & 0x80) != 0;
    if ((top == 0x00 && !next_neg) || (top == 0xFF && next_neg)) {
      --n;
    } else {
      break;
    }
  }
  return n;
}

int64_t int_from_le(const uint8_t* b, size_t n) {  // PRECONDITION: 1 <= n <= 8
  uint64_t u = (b[n - 1] & 0x80) ? ~uint64_t{0} : 0;
  for (size_t i = n; i-- > 0;) u = (u << 8) | b[i];
  return static_cast<int64_t>(u);
}

constexpr double kTwo63 = 9223372036854775808.0;

// The integer value of a finite integral double as minimal two's complement bytes.
size_t int_bytes_of_double(double d, uint8_t (&out)[144]) {
  std::memset(out, 0, sizeof out);
  const bool neg = d < 0;
  int e = 0;
  const double m = std::frexp(std::fabs(d), &e);  // |d| = m * 2**e, 0.5 <= m < 1
  auto mant = static_cast<uint64_t>(std::ldexp(m, 53));
  int shift = e - 53;
  if (shift < 0) {
    mant >>= -shift;  // exact: d is integral
    shift = 0;
  }
  const size_t byte = static_cast<size_t>(shift) / 8;
  const uint64_t v = mant << (shift % 8);  // < 2**61
  for (size_t k = 0; k < 8; ++k) out[byte + k] = static_cast<uint8_t>(v >> (8 * k));
  size_t n = byte + 9;  // a zero top byte: room for the sign
  if (neg) {
    unsigned carry = 1;
    for (size_t k = 0; k < n; ++k) {
      const unsigned x = static_cast<uint8_t>(~out[k]) + carry;
      out[k] = static_cast<uint8_t>(x);
      carry = x >> 8;
    }
  }
  return canonical_len(out, n);
}

bool float_equals(double d, const Number& x) {
  if (x.kind == Number::kFloat) return d == x.f;
  if (!std::isfinite(d) || d != std::trunc(d)) return false;
  if (x.kind == Number::kInt) return d >= -kTwo63 && d < kTwo63 && static_cast<int64_t>(d) == x.i;
  if (std::fabs(d) < kTwo63) return false;  // a canonical bigint of > 8 bytes is beyond int64
  uint8_t buf[144];
  const size_t n = int_bytes_of_double(d, buf);
  return n == x.n && std::memcmp(buf, x.b, n) == 0;
}

}  // namespace

bool numbers_equal(const Number& a, const Number& b) noexcept {
  if (a.kind == Number::kFloat) return float_equals(a.f, b);
  if (b.kind == Number::kFloat) return float_equals(b.f, a);
  if (a.kind != b.kind) return false;  // an int64 never equals a canonical bigint
  if (a.kind == Number::kInt) return a.i == b.i;
  return a.n == b.n && std::memcmp(a.b, b.b, a.n) == 0;
}

size_t canonical_int_len(std::span<const std::byte> bytes) noexcept {
  return canonical_len(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

Number Number::of_bigint(std::span<const std::byte> bytes) noexcept {
  const auto* b = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = canonical_len(b, bytes.size());
  if (n == 0) return of_int(0);  // an empty (corrupt) bigint reads as 0
  if (n <= 8) return of_int(int_from_le(b, n));
  Number x;
  x.kind = kBig;
  x.b = b;
  x.n = n;
  return x;
}

}  // namespace shoal::codec
