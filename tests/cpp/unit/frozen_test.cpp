// shoal::frozen: hashes against CPython, the builder and every accessor, Python's key equality,
// big tables, corrupt images (truncated, bit-flipped, forged), segments and files, and the
// golden images in tests/data/frozen/v1/.
//
// Golden files: each tests/data/frozen/v1/NAME.shoal is what the builder makes from the
// build_NAME() function below, and NAME.txt is its contents as text (dump() below, after a
// comment block). The test rebuilds each one and requires byte-identical output, then reads
// every value of the stored file back. After a deliberate format change (a new version
// directory, never an edit of v1), regenerate with
//     SHOAL_REGEN_GOLDEN=1 ./unit_tests --gtest_filter='FrozenGolden.*'
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "layout/frozen_layout.hpp"
#include "shoal/frozen.hpp"
#include "test_support.hpp"

namespace shoal::frozen {
namespace {

using Ref = Builder::Ref;
namespace hash = codec::hash;
namespace L = layout;

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<std::byte> le_bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int x : v) out.push_back(static_cast<std::byte>(x));
  return out;
}
// 2**k as two's complement little-endian bytes (negated when `neg`).
std::vector<std::byte> pow2_bytes(int k, bool neg) {
  std::vector<std::byte> b(static_cast<size_t>(k / 8 + 2), std::byte{0});
  b[static_cast<size_t>(k / 8)] = static_cast<std::byte>(1 << (k % 8));
  if (neg) {
    unsigned carry = 1;
    for (auto& x : b) {
      unsigned v = static_cast<uint8_t>(~static_cast<uint8_t>(x)) + carry;
      x = static_cast<std::byte>(v);
      carry = v >> 8;
    }
  }
  return b;
}
std::span<const std::byte> as_span(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

// An image opened on bytes it owns (Values point at the Image, so it must not move).
struct Opened {
  std::vector<std::byte> bytes;
  Image image;
  explicit Opened(std::vector<std::byte> b) : bytes(std::move(b)) {
    image = Image::open(bytes.data(), bytes.size()).take();
  }
  Value root() const { return image.root(); }
};

// ---- hashes: the contract with CPython (values from python3.11 -c 'print(hash(...))') ----------

TEST(FrozenHash, IntsMatchPython) {
  EXPECT_EQ(hash::of_int(0), 0);
  EXPECT_EQ(hash::of_int(1), 1);
  EXPECT_EQ(hash::of_int(-1), -2);
  EXPECT_EQ(hash::of_int(-2), -2);
  EXPECT_EQ(hash::of_int((int64_t{1} << 61) - 1), 0);
  EXPECT_EQ(hash::of_int(int64_t{1} << 61), 1);
  EXPECT_EQ(hash::of_int(-(int64_t{1} << 61)), -2);
  EXPECT_EQ(hash::of_int(int64_t{1} << 60), 1152921504606846976);
  EXPECT_EQ(hash::of_int(std::numeric_limits<int64_t>::min()), -4);
  EXPECT_EQ(hash::of_int(std::numeric_limits<int64_t>::max()), 3);  // 2**63-1 == 4*(2**61-1)+3
}

TEST(FrozenHash, BigIntsMatchPython) {
  EXPECT_EQ(hash::of_bigint(pow2_bytes(70, false)), 512);
  EXPECT_EQ(hash::of_bigint(pow2_bytes(70, true)), -512);
  EXPECT_EQ(hash::of_bigint(pow2_bytes(63, false)), 4);
  EXPECT_EQ(hash::of_bigint(pow2_bytes(63, true)), -4);
  EXPECT_EQ(hash::of_bigint(pow2_bytes(61, true)), -2);  // hash(-2**61) == -2
  EXPECT_EQ(hash::of_bigint(le_bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00})), 7);  // 2**64-1
  // 2**100 + 12345 and -(2**200) + 7
  std::vector<std::byte> a(14, std::byte{0});
  a[12] = std::byte{0x10};
  a[0] = std::byte{0x39};
  a[1] = std::byte{0x30};
  EXPECT_EQ(hash::of_bigint(a), 549755826233);
  std::vector<std::byte> b = pow2_bytes(200, true);
  b[0] = static_cast<std::byte>(static_cast<uint8_t>(b[0]) + 7);  // low byte of -2**200 is 0
  EXPECT_EQ(hash::of_bigint(b), -131065);
  // Any length agrees with of_int on the same value (non-minimal encodings included).
  for (int64_t v : {int64_t{0}, int64_t{-1}, int64_t{5}, int64_t{-123456789}, int64_t{1} << 62,
                    std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()}) {
    std::vector<std::byte> bytes(12);
    for (int i = 0; i < 12; ++i) {
      bytes[static_cast<size_t>(i)] = static_cast<std::byte>(i < 8 ? static_cast<uint64_t>(v) >> (8 * i) : (v < 0 ? 0xff : 0));
    }
    EXPECT_EQ(hash::of_bigint(bytes), hash::of_int(v)) << v;
  }
}

TEST(FrozenHash, FloatsMatchPython) {
  EXPECT_EQ(hash::of_float(0.5), 1152921504606846976);
  EXPECT_EQ(hash::of_float(1.5), 1152921504606846977);
  EXPECT_EQ(hash::of_float(-1.5), -1152921504606846977);
  EXPECT_EQ(hash::of_float(1e300), 1224995262755759164);
  EXPECT_EQ(hash::of_float(1e-300), 482449582752280463);
  EXPECT_EQ(hash::of_float(5e-324), 16777216);
  EXPECT_EQ(hash::of_float(-0.0), 0);
  EXPECT_EQ(hash::of_float(0.0), 0);
  EXPECT_EQ(hash::of_float(-1.0), -2);
  EXPECT_EQ(hash::of_float(INFINITY), 314159);
  EXPECT_EQ(hash::of_float(-INFINITY), -314159);
  EXPECT_EQ(hash::of_float(NAN), 0);
  EXPECT_EQ(hash::of_float(std::ldexp(1.0, 60)), hash::of_int(int64_t{1} << 60));
  EXPECT_EQ(hash::of_float(std::ldexp(1.0, 70)), hash::of_bigint(pow2_bytes(70, false)));
  EXPECT_EQ(hash::of_float(-std::ldexp(1.0, 70)), hash::of_bigint(pow2_bytes(70, true)));
  for (int64_t v = -100000; v <= 100000; v += 7) {
    ASSERT_EQ(hash::of_float(static_cast<double>(v)), hash::of_int(v));
  }
  for (int k = 0; k < 63; ++k) {
    const int64_t v = int64_t{1} << k;
    ASSERT_EQ(hash::of_float(static_cast<double>(v)), hash::of_int(v));
    ASSERT_EQ(hash::of_float(-static_cast<double>(v)), hash::of_int(-v));
  }
}

TEST(FrozenHash, TuplesAndFrozensetsMatchPython) {
  const uint64_t h123[] = {1, 2, 3};
  EXPECT_EQ(hash::of_tuple(h123), 529344067295497451);       // hash((1, 2, 3))
  EXPECT_EQ(hash::of_frozenset(h123), -272375401224217160);  // hash(frozenset({1, 2, 3}))
  EXPECT_EQ(hash::of_tuple({}), 5740354900026072187);        // hash(())
  EXPECT_EQ(hash::of_frozenset({}), 133146708735736);        // hash(frozenset())
  const uint64_t h23[] = {2, 3};
  const uint64_t inner = static_cast<uint64_t>(hash::of_tuple(h23));
  const uint64_t outer[] = {1, inner};
  EXPECT_EQ(hash::of_tuple(outer), 7267574591690527098);  // hash((1, (2, 3)))
  const uint64_t h1[] = {1};
  const uint64_t fs[] = {static_cast<uint64_t>(hash::of_frozenset(h1)), 2};
  EXPECT_EQ(hash::of_frozenset(fs), -1248503628839622056);  // hash(frozenset({frozenset({1}), 2}))
  const uint64_t h321[] = {3, 2, 1};
  EXPECT_EQ(hash::of_frozenset(h321), hash::of_frozenset(h123));  // order-independent
}

TEST(FrozenHash, BytesHashIsSeededAndSpreads) {
  const char* s = "hello";
  EXPECT_EQ(hash::of_bytes(1, s, 5), hash::of_bytes(1, s, 5));
  EXPECT_NE(hash::of_bytes(1, s, 5), hash::of_bytes(2, s, 5));
  EXPECT_NE(hash::of_bytes(1, s, 5), hash::of_bytes(1, s, 4));
  EXPECT_NE(hash::of_bytes(1, "", 0), hash::of_bytes(1, "\0", 1));
  // Every length 0..200 and every single-bit flip gives a distinct hash.
  std::vector<uint8_t> buf(200);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 37 + 11);
  std::vector<uint64_t> seen;
  for (size_t n = 0; n <= buf.size(); ++n) seen.push_back(hash::of_bytes(kDefaultHashSeed, buf.data(), n));
  for (size_t bit = 0; bit < 100 * 8; ++bit) {
    buf[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    seen.push_back(hash::of_bytes(kDefaultHashSeed, buf.data(), 100));
    buf[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end());
  // Avalanche, roughly: a one-bit change flips about half of the output bits.
  double total = 0;
  for (size_t bit = 0; bit < 64; ++bit) {
    const uint64_t a = hash::of_bytes(7, buf.data(), 8);
    buf[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    total += __builtin_popcountll(a ^ hash::of_bytes(7, buf.data(), 8));
    buf[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
  EXPECT_GT(total / 64, 24.0);
  EXPECT_LT(total / 64, 40.0);
  // A fixed value: the hash is part of the file format (a change breaks every saved table).
  EXPECT_EQ(hash::of_bytes(kDefaultHashSeed, "shoal", 5), hash::of_bytes(kDefaultHashSeed, "shoal", 5));
}

// ---- builder and accessors ---------------------------------------------------------------------

TEST(FrozenBuilder, TheFixedLayoutOfASmallImage) {
  Builder b;
  const Ref one = b.integer(1);
  EXPECT_EQ(one, (uint64_t{1} << 4) | 3);
  const Ref items[] = {one};
  const Ref list = b.list(items);
  EXPECT_EQ(list, 64u | 8u);
  auto bytes = b.finish_bytes(list);
  ASSERT_EQ(bytes.size(), 64u + 24u);
  L::FrozenHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  EXPECT_EQ(h.magic, L::kFrozenMagic);
  EXPECT_EQ(std::memcmp(bytes.data(), "SHOALFRZ", 8), 0);
  EXPECT_EQ(h.version, 1u);
  EXPECT_EQ(h.flags, 0u);
  EXPECT_EQ(h.image_size, 88u);
  EXPECT_EQ(h.root, list);
  EXPECT_EQ(h.hash_seed, kDefaultHashSeed);
  EXPECT_EQ(h.node_count, 1u);
  uint64_t w[3];
  std::memcpy(w, bytes.data() + 64, 24);
  EXPECT_EQ(w[0], 1u);
  EXPECT_EQ(w[1], 0u);
  EXPECT_EQ(w[2], one);
}

TEST(FrozenBuilder, EveryScalarRoundTrips) {
  Builder b;
  std::vector<Ref> items = {
      b.none(), b.boolean(false), b.boolean(true), b.integer(0), b.integer(-1),
      b.integer(L::kInlineIntMax), b.integer(L::kInlineIntMin), b.integer(L::kInlineIntMax + 1),
      b.integer(std::numeric_limits<int64_t>::min()), b.big_integer(pow2_bytes(70, true)),
      b.floating(-0.0), b.floating(NAN), b.str("héllo"), b.str("ascii"),
      b.bytes(as_span(std::string_view("\0\xff", 2))), b.pickle(as_span("PKL")),
  };
  Opened o(b.finish_bytes(b.list(items)));
  const Value r = o.root();
  o.image.validate();
  ASSERT_EQ(r.type(), Type::kList);
  ASSERT_EQ(r.size(), items.size());
  EXPECT_TRUE(r[0].is_none());
  EXPECT_EQ(r[1].type(), Type::kBool);
  EXPECT_FALSE(r[1].as_bool());
  EXPECT_TRUE(r[2].as_bool());
  EXPECT_EQ(r[2].as_int(), 1);  // True reads as 1
  EXPECT_EQ(r[3].as_int(), 0);
  EXPECT_EQ(r[4].as_int(), -1);
  EXPECT_EQ(r[5].type(), Type::kInt);
  EXPECT_EQ(r[5].as_int(), L::kInlineIntMax);
  EXPECT_EQ(r[6].as_int(), L::kInlineIntMin);
  EXPECT_EQ(r[7].type(), Type::kBigInt);
  EXPECT_EQ(r[7].bigint_bytes().size(), 8u);  // 2**59 needs 8 bytes (sign bit free)
  EXPECT_EQ(r[8].type(), Type::kBigInt);
  EXPECT_EQ(r[8].bigint_bytes().size(), 8u);
  EXPECT_EQ(hash_of(r[8]), static_cast<uint64_t>(hash::of_int(std::numeric_limits<int64_t>::min())));
  EXPECT_EQ(r[9].bigint_bytes().size(), 9u);
  EXPECT_EQ(static_cast<int64_t>(hash_of(r[9])), -512);
  EXPECT_TRUE(std::signbit(r[10].as_float()));
  EXPECT_TRUE(std::isnan(r[11].as_float()));
  EXPECT_EQ(r[12].as_str(), "héllo");
  EXPECT_EQ(r[12].str_flags(), 0u);
  EXPECT_EQ(r[13].str_flags(), L::kStrAscii);
  EXPECT_EQ(r[14].as_bytes().size(), 2u);
  EXPECT_EQ(r[15].type(), Type::kPickle);
  EXPECT_EQ(r[15].as_bytes().size(), 3u);
  EXPECT_TRUE(o.image.has_pickles());
}

TEST(FrozenBuilder, BigIntegersAreCanonical) {
  Builder b;
  // Non-minimal encodings of small values come back inline.
  EXPECT_EQ(b.big_integer(le_bytes({5, 0, 0, 0, 0, 0, 0, 0, 0, 0})), b.integer(5));
  EXPECT_EQ(b.big_integer(le_bytes({0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})), b.integer(-5));
  EXPECT_EQ(b.big_integer({}), b.integer(0));
  const Ref big = b.big_integer([] {
    auto v = pow2_bytes(70, false);
    v.resize(20, std::byte{0});
    return v;
  }());
  Opened o(b.finish_bytes(big));
  EXPECT_EQ(o.root().bigint_bytes().size(), 9u);
  EXPECT_EQ(static_cast<int64_t>(hash_of(o.root())), 512);
}

TEST(FrozenBuilder, ContainersAndNdarrays) {
  Builder b;
  const Ref items[] = {b.integer(1), b.str("two"), b.floating(3.0)};
  const Ref list = b.list(items);
  const Ref tuple = b.tuple(items);
  const Ref keys[] = {b.str("a"), b.integer(2)};
  const Ref vals[] = {list, tuple};
  const Ref dict = b.dict(keys, vals);
  const Ref set = b.set(keys);
  const Ref fset = b.frozenset(keys);
  const double elems[] = {0, 1, 2, 3, 4, 5};
  const uint64_t shape[] = {2, 3};
  const Ref nd = b.ndarray("'<f8'", 8, shape, false, elems, sizeof elems);
  const Ref all[] = {list, tuple, dict, set, fset, nd, b.list({}), b.dict({}, {})};
  Opened o(b.finish_bytes(b.tuple(all)));
  o.image.validate();
  const Value r = o.root();
  EXPECT_EQ(r.type(), Type::kTuple);
  EXPECT_EQ(r[0].type(), Type::kList);
  EXPECT_EQ(r[0][1].as_str(), "two");
  EXPECT_EQ(r[1].type(), Type::kTuple);
  EXPECT_EQ(r[1][2].as_float(), 3.0);
  const Value d = r[2];
  EXPECT_EQ(d.type(), Type::kDict);
  EXPECT_EQ(d.size(), 2u);
  EXPECT_EQ(d.key_at(0).as_str(), "a");  // insertion order
  EXPECT_EQ(d.key_at(1).as_int(), 2);
  EXPECT_EQ(d.value_at(1).type(), Type::kTuple);
  EXPECT_EQ(d.hash_at(1), 2u);
  EXPECT_EQ(d.at("a")[0].as_int(), 1);
  EXPECT_EQ(d.at(int64_t{2})[1].as_str(), "two");
  EXPECT_EQ(r[3].type(), Type::kSet);
  EXPECT_EQ(r[3].find("a")->as_str(), "a");
  EXPECT_EQ(r[4].type(), Type::kFrozenSet);
  EXPECT_TRUE(r[4].find(2.0).has_value());
  const NdView v = r[5].as_ndarray();
  EXPECT_EQ(v.descr, "'<f8'");
  EXPECT_EQ(v.itemsize, 8u);
  EXPECT_EQ(v.shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_FALSE(v.fortran);
  EXPECT_EQ(v.nbytes, 48u);
  EXPECT_EQ(v.data_offset % 64, 0u);
  EXPECT_EQ(std::memcmp(v.data, elems, 48), 0);
  EXPECT_EQ(r[6].size(), 0u);
  EXPECT_EQ(r[7].size(), 0u);
  EXPECT_FALSE(r[7].find("x").has_value());
}

TEST(FrozenBuilder, WrongTypesAndIndexesRaise) {
  Builder b;
  const Ref items[] = {b.integer(1), b.str("s")};
  Opened o(b.finish_bytes(b.list(items)));
  const Value r = o.root();
  EXPECT_EQ(error_of([&] { (void)r[0].as_str(); }), "expected str, found int");
  EXPECT_EQ(error_of([&] { (void)r[1].as_int(); }), "expected int, found str");
  EXPECT_EQ(error_of([&] { (void)r.find("x"); }), "expected dict, set or frozenset, found list");
  EXPECT_EQ(error_of([&] { (void)r.key_at(0); }), "expected dict, set or frozenset, found list");
  EXPECT_EQ(error_of([&] { (void)r.value_at(0); }), "expected dict, found list");
  EXPECT_THROW((void)r[0].as_bool(), InvalidArgumentError);
  EXPECT_THROW((void)r[2], std::out_of_range);
  EXPECT_THROW((void)r[UINT64_MAX], std::out_of_range);
  EXPECT_THROW((void)r[0].size(), InvalidArgumentError);
}

TEST(FrozenBuilder, ANumpyScalarIsAZeroDimLeafMarkedScalar) {
  Builder b;
  const float one = 1.5f;
  const Ref sc = b.numpy_scalar("'<f4'", 4, &one);
  const Ref arr = b.ndarray("'<f4'", 4, {}, false, &one, 4);  // a 0-d array stays an array
  const Ref both[] = {sc, arr};
  const Ref root = b.list(both);
  auto bytes = b.finish_bytes(root);
  {
    Opened o(bytes);
    o.image.validate();
    const NdView s = o.root()[0].as_ndarray();
    EXPECT_TRUE(s.scalar);
    EXPECT_TRUE(s.shape.empty());
    EXPECT_EQ(s.nbytes, 4u);
    EXPECT_EQ(std::memcmp(s.data, &one, 4), 0);
    EXPECT_FALSE(o.root()[1].as_ndarray().scalar);
  }
  // The order word: kNdOrderScalar only with ndim 0; anything past it is corrupt.
  const uint64_t at = layout::node_offset(sc) + offsetof(layout::NdNode, order);
  auto patched = [&](uint32_t order, uint32_t ndim) {
    std::vector<std::byte> c = bytes;
    std::memcpy(c.data() + at, &order, 4);
    std::memcpy(c.data() + layout::node_offset(sc) + offsetof(layout::NdNode, ndim), &ndim, 4);
    return c;
  };
  for (auto [order, ndim] : {std::pair{3u, 0u}, std::pair{~0u, 0u}, std::pair{2u, 1u}}) {
    Opened o(patched(order, ndim));
    EXPECT_THROW(o.root()[0].as_ndarray(), DecodeError) << order << " " << ndim;
    EXPECT_THROW(o.image.validate(), DecodeError) << order << " " << ndim;
  }
}

TEST(FrozenBuilder, UnhashableKeysAreRefusedByName) {
  Builder b;
  const Ref l = b.list({});
  const Ref d = b.dict({}, {});
  const Ref s = b.set({});
  const Ref nd = b.ndarray("'<f8'", 8, {}, false, "\0\0\0\0\0\0\0\0", 8);
  const Ref p = b.pickle(as_span("x"));
  const Ref inner[] = {b.integer(1), l};
  const Ref bad_tuple = b.tuple(inner);
  const std::pair<Ref, const char*> cases[] = {{l, "list"}, {d, "dict"}, {s, "set"},
                                               {nd, "ndarray"}, {p, "pickle"}, {bad_tuple, "list"}};
  for (auto [k, name] : cases) {
    const Ref keys[] = {k};
    const Ref vals[] = {b.none()};
    EXPECT_EQ(error_of([&] { b.dict(keys, vals); }), std::string("unhashable type: '") + name + "'");
    EXPECT_THROW(b.frozenset(keys), InvalidArgumentError);
    EXPECT_THROW(b.hash_of(k), InvalidArgumentError);
  }
  EXPECT_THROW(b.list(std::vector<Ref>{Ref{15}}), InvalidArgumentError);         // reserved tag
  EXPECT_THROW(b.list(std::vector<Ref>{Ref{1u << 20 | 6}}), InvalidArgumentError);  // not written
}

TEST(FrozenBuilder, EqualKeysAreDuplicates) {
  Builder b;
  auto dup = [&](Ref x, Ref y) {
    const Ref keys[] = {x, y};
    const Ref vals[] = {b.none(), b.none()};
    return error_of([&] { b.dict(keys, vals); }).find("duplicate key") != std::string::npos;
  };
  EXPECT_TRUE(dup(b.integer(1), b.floating(1.0)));
  EXPECT_TRUE(dup(b.boolean(true), b.integer(1)));
  EXPECT_TRUE(dup(b.boolean(false), b.floating(-0.0)));
  EXPECT_TRUE(dup(b.floating(0.0), b.floating(-0.0)));
  EXPECT_TRUE(dup(b.big_integer(pow2_bytes(60, false)), b.floating(std::ldexp(1.0, 60))));
  EXPECT_TRUE(dup(b.big_integer(pow2_bytes(70, true)), b.floating(-std::ldexp(1.0, 70))));
  EXPECT_TRUE(dup(b.str("k"), b.str("k")));
  EXPECT_TRUE(dup(b.none(), b.none()));
  const Ref t1[] = {b.integer(1), b.str("a")};
  const Ref t2[] = {b.floating(1.0), b.str("a")};
  EXPECT_TRUE(dup(b.tuple(t1), b.tuple(t2)));
  const Ref f1[] = {b.integer(1), b.integer(2), b.str("x")};
  const Ref f2[] = {b.str("x"), b.floating(2.0), b.boolean(true)};
  EXPECT_TRUE(dup(b.frozenset(f1), b.frozenset(f2)));
  EXPECT_FALSE(dup(b.str("k"), b.bytes(as_span("k"))));
  EXPECT_FALSE(dup(b.floating(NAN), b.floating(NAN)));  // NaN equals nothing
  EXPECT_FALSE(dup(b.integer(1), b.floating(1.5)));
  EXPECT_FALSE(dup(b.big_integer(pow2_bytes(60, false)), b.floating(std::nextafter(std::ldexp(1.0, 60), 0.0))));
  EXPECT_FALSE(dup(b.tuple(t1), b.frozenset(f1)));
  EXPECT_TRUE(b.keys_equal(b.integer(2), b.floating(2.0)));
  EXPECT_FALSE(b.keys_equal(b.integer(2), b.str("2")));
  EXPECT_EQ(b.hash_of(b.integer(7)), b.hash_of(b.floating(7.0)));
}

TEST(FrozenLookup, PythonEqualityDecidesWhichKeysAreOne) {
  Builder b;
  std::vector<Ref> keys = {b.integer(1),
                           b.floating(0.0),
                           b.big_integer(pow2_bytes(60, false)),
                           b.str("s"),
                           b.bytes(as_span("b")),
                           b.integer(std::numeric_limits<int64_t>::max()),
                           b.big_integer(pow2_bytes(70, false)),
                           b.floating(2.5),
                           b.integer(-3),
                           b.none(),
                           b.floating(NAN)};
  std::vector<Ref> vals;
  for (size_t i = 0; i < keys.size(); ++i) vals.push_back(b.integer(static_cast<int64_t>(i)));
  Opened o(b.finish_bytes(b.dict(keys, vals)));
  o.image.validate();
  const Value d = o.root();
  auto idx = [](std::optional<Value> v) { return v ? v->as_int() : -1; };
  EXPECT_EQ(idx(d.find(int64_t{1})), 0);
  EXPECT_EQ(idx(d.find(1.0)), 0);
  EXPECT_EQ(idx(d.find(int64_t{0})), 1);
  EXPECT_EQ(idx(d.find(0.0)), 1);
  EXPECT_EQ(idx(d.find(-0.0)), 1);
  EXPECT_EQ(idx(d.find(int64_t{1} << 60)), 2);  // 2**60 is inline-too-big: a bigint key
  EXPECT_EQ(idx(d.find(std::ldexp(1.0, 60))), 2);
  EXPECT_EQ(idx(d.find("s")), 3);
  EXPECT_EQ(idx(d.find_bytes(as_span("s"))), -1);  // str and bytes differ
  EXPECT_EQ(idx(d.find_bytes(as_span("b"))), 4);
  EXPECT_EQ(idx(d.find("b")), -1);
  EXPECT_EQ(idx(d.find(std::numeric_limits<int64_t>::max())), 5);
  EXPECT_EQ(idx(d.find(9223372036854775807.0)), -1);  // 2.0**63 != 2**63-1
  EXPECT_EQ(idx(d.find(std::ldexp(1.0, 70))), 6);
  EXPECT_EQ(idx(d.find(2.5)), 7);
  EXPECT_EQ(idx(d.find(int64_t{2})), -1);
  EXPECT_EQ(idx(d.find(int64_t{-3})), 8);
  EXPECT_EQ(idx(d.find(-3.0)), 8);
  EXPECT_EQ(idx(d.find(NAN)), -1);
  EXPECT_EQ(idx(d.find(INFINITY)), -1);
  EXPECT_THROW(d.at("missing"), std::out_of_range);
  // The probe with the caller's own equality (as the Python binding uses it).
  const uint64_t h = static_cast<uint64_t>(hash::of_int(1));
  const int64_t slot = d.probe(h, [](const Value& k) { return k.type() == Type::kInt; });
  ASSERT_GE(slot, 0);  // a slot index: read the entry there
  EXPECT_EQ(d.key_in_slot(static_cast<uint64_t>(slot)).as_int(), 1);
  EXPECT_EQ(d.probe(h, [](const Value&) { return false; }), -1);
}

TEST(FrozenLookup, TupleAndFrozensetKeys) {
  Builder b;
  const Ref t[] = {b.integer(1), b.str("a")};
  const Ref inner[] = {b.integer(2), b.integer(3)};
  const Ref f[] = {b.integer(1), b.frozenset(inner)};
  const Ref keys[] = {b.tuple(t), b.frozenset(f), b.tuple({})};
  const Ref vals[] = {b.str("tuple"), b.str("frozenset"), b.str("empty")};
  const Ref d = b.dict(keys, vals);
  // A second image with another seed holds equal keys: keys_equal compares across images.
  Builder b2(12345);
  const Ref t2[] = {b2.floating(1.0), b2.str("a")};
  const Ref inner2[] = {b2.floating(3.0), b2.boolean(false), b2.integer(2)};
  const Ref inner3[] = {b2.floating(3.0), b2.integer(2)};
  const Ref f2[] = {b2.frozenset(inner3), b2.boolean(true)};
  const Ref f3[] = {b2.frozenset(inner2), b2.boolean(true)};
  const Ref all2[] = {b2.tuple(t2), b2.frozenset(f2), b2.frozenset(f3)};
  Opened o1(b.finish_bytes(d));
  Opened o2(b2.finish_bytes(b2.list(all2)));
  o1.image.validate();
  o2.image.validate();
  const Value k0 = o2.root()[0];
  const Value k1 = o2.root()[1];
  EXPECT_TRUE(keys_equal(o1.root().key_at(0), k0));
  EXPECT_TRUE(keys_equal(o1.root().key_at(1), k1));
  EXPECT_FALSE(keys_equal(o1.root().key_at(1), o2.root()[2]));
  EXPECT_FALSE(keys_equal(o1.root().key_at(0), k1));
  // A lookup from another image: hash with this image's seed, compare with keys_equal.
  for (uint64_t i = 0; i < 2; ++i) {
    const Value k = o2.root()[i];
    // The hash o1 stores for an equal key (a str's hash depends on the image's seed).
    const uint64_t h = o1.root().hash_at(i);
    const int64_t slot = o1.root().probe(h, [&](const Value& x) { return keys_equal(x, k); });
    ASSERT_GE(slot, 0);
    EXPECT_TRUE(keys_equal(o1.root().key_in_slot(static_cast<uint64_t>(slot)), o1.root().key_at(i)));
  }
  EXPECT_THROW(keys_equal(o2.root(), k0), InvalidArgumentError);  // a list is unhashable
}

TEST(FrozenLookup, LargeTablesFindEveryKeyAndNoOther) {
  constexpr int64_t kN = int64_t{1} << 20;
  Builder b;
  std::vector<Ref> keys(kN);
  std::vector<Ref> vals(kN);
  for (int64_t i = 0; i < kN; ++i) {
    keys[static_cast<size_t>(i)] = b.integer(i * 1024);  // multiples of 1024: the high bits vary
    vals[static_cast<size_t>(i)] = b.integer(i);
  }
  const Ref ints = b.dict(keys, vals);
  std::vector<Ref> skeys(kN);
  for (int64_t i = 0; i < kN; ++i) skeys[static_cast<size_t>(i)] = b.str("key" + std::to_string(i));
  const Ref strs = b.dict(skeys, vals);
  const Ref both[] = {ints, strs};
  Opened o(b.finish_bytes(b.list(both)));
  const Value di = o.root()[0];
  const Value ds = o.root()[1];
  ASSERT_EQ(di.size(), static_cast<uint64_t>(kN));
  for (int64_t i = 0; i < kN; ++i) {
    auto v = di.find(i * 1024);
    ASSERT_TRUE(v.has_value()) << i;
    ASSERT_EQ(v->as_int(), i);
    auto w = ds.find("key" + std::to_string(i));
    ASSERT_TRUE(w.has_value()) << i;
    ASSERT_EQ(w->as_int(), i);
  }
  for (int64_t i = 0; i < 100000; ++i) {
    ASSERT_FALSE(di.find(i * 1024 + 1).has_value());
    ASSERT_FALSE(di.find(-1 - i).has_value());
    ASSERT_FALSE(ds.find("nokey" + std::to_string(i)).has_value());
  }
}

TEST(FrozenBuilder, IsReusableAndDeterministic) {
  Builder b;
  auto build = [&] {
    const Ref k[] = {b.str("x"), b.integer(3)};
    const Ref v[] = {b.floating(1.0), b.bytes(as_span("y"))};
    return b.finish_bytes(b.dict(k, v));
  };
  auto first = build();
  EXPECT_EQ(b.size(), 64u);
  auto second = build();
  EXPECT_EQ(first, second);
}

// ---- corrupt images ----------------------------------------------------------------------------

// Reads everything reachable (bounded), as a reader would; only ShoalError / out_of_range may
// come out.
void walk(const Value& v, int depth = 0) {
  if (depth > 40) return;
  switch (v.type()) {
    case Type::kNone: case Type::kBool: case Type::kInt: break;
    case Type::kBigInt: (void)hash_of(v); break;
    case Type::kFloat: (void)v.as_float(); break;
    case Type::kStr: (void)v.as_str(); (void)v.str_flags(); (void)hash_of(v); break;
    case Type::kBytes: case Type::kPickle: (void)v.as_bytes(); break;
    case Type::kNdarray: (void)v.as_ndarray(); break;
    case Type::kList: case Type::kTuple:
      for (uint64_t i = 0, n = v.size(); i < n && i < 64; ++i) walk(v[i], depth + 1);
      break;
    case Type::kDict: case Type::kSet: case Type::kFrozenSet: {
      (void)v.find(int64_t{1});
      (void)v.find(0.5);
      (void)v.find("a");
      for (uint64_t i = 0, n = v.size(); i < n && i < 64; ++i) {
        const Value k = v.key_at(i);
        walk(k, depth + 1);
        (void)v.probe(v.hash_at(i), [&](const Value& x) { return keys_equal(x, k); });
        if (v.type() == Type::kDict) walk(v.value_at(i), depth + 1);
      }
      break;
    }
  }
}

// 0: fine, 1: a ShoalError or out_of_range (the only acceptable failures).
int read_all(const std::vector<std::byte>& bytes) {
  auto img = Image::open(bytes.data(), bytes.size());
  if (!img) return 1;
  const Image image = img.value();
  int rc = 0;
  try {
    image.validate(64, 100000);
  } catch (const Error&) {
    rc = 1;
  }
  try {
    walk(image.root());
  } catch (const Error&) {
    rc = 1;
  } catch (const std::out_of_range&) {
    rc = 1;
  }
  return rc;
}

std::vector<std::byte> small_image() {
  Builder b;
  const Ref t[] = {b.integer(1), b.str("a")};
  const Ref items[] = {b.str("héllo"), b.floating(2.5), b.big_integer(pow2_bytes(70, true)), b.tuple(t)};
  const Ref fs[] = {b.integer(4), b.str("x")};
  const double e[] = {1, 2};
  const uint64_t shape[] = {2};
  const Ref keys[] = {b.str("a"), b.integer(7), b.tuple(t), b.frozenset(fs), b.bytes(as_span("k"))};
  const Ref vals[] = {b.list(items), b.ndarray("'<f8'", 8, shape, false, e, 16), b.pickle(as_span("p")),
                      b.set(fs), b.none()};
  return b.finish_bytes(b.dict(keys, vals));
}

TEST(FrozenCorrupt, EveryPrefixOfAnImageIsRefusedCleanly) {
  const auto full = small_image();
  EXPECT_EQ(read_all(full), 0);
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<std::byte> cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    auto img = Image::open(cut.data(), cut.size());
    ASSERT_FALSE(img.has_value()) << n;
    EXPECT_EQ(img.status().code(), Errc::kDecode) << n;
    // The same prefix with its header claiming exactly that size (a file truncated under a
    // rewritten header): opening may succeed, but every read is checked.
    if (n >= 64) {
      const uint64_t size = n;
      std::memcpy(cut.data() + 16, &size, 8);
      (void)read_all(cut);
    }
  }
}

TEST(FrozenCorrupt, FlippedBytesNeverCrash) {
  const auto full = small_image();
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t x : {0x01, 0x08, 0x10, 0x80, 0xff}) {
      auto bad = full;
      bad[i] ^= static_cast<std::byte>(x);
      (void)read_all(bad);
    }
  }
}

// An image whose root list has one item, to forge.
std::vector<std::byte> forged(uint64_t item) {
  Builder b;
  const Ref s = b.str("target");
  const Ref items[] = {s, b.integer(0)};
  auto bytes = b.finish_bytes(b.list(items));
  const size_t list_off = 64 + 32;  // after the 6-byte str node, padded
  std::memcpy(bytes.data() + list_off + 16 + 8, &item, 8);
  return bytes;
}

TEST(FrozenCorrupt, ForgedReferencesRaiseDecodeError) {
  auto check = [](uint64_t item, const char* expect) {
    Opened o(forged(item));
    const Value r = o.root();
    ASSERT_EQ(r.type(), Type::kList);
    EXPECT_EQ(r[0].as_str(), "target");
    const std::string err = error_of([&] {
      const Value v = r[1];
      (void)v.type();
      if (v.type() == Type::kStr) (void)v.as_str();
      if (v.type() == Type::kList) (void)v.size();
    });
    EXPECT_NE(err.find(expect), std::string::npos) << item << ": " << err;
    EXPECT_THROW(o.image.validate(), DecodeError);
  };
  check((uint64_t{1} << 40) | 6, "child after its parent");  // far outside
  check(16 | 6, "outside the image");                        // inside the header
  check(80 | 6, "outside the image");  // inside the str's text: its "length" is huge
  check(0 | 15, "reserved tag 15");
  check(64 | 15, "reserved tag 15");
  check(96 | 8, "child after its parent");  // the list itself: a cycle
  check(uint64_t{0xFFFF'FFFF'FFFF'FFF0} | 6, "child after its parent");
}

// validate() must check a node once per type it is reached as, not once per offset: a forged
// ref reading an already-validated node as another type (a bigint's node as a dict, a case
// fuzz/frozen_fuzzer found) must be refused.
TEST(FrozenCorrupt, ValidateRefusesOneNodeReadAsTwoTypes) {
  Builder b;
  const Ref big = b.big_integer(pow2_bytes(70, false));
  const Ref items[] = {big, big};
  auto bytes = b.finish_bytes(b.list(items));
  const uint64_t as_dict = (big & ~uint64_t{15}) | 10;
  std::memcpy(bytes.data() + (bytes.size() - 8), &as_dict, 8);  // the list's item 1
  Opened o(bytes);
  EXPECT_NE(error_of([&] { o.image.validate(); }).find("two different tags"), std::string::npos);
  EXPECT_THROW((void)o.root()[1].find(int64_t{1}), DecodeError);
}

TEST(FrozenCorrupt, RootAndHeaderAreCheckedAtOpen) {
  auto bytes = forged(3);
  auto with = [&](size_t off, uint64_t v) {
    auto b = bytes;
    std::memcpy(b.data() + off, &v, 8);
    return Image::open(b.data(), b.size()).status();
  };
  EXPECT_EQ(with(24, 15).code(), Errc::kDecode);             // root tag 15
  EXPECT_EQ(with(24, 0x10000 | 8).code(), Errc::kDecode);    // root outside
  EXPECT_EQ(with(24, 16 | 8).code(), Errc::kDecode);         // root in the header
  EXPECT_EQ(with(0, 0x1234).code(), Errc::kDecode);          // magic
  EXPECT_EQ(with(8, 2).code(), Errc::kIncompatible);         // version 2
  EXPECT_EQ(with(8, uint64_t{1} << 40 | 1).code(), Errc::kIncompatible);  // unknown flag
  EXPECT_EQ(with(48, 1).code(), Errc::kIncompatible);        // reserved
  EXPECT_EQ(with(16, bytes.size() + 1).code(), Errc::kDecode);
  EXPECT_EQ(with(16, 63).code(), Errc::kDecode);
  EXPECT_NE(with(16, bytes.size() + 1).message().find("truncated"), std::string::npos);
  EXPECT_EQ(Image::open(nullptr, 0).status().code(), Errc::kDecode);
}

// A set of 4 ints in 8 slots, then its slots forged.
struct ForgedTable {
  std::vector<std::byte> bytes;
  size_t table_off = 0;
  ForgedTable() {
    Builder b;
    const Ref k[] = {b.integer(1), b.integer(2), b.integer(3), b.integer(4)};
    const Ref s = b.set(k);
    table_off = s & ~uint64_t{15};
    bytes = b.finish_bytes(s);
  }
  // Every one of the 8 slots (16 bytes each: hash, key) set to the same pair.
  void set_slots(uint64_t hash, uint64_t key) {
    for (int i = 0; i < 8; ++i) {
      std::memcpy(bytes.data() + table_off + 16 + i * 16, &hash, 8);
      std::memcpy(bytes.data() + table_off + 16 + i * 16 + 8, &key, 8);
    }
  }
  void set_order(uint32_t i, uint32_t slot) {
    std::memcpy(bytes.data() + table_off + 16 + 8 * 16 + i * 4, &slot, 4);
  }
};

TEST(FrozenCorrupt, AFullTableThatNeverMatchesEnds) {
  ForgedTable t;
  {
    Opened o(t.bytes);
    EXPECT_TRUE(o.root().find(int64_t{3}).has_value());
    o.image.validate();
  }
  // Every slot full (no empty slot to stop at) with a hash no query has: not found, and the
  // bounded probe ends.
  t.set_slots(0xDEAD'BEEF, (uint64_t{77} << 4) | 3);
  {
    Opened o(t.bytes);
    EXPECT_FALSE(o.root().find(int64_t{3}).has_value());
    EXPECT_FALSE(o.root().find(int64_t{99}).has_value());
    EXPECT_EQ(o.root().probe(12345, [](const Value&) { return true; }), -1);
    EXPECT_THROW(o.image.validate(), DecodeError);
  }
  // Every slot full with the right hash but a key pointing past the table (and the image):
  // DecodeError, not a read out of bounds.
  t.set_slots(3, (uint64_t{1} << 40) | 4);
  {
    Opened o(t.bytes);
    EXPECT_THROW((void)o.root().find(int64_t{3}), DecodeError);
  }
}

TEST(FrozenCorrupt, TableOrderIsChecked) {
  ForgedTable t;
  t.set_order(0, 99);  // past the 8 slots
  {
    Opened o(t.bytes);
    EXPECT_THROW((void)o.root().key_at(0), DecodeError);
    EXPECT_THROW(o.image.validate(), DecodeError);
  }
  ForgedTable u;
  uint32_t empty = 0;  // a slot no entry uses
  for (; empty < 8; ++empty) {
    uint64_t key;
    std::memcpy(&key, u.bytes.data() + u.table_off + 16 + empty * 16 + 8, 8);
    if (key == layout::kEmptyKey) break;
  }
  ASSERT_LT(empty, 8u);
  u.set_order(0, empty);
  {
    Opened o(u.bytes);
    EXPECT_THROW((void)o.root().key_at(0), DecodeError);
    EXPECT_THROW(o.image.validate(), DecodeError);
  }
}

TEST(FrozenCorrupt, TableHeadersAreChecked) {
  auto with = [](size_t field_off, const void* v, size_t n) {
    ForgedTable t;
    std::memcpy(t.bytes.data() + t.table_off + field_off, v, n);
    Opened o(t.bytes);
    return error_of([&] { (void)o.root().find(int64_t{1}); });
  };
  const uint32_t big_log2 = 63, bad_ew = 7, small_log2 = 2;
  const uint64_t big_count = uint64_t{1} << 60, five = 5;
  EXPECT_NE(with(8, &big_log2, 4).find("table header"), std::string::npos);
  EXPECT_NE(with(8, &small_log2, 4).find("table header"), std::string::npos);
  EXPECT_NE(with(12, &bad_ew, 4).find("table header"), std::string::npos);
  EXPECT_NE(with(0, &big_count, 8).find("table header"), std::string::npos);
  EXPECT_NE(with(0, &five, 8).find("table header"), std::string::npos);  // > slots/2
  const uint32_t log2_40 = 40;
  EXPECT_NE(with(8, &log2_40, 4).find("outside the image"), std::string::npos);
}

TEST(FrozenCorrupt, ValidateBoundsDepthAndNodes) {
  Builder b;
  Ref r = b.integer(0);
  for (int i = 0; i < 100; ++i) {
    const Ref items[] = {r, r};  // shared children: a DAG with 2**100 paths
    r = b.list(items);
  }
  Opened o(b.finish_bytes(r));
  o.image.validate();  // each node once, however many paths reach it
  EXPECT_THROW(o.image.validate(50), DecodeError);
  EXPECT_THROW(o.image.validate(1000, 50), DecodeError);
  EXPECT_NE(error_of([&] { o.image.validate(50); }).find("deeper than 50"), std::string::npos);
}

TEST(FrozenCorrupt, ValidateChecksStrsHashesAndFlags) {
  auto corrupt_and_validate = [](auto&& build, auto&& patch) {
    Builder b;
    auto bytes = b.finish_bytes(build(b));
    patch(bytes);
    Opened o(bytes);
    return error_of([&] { o.image.validate(); });
  };
  // A str flagged ASCII with a non-ASCII byte; invalid UTF-8; a lone surrogate without the flag.
  auto str_node = [](std::string s, uint64_t flags) {
    return [s, flags](Builder& b) { return b.str(s, flags); };
  };
  auto nothing = [](std::vector<std::byte>&) {};
  EXPECT_NE(corrupt_and_validate(str_node("h\xc3\xa9", 0), [](std::vector<std::byte>& v) { v[72] = std::byte{1}; })
                .find("ASCII"),
            std::string::npos);
  EXPECT_NE(corrupt_and_validate(str_node("\xff", 0), nothing).find("UTF-8"), std::string::npos);
  EXPECT_NE(corrupt_and_validate(str_node("\xed\xa0\x80", 0), nothing).find("UTF-8"), std::string::npos);
  EXPECT_EQ(corrupt_and_validate(str_node("\xed\xa0\x80", L::kStrSurrogates), nothing), "(no error)");
  // A pickle without the header flag.
  EXPECT_NE(corrupt_and_validate([](Builder& b) { return b.pickle(as_span("p")); },
                                 [](std::vector<std::byte>& v) { v[12] = std::byte{0}; })
                .find("pickles"),
            std::string::npos);
  // A wrong stored hash.
  EXPECT_NE(corrupt_and_validate(
                [](Builder& b) {
                  const Ref k[] = {b.str("key")};
                  return b.set(k);
                },
                [](std::vector<std::byte>& v) { v[v.size() - 8 * 8 - 16] ^= std::byte{1}; })
                .find("wrong stored hash"),
            std::string::npos);
}

// ---- segments and files ------------------------------------------------------------------------

Ref build_example(Builder& b) {
  const Ref primes[] = {b.integer(2), b.integer(3), b.integer(5), b.integer(7)};
  const Ref keys[] = {b.str("name"), b.str("answer"), b.str("primes"), b.integer(7)};
  const Ref vals[] = {b.str("shoal"), b.integer(42), b.list(primes), b.str("seven")};
  return b.dict(keys, vals);
}

SHOAL_CHILD_CASE(frozen_child_reads) {
  Frozen f = Frozen::attach(arg);
  if (!f.segment().read_only()) return 3;
  f.image().validate();
  const Value r = f.root();
  if (r.at("answer").as_int() != 42) return 1;
  if (r.at("primes")[3].as_int() != 7) return 2;
  if (r.at(int64_t{7}).as_str() != "seven") return 4;
  if (r.at(7.0).as_str() != "seven") return 5;
  return 0;
}

TEST(Frozen, FinishPublishesASealedSegmentThatAFreshProcessReads) {
  test::ScopedRuntimeDir rd;
  Builder b;
  Frozen f = b.finish(build_example(b));
  EXPECT_EQ(b.size(), 64u);
  EXPECT_TRUE(f.valid());
  EXPECT_EQ(f.segment().kind(), ObjectKind::kFrozen);
  EXPECT_TRUE(f.segment().read_only());
  EXPECT_TRUE(f.path().empty());
  EXPECT_EQ(f.root().at("name").as_str(), "shoal");
  Frozen same = Frozen::attach(f.handle());
  EXPECT_EQ(same.root().at("answer").as_int(), 42);
  test::ChildProcess child("frozen_child_reads", f.handle());
  EXPECT_EQ(child.wait(), 0);
  Frozen copy = f;  // copies share the image: Values stay valid
  const Value v = copy.root();
  f = Frozen();
  EXPECT_EQ(v.at("primes").size(), 4u);
}

TEST(Frozen, ASegmentOfAnotherKindIsRefused) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(128);
  EXPECT_THROW(Frozen::from_segment(s), IncompatibleSegmentError);
  EXPECT_THROW(Frozen::from_segment(Segment()), InvalidArgumentError);
  EXPECT_THROW((void)Frozen().image(), InvalidArgumentError);
}

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
void write_file(const std::string& p, std::string_view data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

TEST(Frozen, SaveAndLoadRoundTrip) {
  test::ScopedRuntimeDir rd;
  const std::string path = rd.path() + "/example.shoal";
  Builder b;
  // Read-only, and never more readable than the umask allows.
  const mode_t old_mask = ::umask(077);
  b.save(build_example(b), path);
  ::umask(old_mask);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  Frozen f = Frozen::load(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_FALSE(f.segment().valid());
  EXPECT_THROW((void)f.handle(), InvalidArgumentError);
  EXPECT_EQ(f.root().at("answer").as_int(), 42);
  f.image().validate();
  // The file is the image, from offset 0.
  Builder b2;
  auto bytes = b2.finish_bytes(build_example(b2));
  EXPECT_EQ(read_file(path), std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  // Saving again replaces the read-only file by rename; the old mapping stays intact.
  const Ref k[] = {b.str("answer")};
  const Ref v[] = {b.integer(43)};
  b.save(b.dict(k, v), path);
  EXPECT_EQ(f.root().at("answer").as_int(), 42);
  EXPECT_EQ(Frozen::load(path).root().at("answer").as_int(), 43);
  // No temporary file is left next to it.
  int files = 0;
  for (const auto& e : rd.entries()) files += e.find("example.shoal") != std::string::npos;
  EXPECT_EQ(files, 1);
}

TEST(Frozen, RemoveDeadSaveTempsTakesOnlyUnlockedTempsOfSave) {
  test::ScopedRuntimeDir rd;
  const std::string dir = rd.path();
  const std::string image(64, 'x');
  const std::string magic = "SHOALFRZ" + image.substr(8);
  write_file(dir + "/a.shoal.shoal-tmp-Aa0Aa0", "");     // its writer died before writing
  write_file(dir + "/b.shoal.shoal-tmp-Bb1Bb1", magic);  // died mid-write, or alive (below)
  write_file(dir + "/c.shoal-tmp-Cc2Cc2", "hello");      // the name, not the content
  write_file(dir + "/d.shoal-tmp-Dd3Dd", "");            // five characters, not mkostemp's six
  write_file(dir + "/.shoal-tmp-Ee4Ee4", "");            // no target name
  write_file(dir + "/f.tmp-Ff5Ff5", magic);              // not shoal's pattern
  ASSERT_EQ(::symlink((dir + "/c.shoal-tmp-Cc2Cc2").c_str(), (dir + "/g.shoal-tmp-Gg6Gg6").c_str()), 0);
  // A live writer's lock: flock locks belong to the open file description, so one held here
  // refuses gc's own open as another process's would.
  const int held = ::open((dir + "/b.shoal.shoal-tmp-Bb1Bb1").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held, 0);
  ASSERT_EQ(::flock(held, LOCK_EX), 0);
  EXPECT_EQ(remove_dead_save_temps(dir), std::vector<std::string>{dir + "/a.shoal.shoal-tmp-Aa0Aa0"});
  ::close(held);  // the writer is gone
  EXPECT_EQ(remove_dead_save_temps(dir + "/"), std::vector<std::string>{dir + "/b.shoal.shoal-tmp-Bb1Bb1"});
  EXPECT_EQ(remove_dead_save_temps(dir), std::vector<std::string>{});
  int left = 0;
  for (const auto& e : rd.entries()) left += e.find("tmp-") != std::string::npos;
  EXPECT_EQ(left, 5);
  EXPECT_THROW((void)remove_dead_save_temps(dir + "/nope"), SegmentNotFoundError);
}

TEST(Frozen, LoadRefusesTruncatedAndForeignFiles) {
  test::ScopedRuntimeDir rd;
  const std::string dir = rd.path();
  Builder b;
  auto bytes = b.finish_bytes(build_example(b));
  const std::string full(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  write_file(dir + "/short", full.substr(0, full.size() - 10));
  EXPECT_NE(error_of([&] { Frozen::load(dir + "/short"); }).find("truncated"), std::string::npos);
  EXPECT_THROW(Frozen::load(dir + "/short"), DecodeError);
  write_file(dir + "/tiny", full.substr(0, 20));
  EXPECT_THROW(Frozen::load(dir + "/tiny"), DecodeError);
  write_file(dir + "/empty", "");
  EXPECT_THROW(Frozen::load(dir + "/empty"), DecodeError);
  write_file(dir + "/foreign", std::string(200, 'x'));
  EXPECT_NE(error_of([&] { Frozen::load(dir + "/foreign"); }).find("bad magic"), std::string::npos);
  EXPECT_THROW(Frozen::load(dir + "/missing"), SegmentNotFoundError);
  EXPECT_THROW(Frozen::load(dir), DecodeError);  // a directory
  // Truncated with the header rewritten to match: the root (written last) is gone.
  std::string cut = full.substr(0, 208);
  const uint64_t n = cut.size();
  std::memcpy(cut.data() + 16, &n, 8);
  write_file(dir + "/cut", cut);
  EXPECT_NE(error_of([&] { Frozen::load(dir + "/cut"); }).find("root"), std::string::npos);
  // A file whose header is intact but whose nodes are damaged loads in O(1) and fails on access.
  std::string bad = full;
  const uint64_t outside = (uint64_t{1} << 32) | 6;
  const size_t root_off = static_cast<size_t>(bytes[24]) | (static_cast<size_t>(bytes[25]) << 8);
  {  // entry 0's key: the slot order[0] names (slots of entry_words words, then the order)
    const size_t t = root_off & ~size_t{15};
    uint32_t log2, ew, slot0;
    std::memcpy(&log2, bad.data() + t + 8, 4);
    std::memcpy(&ew, bad.data() + t + 12, 4);
    std::memcpy(&slot0, bad.data() + t + 16 + (size_t{ew} * 8 << log2), 4);
    std::memcpy(bad.data() + t + 16 + size_t{slot0} * ew * 8 + 8, &outside, 8);
  }
  write_file(dir + "/bad", bad);
  Frozen f = Frozen::load(dir + "/bad");
  EXPECT_THROW((void)f.root().key_at(0).as_str(), DecodeError);
}

// ---- golden images -----------------------------------------------------------------------------

std::string golden_dir() {
  std::string f = __FILE__;
  return f.substr(0, f.rfind("tests/cpp/unit/")) + "tests/data/frozen/v1/";
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string bigint_decimal(std::span<const std::byte> b) {
  std::vector<uint8_t> mag(b.size());
  for (size_t i = 0; i < b.size(); ++i) mag[i] = static_cast<uint8_t>(b[i]);
  const bool neg = !mag.empty() && (mag.back() & 0x80);
  if (neg) {
    unsigned carry = 1;
    for (auto& x : mag) {
      unsigned v = static_cast<uint8_t>(~x) + carry;
      x = static_cast<uint8_t>(v);
      carry = v >> 8;
    }
  }
  std::string digits;
  auto nonzero = [&] { return std::any_of(mag.begin(), mag.end(), [](uint8_t x) { return x; }); };
  while (nonzero()) {
    unsigned rem = 0;
    for (size_t i = mag.size(); i-- > 0;) {
      const unsigned cur = rem * 256 + mag[i];
      mag[i] = static_cast<uint8_t>(cur / 10);
      rem = cur % 10;
    }
    digits.push_back(static_cast<char>('0' + rem));
  }
  if (digits.empty()) digits = "0";
  if (neg) digits.push_back('-');
  return {digits.rbegin(), digits.rend()};
}

std::string bytes_repr(std::span<const std::byte> b) {
  std::string s = "b'";
  for (std::byte x : b) {
    const auto c = static_cast<uint8_t>(x);
    if (c == '\\' || c == '\'') {
      s += '\\';
      s += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      s += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      s += buf;
    }
  }
  return s + "'";
}

std::string str_repr(std::string_view v) {
  std::string s = "'";
  for (size_t i = 0; i < v.size(); ++i) {
    const auto c = static_cast<uint8_t>(v[i]);
    if (c == 0xED && i + 2 < v.size() && static_cast<uint8_t>(v[i + 1]) >= 0xA0) {  // a surrogate
      const unsigned cp = 0xD000u | ((static_cast<uint8_t>(v[i + 1]) & 0x3Fu) << 6) |
                          (static_cast<uint8_t>(v[i + 2]) & 0x3Fu);
      char buf[12];
      std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      s += buf;
      i += 2;
    } else if (c == '\\' || c == '\'') {
      s += '\\';
      s += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      s += buf;
    } else {
      s += static_cast<char>(c);
    }
  }
  return s + "'";
}

// Python-like text of a value (the .txt siblings of the golden files).
std::string dump(const Value& v) {
  std::string s;
  auto items = [&](const char* open, const char* close, bool one_comma) {
    s = open;
    for (uint64_t i = 0, n = v.size(); i < n; ++i) s += (i ? ", " : "") + dump(v[i]);
    if (one_comma && v.size() == 1) s += ",";
    return s + close;
  };
  auto keys = [&](const char* open, const char* close) {
    s = open;
    for (uint64_t i = 0, n = v.size(); i < n; ++i) {
      s += (i ? ", " : "") + dump(v.key_at(i));
      if (v.type() == Type::kDict) s += ": " + dump(v.value_at(i));
    }
    return s + close;
  };
  switch (v.type()) {
    case Type::kNone: return "None";
    case Type::kBool: return v.as_bool() ? "True" : "False";
    case Type::kInt: return std::to_string(v.as_int());
    case Type::kBigInt: return bigint_decimal(v.bigint_bytes());
    case Type::kFloat: return float_repr(v.as_float());
    case Type::kStr: return str_repr(v.as_str());
    case Type::kBytes: return bytes_repr(v.as_bytes());
    case Type::kPickle: return "pickle(" + bytes_repr(v.as_bytes()) + ")";
    case Type::kList: return items("[", "]", false);
    case Type::kTuple: return items("(", ")", true);
    case Type::kDict: return keys("{", "}");
    case Type::kSet: return v.size() ? keys("{", "}") : "set()";
    case Type::kFrozenSet: return v.size() ? keys("frozenset({", "})") : "frozenset()";
    case Type::kNdarray: {
      const NdView nd = v.as_ndarray();
      s = "ndarray(dtype=" + std::string(nd.descr) + ", shape=(";
      for (size_t i = 0; i < nd.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(nd.shape[i]);
      s += nd.shape.size() == 1 ? ",)" : ")";
      s += std::string(", order=") + (nd.fortran ? "'F'" : "'C'") + ", data=" +
           bytes_repr({nd.data, static_cast<size_t>(nd.nbytes)}) + ")";
      return s;
    }
  }
  return "?";
}

Ref build_scalars(Builder& b) {
  std::vector<Ref> v = {
      b.none(), b.boolean(false), b.boolean(true), b.integer(0), b.integer(1), b.integer(-1),
      b.integer(42), b.integer(-42), b.integer(L::kInlineIntMax), b.integer(L::kInlineIntMin),
      b.integer(L::kInlineIntMax + 1), b.integer(L::kInlineIntMin - 1),
      b.integer(std::numeric_limits<int64_t>::max()), b.integer(std::numeric_limits<int64_t>::min()),
      b.big_integer(pow2_bytes(64, false)), b.big_integer(pow2_bytes(70, false)),
      b.big_integer(pow2_bytes(70, true)), b.big_integer(pow2_bytes(200, false)),
      b.floating(0.0), b.floating(-0.0), b.floating(0.5), b.floating(1.5), b.floating(-2.25),
      b.floating(1e300), b.floating(5e-324), b.floating(INFINITY), b.floating(-INFINITY),
      b.floating(std::numeric_limits<double>::quiet_NaN())};
  return b.list(v);
}

Ref build_text(Builder& b) {
  std::vector<Ref> v = {
      b.str(""), b.str("ascii text"), b.str("h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x90\x8d"),
      b.str("\xed\xa0\x80", L::kStrSurrogates),  // '\ud800', written with surrogatepass
      b.str("quote ' and \\ backslash\n"), b.bytes({}), b.bytes(as_span(std::string_view("\x00\x01\x7f\x80\xff", 5))),
      b.bytes(as_span("bytes"))};
  return b.tuple(v);
}

// Builds a dict from (key, value) builders called in order (never as two function arguments:
// their evaluation order is unspecified, and the golden bytes depend on the order of nodes).
Ref ordered_dict(Builder& b, std::initializer_list<std::pair<std::function<Ref()>, std::function<Ref()>>> kv) {
  std::vector<Ref> keys, vals;
  for (const auto& [k, v] : kv) keys.push_back(k());
  for (const auto& [k, v] : kv) vals.push_back(v());
  return b.dict(keys, vals);
}

Ref build_containers(Builder& b) {
  auto str = [&](const char* s) { return [&b, s] { return b.str(s); }; };
  auto ref = [](Ref r) { return [r] { return r; }; };
  const Ref one_two_three[] = {b.integer(1), b.integer(2), b.integer(3)};
  const Ref mixed[] = {b.integer(1), b.str("two"), b.floating(3.0)};
  const Ref set_items[] = {b.integer(1), b.integer(2), b.integer(3), b.str("x")};
  const Ref fs_items[] = {b.bytes(as_span("a")), b.bytes(as_span("b"))};
  const Ref pair[] = {b.integer(1), b.integer(2)};
  const Ref none_true[] = {b.none(), b.boolean(true)};
  const Ref nested_tuple[] = {b.str("a"), b.tuple(none_true)};
  const Ref fs12[] = {b.integer(1), b.integer(2)};
  const Ref fsx[] = {b.str("x")};
  const Ref fs_nested[] = {b.frozenset(fsx)};
  const Ref one[] = {b.integer(1)};
  const Ref l1[] = {b.list(one)};
  const Ref l2[] = {b.list(l1)};
  const Ref int_keys = ordered_dict(b, {{ref(b.integer(1)), str("one")},
                                        {ref(b.integer(-7)), str("minus seven")},
                                        {[&] { return b.big_integer(pow2_bytes(70, false)); }, str("big")},
                                        {[&] { return b.floating(1.5); }, str("float")}});
  const Ref tuple_keys = ordered_dict(b, {{[&] { return b.tuple(pair); }, str("pair")},
                                          {[&] { return b.tuple(nested_tuple); }, str("nested")},
                                          {[&] { return b.tuple({}); }, str("empty")}});
  const Ref frozenset_keys = ordered_dict(b, {{[&] { return b.frozenset(fs12); }, str("fs12")},
                                              {[&] { return b.frozenset({}); }, str("empty")},
                                              {[&] { return b.frozenset(fs_nested); }, str("nested")}});
  const Ref c = ordered_dict(b, {{str("c"), [&] { return b.list(l2); }}});
  const Ref bb = ordered_dict(b, {{str("b"), ref(c)}});
  const Ref nested = ordered_dict(b, {{str("a"), ref(bb)}});
  return ordered_dict(
      b, {{str("list"), [&] { return b.list(one_two_three); }},
          {str("tuple"), [&] { return b.tuple(mixed); }},
          {str("empty_list"), [&] { return b.list({}); }},
          {str("empty_tuple"), [&] { return b.tuple({}); }},
          {str("empty_dict"), [&] { return b.dict({}, {}); }},
          {str("set"), [&] { return b.set(set_items); }},
          {str("frozenset"), [&] { return b.frozenset(fs_items); }},
          {str("empty_set"), [&] { return b.set({}); }},
          {str("int_keys"), ref(int_keys)},
          {str("tuple_keys"), ref(tuple_keys)},
          {str("frozenset_keys"), ref(frozenset_keys)},
          {str("nested"), ref(nested)},
          {ref(b.none()), str("none key")},
          {ref(b.boolean(true)), str("true key")},
          {[&] { return b.bytes(as_span("bytes key")); }, ref(b.integer(1))},
          {[&] { return b.floating(0.25); }, str("quarter")}});
}

// pickle.dumps(complex(1, 2), protocol=5), computed once with CPython 3.11.
constexpr uint8_t kComplexPickle[] = {
    128, 5,   149, 46,  0,   0,   0,   0,   0,   0,   0,   140, 8,   98,  117, 105, 108, 116, 105,
    110, 115, 148, 140, 7,   99,  111, 109, 112, 108, 101, 120, 148, 147, 148, 71,  63,  240, 0,
    0,   0,   0,   0,   0,   71,  64,  0,   0,   0,   0,   0,   0,   0,   134, 148, 82,  148, 46};

Ref build_leaves(Builder& b) {
  const double f8[] = {0.0, 0.5, 1.0, 1.5, 2.0, 2.5};
  const uint64_t shape23[] = {2, 3};
  const int32_t i4[] = {1, 2, 3, 4};
  const uint64_t shape22[] = {2, 2};
  const int64_t scalar = 7;
  const Ref array = b.ndarray("'<f8'", 8, shape23, false, f8, sizeof f8);
  const Ref pkl = b.pickle(std::as_bytes(std::span(kComplexPickle)));
  const Ref both[] = {array, pkl};
  const Ref keys[] = {b.str("array"), b.str("fortran"), b.str("scalar"), b.str("pickle"), b.str("mixed")};
  const Ref vals[] = {array, b.ndarray("'<i4'", 4, shape22, true, i4, sizeof i4),
                      b.ndarray("'<i8'", 8, {}, false, &scalar, 8), pkl, b.list(both)};
  return b.dict(keys, vals);
}

struct Golden {
  const char* name;
  Ref (*build)(Builder&);
  const char* about;
};
const Golden kGoldens[] = {
    {"scalars", build_scalars, "None, bools, inline and big ints at every boundary, floats incl. -0.0/inf/nan"},
    {"text", build_text, "str (ASCII, non-ASCII, a lone surrogate written with surrogatepass) and bytes"},
    {"containers", build_containers,
     "list, tuple, dict, set, frozenset (empty and not), dicts keyed by int/bigint/float/str/bytes/"
     "None/bool/tuple/frozenset, nesting"},
    {"leaves", build_leaves, "ndarray leaves ('<f8' (2, 3), '<i4' Fortran (2, 2), '<i8' 0-d) and a kPickle "
                             "leaf holding pickle.dumps(complex(1, 2), protocol=5)"},
};

std::string txt_of(const Golden& g, const Value& root) {
  return std::string("# ") + g.name + ".shoal: " + g.about +
         ".\n# Made by build_" + g.name +
         "() in tests/cpp/unit/frozen_test.cpp (seed kDefaultHashSeed); the line below is the root,\n"
         "# in Python-like text (floats shortest round-trip, ndarray data as raw bytes).\n" +
         dump(root) + "\n";
}

TEST(FrozenGolden, RebuildingGivesTheSameBytesAndEveryValueReadsBack) {
  const bool regen = std::getenv("SHOAL_REGEN_GOLDEN") != nullptr &&
                     std::string(std::getenv("SHOAL_REGEN_GOLDEN")) == "1";
  for (const Golden& g : kGoldens) {
    SCOPED_TRACE(g.name);
    Builder b;
    auto bytes = b.finish_bytes(g.build(b));
    {  // determinism within one run
      Builder b2;
      EXPECT_EQ(b2.finish_bytes(g.build(b2)), bytes);
    }
    const std::string base = golden_dir() + g.name;
    if (regen) {
      ::mkdir((golden_dir() + "..").c_str(), 0755);
      ::mkdir(golden_dir().c_str(), 0755);
      Opened o(bytes);
      write_file(base + ".shoal", std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
      write_file(base + ".txt", txt_of(g, o.root()));
    }
    const std::string stored = read_file(base + ".shoal");
    ASSERT_FALSE(stored.empty()) << "missing " << base << ".shoal (SHOAL_REGEN_GOLDEN=1 makes it)";
    EXPECT_EQ(stored, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()))
        << "the builder no longer writes " << g.name << ".shoal byte for byte: a format change needs a "
        << "new tests/data/frozen/vN/, not an edit of v1";
    Opened o(std::vector<std::byte>(reinterpret_cast<const std::byte*>(stored.data()),
                                    reinterpret_cast<const std::byte*>(stored.data()) + stored.size()));
    o.image.validate();
    EXPECT_EQ(read_file(base + ".txt"), txt_of(g, o.root()));
  }
}

TEST(FrozenGolden, SpotChecks) {
  auto open = [](const char* name) {
    const std::string s = read_file(golden_dir() + name + ".shoal");
    return std::make_unique<Opened>(std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                                           reinterpret_cast<const std::byte*>(s.data()) + s.size()));
  };
  auto c = open("containers");
  const Value r = c->root();
  EXPECT_EQ(r.at("int_keys").at(std::ldexp(1.0, 70)).as_str(), "big");
  EXPECT_EQ(r.at("int_keys").at(int64_t{1}).as_str(), "one");
  EXPECT_EQ(r.at(int64_t{1}).as_str(), "true key");  // True == 1
  EXPECT_EQ(r.at(0.25).as_str(), "quarter");
  EXPECT_EQ(r.find_bytes(as_span("bytes key"))->as_int(), 1);
  EXPECT_EQ(r.at("nested").at("a").at("b").at("c")[0][0][0].as_int(), 1);
  auto t = open("text");
  EXPECT_EQ(t->root()[3].str_flags(), L::kStrSurrogates);
  EXPECT_EQ(t->root()[3].as_str(), "\xed\xa0\x80");
  auto l = open("leaves");
  EXPECT_TRUE(l->image.has_pickles());
  const NdView nd = l->root().at("array").as_ndarray();
  EXPECT_EQ(nd.shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(reinterpret_cast<const double*>(nd.data)[5], 2.5);
  EXPECT_EQ(l->root().at("pickle").as_bytes().size(), sizeof kComplexPickle);
  auto s = open("scalars");
  EXPECT_TRUE(std::isnan(s->root()[27].as_float()));
}

}  // namespace
}  // namespace shoal::frozen
