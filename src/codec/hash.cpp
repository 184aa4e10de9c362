// src/codec/hash.cpp — the key hashes of every shoal table (docs/design/frozen.md, "Hashes").
//
// The numeric hashes are a contract with CPython: hash::of_int(v) == hash(v) for every int,
// of_float(x) == hash(x) for every finite or infinite float (sys.hash_info: modulus 2**61 - 1,
// inf 314159), so one key written by Python and looked up from C++ (or the reverse) agree, and
// 1 / 1.0 / True land in the same slot. of_tuple / of_frozenset are CPython 3.11's tuplehash and
// frozenset_hash over shoal's element hashes. of_bytes is shoal's own; it only has to be the
// same in every process and every build, and good.
#include <cmath>
#include <cstring>

#include "shoal/codec.hpp"

namespace shoal::codec::hash {
namespace {

constexpr int kHashBits = 61;
constexpr uint64_t kModulus = (uint64_t{1} << kHashBits) - 1;  // a Mersenne prime
constexpr int64_t kHashInf = 314159;

// x * 2**k mod (2**61 - 1) for x < 2**61 - 1, 0 <= k < 61: a rotation within 61 bits.
constexpr uint64_t rotate61(uint64_t x, int k) {
  return k == 0 ? x : (((x << k) & kModulus) | (x >> (kHashBits - k)));
}

// -1 is CPython's error return, so no hash is ever -1.
constexpr int64_t fix_minus_one(int64_t h) { return h == -1 ? -2 : h; }

}  // namespace

int64_t of_int(int64_t v) noexcept {
  const bool neg = v < 0;
  const uint64_t mag = neg ? uint64_t{0} - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  const int64_t x = static_cast<int64_t>(mag % kModulus);
  return fix_minus_one(neg ? -x : x);
}

int64_t of_bigint(std::span<const std::byte> b) noexcept {
  const size_t n = b.size();
  if (n == 0) return 0;
  // u = the bytes read as an unsigned number, reduced mod P most significant byte first.
  uint64_t u = 0;
  for (size_t i = n; i-- > 0;) {
    u = rotate61(u, 8) + static_cast<uint8_t>(b[i]);
    if (u >= kModulus) u -= kModulus;
  }
  const bool neg = (static_cast<uint8_t>(b[n - 1]) & 0x80) != 0;
  if (!neg) return fix_minus_one(static_cast<int64_t>(u));
  // |v| = 2**(8n) - u, and 2**(8n) mod P = 2**(8n mod 61).
  const uint64_t pow2 = uint64_t{1} << ((n % kHashBits) * 8 % kHashBits);
  uint64_t mag = pow2 >= u ? pow2 - u : pow2 + kModulus - u;
  if (mag >= kModulus) mag -= kModulus;
  return fix_minus_one(-static_cast<int64_t>(mag));
}

int64_t of_float(double v) noexcept {
  // CPython's _Py_HashDouble, step by step (Python/pyhash.c).
  if (!std::isfinite(v)) {
    if (std::isinf(v)) return v > 0 ? kHashInf : -kHashInf;
    return 0;  // NaN: CPython hashes the object's address; NaN equals nothing anyway
  }
  int e = 0;
  double m = std::frexp(v, &e);
  int sign = 1;
  if (m < 0) {
    sign = -1;
    m = -m;
  }
  uint64_t x = 0;
  while (m != 0.0) {  // 28 bits at a time
    x = ((x << 28) & kModulus) | x >> (kHashBits - 28);
    m *= 268435456.0;  // 2**28
    e -= 28;
    const auto y = static_cast<uint64_t>(m);
    m -= static_cast<double>(y);
    x += y;
    if (x >= kModulus) x -= kModulus;
  }
  e = e >= 0 ? e % kHashBits : kHashBits - 1 - ((-1 - e) % kHashBits);
  x = rotate61(x, e);
  x = x * static_cast<uint64_t>(static_cast<int64_t>(sign));
  return fix_minus_one(static_cast<int64_t>(x));
}

// ---- shoal's byte hash -----------------------------------------------------------------------
// A multiply-fold hash in the wyhash family: 16 bytes per round through a 64x64->128 multiply
// whose halves are xored (so every input bit reaches every output bit in two rounds), three
// independent lanes for long inputs, and a final fold that mixes in the length. The constants
// are hexadecimal digits of pi (any odd-ish constant with balanced bits serves).
namespace {

__extension__ typedef unsigned __int128 U128;

constexpr uint64_t kK0 = 0x243F'6A88'85A3'08D3ULL;
constexpr uint64_t kK1 = 0x1319'8A2E'0370'7345ULL;
constexpr uint64_t kK2 = 0xA409'3822'299F'31D1ULL;
constexpr uint64_t kK3 = 0x082E'FA98'EC4E'6C89ULL;

inline uint64_t fold_mul(uint64_t a, uint64_t b) {
  const U128 r = static_cast<U128>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}
inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // little-endian hosts only (the image format is little-endian too)
}
inline uint64_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

uint64_t of_bytes(uint64_t seed, const void* data, size_t n) noexcept {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t s = seed ^ fold_mul(seed ^ kK0, kK1);
  uint64_t a = 0;
  uint64_t b = 0;
  if (n <= 16) {
    if (n >= 4) {
      // Two overlapping 4-byte reads from each end cover every byte of 4..16.
      const size_t q = (n >> 3) << 2;  // 0 for 4..7, 4 for 8..16
      a = (load32(p) << 32) | load32(p + q);
      b = (load32(p + n - 4) << 32) | load32(p + n - 4 - q);
    } else if (n > 0) {
      a = (uint64_t{p[0]} << 16) | (uint64_t{p[n >> 1]} << 8) | p[n - 1];
    }
  } else {
    size_t i = n;
    if (i > 48) {
      uint64_t s1 = s;
      uint64_t s2 = s;
      do {
        s = fold_mul(load64(p) ^ kK1, load64(p + 8) ^ s);
        s1 = fold_mul(load64(p + 16) ^ kK2, load64(p + 24) ^ s1);
        s2 = fold_mul(load64(p + 32) ^ kK3, load64(p + 40) ^ s2);
        p += 48;
        i -= 48;
      } while (i > 48);
      s ^= s1 ^ s2;
    }
    while (i > 16) {
      s = fold_mul(load64(p) ^ kK1, load64(p + 8) ^ s);
      p += 16;
      i -= 16;
    }
    a = load64(p + i - 16);  // the last 16 bytes (overlapping what came before)
    b = load64(p + i - 8);
  }
  a ^= kK1;
  b ^= s;
  const U128 r = static_cast<U128>(a) * b;
  a = static_cast<uint64_t>(r);
  b = static_cast<uint64_t>(r >> 64);
  return fold_mul(a ^ kK0 ^ n, b ^ kK1);
}

// ---- CPython 3.11's container hashes (Objects/tupleobject.c, Objects/setobject.c) ------------

int64_t of_tuple(std::span<const uint64_t> item_hashes) noexcept {
  constexpr uint64_t kPrime1 = 11400714785074694791ULL;
  constexpr uint64_t kPrime2 = 14029467366897019727ULL;
  constexpr uint64_t kPrime5 = 2870177450012600261ULL;
  uint64_t acc = kPrime5;
  for (uint64_t lane : item_hashes) {
    acc += lane * kPrime2;
    acc = (acc << 31) | (acc >> 33);
    acc *= kPrime1;
  }
  acc += item_hashes.size() ^ (kPrime5 ^ 3527539ULL);
  if (acc == UINT64_MAX) return 1546275796;
  return static_cast<int64_t>(acc);
}

int64_t of_frozenset(std::span<const uint64_t> item_hashes) noexcept {
  auto shuffle = [](uint64_t h) { return ((h ^ 89869747ULL) ^ (h << 16)) * 3644798167ULL; };
  // CPython xors shuffle(hash) over its whole table, then cancels the empty (hash 0) and
  // dummy slots; what remains is exactly the xor over the elements.
  uint64_t h = 0;
  for (uint64_t e : item_hashes) h ^= shuffle(e);
  h ^= (static_cast<uint64_t>(item_hashes.size()) + 1) * 1927868237ULL;
  h ^= (h >> 11) ^ (h >> 25);
  h = h * 69069U + 907133923ULL;
  if (h == UINT64_MAX) h = 590923713ULL;
  return static_cast<int64_t>(h);
}

}  // namespace shoal::codec::hash
