// shoal::Array: create, attach (same process and a fresh one), typed views, and
// parse_array_header checked table-driven on hand-built bytes.
#include <gtest/gtest.h>

#include <complex>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "layout/array_layout.hpp"
#include "shoal/array.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

using layout::ArrayHeader;

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- create / attach -------------------------------------------------------------------------

TEST(Array, CreateIsZeroFilledWithTheRequestedLayout) {
  test::ScopedRuntimeDir rd;
  const uint64_t shape[] = {3, 4};
  Array a = Array::create<double>(shape);
  EXPECT_EQ(a.descr(), "'<f8'");
  EXPECT_EQ(a.itemsize(), 8u);
  EXPECT_EQ(a.shape(), (std::vector<uint64_t>{3, 4}));
  EXPECT_FALSE(a.fortran());
  EXPECT_EQ(a.nbytes(), 96u);
  EXPECT_EQ(a.element_count(), 12u);
  EXPECT_EQ(a.data_offset() % layout::kArrayAlign, 0u);
  EXPECT_GE(a.data_offset(), layout::kArrayHeaderSize + a.descr().size());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % layout::kArrayAlign, 0u);
  EXPECT_EQ(a.segment().kind(), ObjectKind::kArray);
  EXPECT_FALSE(a.segment().read_only());
  for (double v : a.as<const double>()) EXPECT_EQ(v, 0.0);

  Array f = Array::create<float>(shape, /*fortran=*/true);
  EXPECT_TRUE(f.fortran());
  EXPECT_EQ(f.descr(), "'<f4'");
}

TEST(Array, ZeroDimensionalAndEmptyArrays) {
  test::ScopedRuntimeDir rd;
  Array scalar = Array::create<int64_t>({});
  EXPECT_TRUE(scalar.shape().empty());
  EXPECT_EQ(scalar.element_count(), 1u);
  EXPECT_EQ(scalar.nbytes(), 8u);
  scalar.as<int64_t>()[0] = 42;
  EXPECT_EQ(Array::attach(scalar.handle()).as<int64_t>()[0], 42);

  const uint64_t empty_shape[] = {0, 5};
  Array empty = Array::create<double>(empty_shape);
  EXPECT_EQ(empty.nbytes(), 0u);
  EXPECT_EQ(empty.element_count(), 0u);
  EXPECT_TRUE(empty.as<double>().empty());
  Array again = Array::attach(empty.handle());
  EXPECT_EQ(again.shape(), (std::vector<uint64_t>{0, 5}));
}

TEST(Array, AttachInTheSameProcessSeesTheSameElements) {
  test::ScopedRuntimeDir rd;
  const uint64_t shape[] = {1000};
  Array a = Array::create<double>(shape);
  auto v = a.as<double>();
  std::iota(v.begin(), v.end(), 0.0);
  Array b = Array::attach(a.handle());
  EXPECT_EQ(b.descr(), a.descr());
  EXPECT_EQ(b.shape(), a.shape());
  EXPECT_EQ(b.segment().id(), a.segment().id());
  auto w = b.as<const double>();
  EXPECT_EQ(std::accumulate(w.begin(), w.end(), 0.0), 999.0 * 1000.0 / 2.0);
  v[0] = -5.0;
  EXPECT_EQ(w[0], -5.0);
}

SHOAL_CHILD_CASE(array_sum_is_499500) {
  Array a = Array::attach(arg);
  if (a.descr() != "'<f8'" || a.shape() != std::vector<uint64_t>{1000}) return 2;
  auto v = a.as<const double>();
  if (std::accumulate(v.begin(), v.end(), 0.0) != 499500.0) return 1;
  if (!a.segment().read_only()) return 3;
  return 0;
}

TEST(Array, AFreshProcessAttachesASealedArrayByHandle) {
  test::ScopedRuntimeDir rd;
  const uint64_t shape[] = {1000};
  Array a = Array::create<double>(shape);
  auto v = a.as<double>();
  std::iota(v.begin(), v.end(), 0.0);
  a.seal();
  EXPECT_TRUE(a.segment().read_only());
  test::ChildProcess child("array_sum_is_499500", a.handle());
  EXPECT_EQ(child.wait(), 0);
}

// ---- typed views -----------------------------------------------------------------------------

template <class T>
class ArrayTyped : public ::testing::Test {};
using Arithmetic = ::testing::Types<bool, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t,
                                    int64_t, uint64_t, float, double, std::complex<float>,
                                    std::complex<double>>;
TYPED_TEST_SUITE(ArrayTyped, Arithmetic);

TYPED_TEST(ArrayTyped, TypedViewsRoundTripThroughAttach) {
  test::ScopedRuntimeDir rd;
  const uint64_t shape[] = {2, 3, 5};
  Array a = Array::create<TypeParam>(shape);
  EXPECT_EQ(a.descr(), dtype_descr_of<TypeParam>());
  EXPECT_EQ(a.itemsize(), sizeof(TypeParam));
  auto v = a.template as<TypeParam>();
  ASSERT_EQ(v.size(), 30u);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<TypeParam>(i % 2 ? 1 : 0);
  Array b = Array::attach(a.handle());
  auto w = b.template as<const TypeParam>();
  ASSERT_EQ(w.size(), 30u);
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(w[i], static_cast<TypeParam>(i % 2 ? 1 : 0));
}

TEST(Array, AsTheWrongTypeThrowsNamingBothDtypes) {
  test::ScopedRuntimeDir rd;
  const uint64_t shape[] = {4};
  Array a = Array::create<double>(shape);
  EXPECT_THROW(a.as<float>(), InvalidArgumentError);
  // Same size, different kind: still refused.
  EXPECT_EQ(error_of([&] { a.as<int64_t>(); }), "array has dtype '<f8', not '<i8'");
  EXPECT_EQ(error_of([&] { a.as<std::complex<float>>(); }), "array has dtype '<f8', not '<c8'");
  EXPECT_NO_THROW(a.as<const double>());

  // A structured dtype has no arithmetic view at all.
  Array s = Array::create("[('x', '<i4'), ('y', '<f8')]", 12, shape);
  EXPECT_EQ(s.nbytes(), 48u);
  EXPECT_EQ(error_of([&] { s.as<int32_t>(); }),
            "array has dtype [('x', '<i4'), ('y', '<f8')], not '<i4'");
}

TEST(Array, CreateRejectsImpossibleRequests) {
  test::ScopedRuntimeDir rd;
  const std::vector<uint64_t> dims17(17, 1);
  EXPECT_EQ(error_of([&] { Array::create<double>(dims17); }),
            "an array has at most 16 dimensions, got 17");
  const uint64_t one[] = {1};
  EXPECT_EQ(error_of([&] { Array::create("", 8, one); }),
            "dtype description must have 1 to 1 MiB of text");
  const uint64_t wraps[] = {1ULL << 32, 1ULL << 32};
  EXPECT_EQ(error_of([&] { Array::create<double>(wraps); }),
            "array is too big: shape (4294967296, 4294967296) of 8-byte items: its nonzero "
            "dimensions times the item size exceed 2**63 - 1 bytes (numpy refuses such a shape too)");
  // numpy's rule: a zero dimension does not excuse the others (np.zeros refuses this too).
  const uint64_t empty_but_huge[] = {1ULL << 40, 0, 1ULL << 40};
  EXPECT_NE(error_of([&] { Array::create<double>(empty_but_huge); }).find("array is too big"),
            std::string::npos);
  const uint64_t huge[] = {1ULL << 54};  // 2**57 bytes: a valid shape, beyond shoal's 2**56
  EXPECT_NE(error_of([&] { Array::create<double>(huge); }).find("is too large"),
            std::string::npos);
  EXPECT_THROW(Array::create<double>(huge), InvalidArgumentError);
}

TEST(Array, FromSegmentRefusesWhatIsNotAnArray) {
  test::ScopedRuntimeDir rd;
  EXPECT_EQ(error_of([] { Array::from_segment(Segment{}); }), "segment is closed");
  Segment bytes = Segment::create(4096);
  EXPECT_EQ(error_of([&] { Array::from_segment(bytes); }), "segment holds kind 0, not an array");
  EXPECT_THROW(Array::attach(bytes.handle()), InvalidArgumentError);
  // An array segment whose header was never written (all zeros) is corrupt, not a crash.
  Segment blank = Segment::create(4096, {ObjectKind::kArray, false});
  EXPECT_THROW(Array::from_segment(blank), CorruptSegmentError);
}

// ---- parse_array_header on hand-built bytes ------------------------------------------------

struct Built {
  std::vector<uint64_t> buf;  // 8-aligned storage standing for a segment's data area
  uint64_t size = 0;
  ArrayHeader* h() { return reinterpret_cast<ArrayHeader*>(buf.data()); }
  const std::byte* data() const { return reinterpret_cast<const std::byte*>(buf.data()); }
};

// A valid header + descr + elements for `shape` items of `itemsize`, in exactly `size` bytes
// (0: just enough).
Built build(std::vector<uint64_t> shape, uint64_t itemsize = 8, std::string descr = "'<f8'",
            uint64_t size = 0) {
  uint64_t count = 1;
  for (uint64_t d : shape) count *= d;
  Built b;
  const uint64_t data_offset =
      (layout::kArrayHeaderSize + descr.size() + layout::kArrayAlign - 1) / layout::kArrayAlign *
      layout::kArrayAlign;
  b.size = size ? size : data_offset + count * itemsize;
  b.buf.assign((b.size + 7) / 8, 0);
  ArrayHeader* h = b.h();
  h->magic = layout::kArrayMagic;
  h->version = layout::kArrayVersion;
  h->ndim = static_cast<uint32_t>(shape.size());
  h->itemsize = itemsize;
  h->nbytes = count * itemsize;
  h->data_offset = data_offset;
  h->descr_size = descr.size();
  for (size_t i = 0; i < shape.size(); ++i) h->shape[i] = shape[i];
  std::memcpy(reinterpret_cast<char*>(b.buf.data()) + sizeof(ArrayHeader), descr.data(),
              descr.size());
  return b;
}

TEST(ArrayHeader, AValidHeaderParses) {
  Built b = build({3, 4}, 8, "'<f8'");
  b.h()->fortran = 1;
  auto r = parse_array_header(b.data(), b.size);
  ASSERT_TRUE(r) << r.status().message();
  const ArrayInfo& info = r.value();
  EXPECT_EQ(info.descr, "'<f8'");
  EXPECT_EQ(info.itemsize, 8u);
  EXPECT_EQ(info.shape, (std::vector<uint64_t>{3, 4}));
  EXPECT_TRUE(info.fortran);
  EXPECT_EQ(info.nbytes, 96u);
  EXPECT_EQ(info.data_offset, 256u);  // 192 + 5 rounded up to 64

  // Trailing room after the elements is fine (segments are rounded up).
  Built roomy = build({3, 4}, 8, "'<f8'", 4096);
  EXPECT_TRUE(parse_array_header(roomy.data(), roomy.size));
  // 0-d: one element; empty: no element bytes at all.
  EXPECT_TRUE(parse_array_header(build({}).data(), build({}).size));
  Built empty = build({0, 7});
  EXPECT_TRUE(parse_array_header(empty.data(), empty.size));
}

struct Corruption {
  const char* name;
  void (*apply)(Built&);
  Errc expect;
  const char* message_part;
};

TEST(ArrayHeader, EachBrokenInvariantIsReported) {
  const Corruption cases[] = {
      {"magic", [](Built& b) { b.h()->magic ^= 1; }, Errc::kCorrupt, "bad magic at offset 0"},
      {"version", [](Built& b) { b.h()->version = 2; }, Errc::kIncompatible,
       "version 2, this build reads 1"},
      {"reserved0", [](Built& b) { b.h()->reserved0 = 1; }, Errc::kIncompatible, "reserved"},
      {"reserved1", [](Built& b) { b.h()->reserved1 = 1; }, Errc::kIncompatible, "reserved"},
      {"ndim", [](Built& b) { b.h()->ndim = 17; }, Errc::kCorrupt, "ndim 17 exceeds 16"},
      {"descr_size 0", [](Built& b) { b.h()->descr_size = 0; }, Errc::kCorrupt,
       "are inconsistent"},
      {"descr_size huge", [](Built& b) { b.h()->descr_size = UINT64_MAX - 100; }, Errc::kCorrupt,
       "are inconsistent"},
      {"descr past data", [](Built& b) { b.h()->descr_size = 65; }, Errc::kCorrupt,
       "data offset 256 / descr size 65 are inconsistent"},
      {"data_offset misaligned", [](Built& b) { b.h()->data_offset = 264; }, Errc::kCorrupt,
       "data offset 264"},
      {"data_offset inside header", [](Built& b) { b.h()->data_offset = 128; }, Errc::kCorrupt,
       "data offset 128"},
      {"data_offset past segment", [](Built& b) { b.h()->data_offset = 1ULL << 40; },
       Errc::kCorrupt, "are inconsistent"},
      {"nbytes past segment",
       [](Built& b) {
         b.h()->shape[0] = 4;  // 4 x 4 x 8 = 128 bytes, the segment holds 96
         b.h()->nbytes = 128;
       },
       Errc::kCorrupt, "128 bytes of elements do not fit in the segment"},
      {"nbytes wraps",
       [](Built& b) { b.h()->nbytes = UINT64_MAX; }, Errc::kCorrupt, "do not fit in the segment"},
      {"shape x itemsize != nbytes", [](Built& b) { b.h()->shape[1] = 3; }, Errc::kCorrupt,
       "shape x itemsize does not equal nbytes"},
      // The product of the dimensions wraps to 0 modulo 2^64 and nbytes says 0: without the
      // overflow check this would pass as an empty array of 2^64 elements.
      {"shape overflows to 0",
       [](Built& b) {
         b.h()->shape[0] = 1ULL << 32;
         b.h()->shape[1] = 1ULL << 32;
         b.h()->nbytes = 0;
       },
       Errc::kCorrupt, "array shape overflows"},
      // shape fits, but shape x itemsize wraps to exactly nbytes (0).
      {"shape x itemsize overflows to 0",
       [](Built& b) {
         b.h()->ndim = 1;
         b.h()->shape[0] = 1ULL << 61;
         b.h()->nbytes = 0;
       },
       Errc::kCorrupt, "shape x itemsize does not equal nbytes"},
      // ... or wraps to a small nbytes that fits the segment: 2^61 + 2 elements of 8 bytes.
      {"shape x itemsize wraps to a fitting size",
       [](Built& b) {
         b.h()->ndim = 1;
         b.h()->shape[0] = (1ULL << 61) + 2;
         b.h()->nbytes = 16;
       },
       Errc::kCorrupt, "shape x itemsize does not equal nbytes"},
      {"itemsize 0 with bytes", [](Built& b) { b.h()->itemsize = 0; }, Errc::kCorrupt,
       "shape x itemsize does not equal nbytes"},
  };
  for (const auto& c : cases) {
    Built b = build({3, 4});
    c.apply(b);
    auto r = parse_array_header(b.data(), b.size);
    ASSERT_FALSE(r) << c.name;
    EXPECT_EQ(r.status().code(), c.expect) << c.name << ": " << r.status().message();
    EXPECT_NE(r.status().message().find(c.message_part), std::string::npos)
        << c.name << ": " << r.status().message();
  }
}

TEST(ArrayHeader, TooSmallOrNullIsCorrupt) {
  Built b = build({3, 4});
  for (uint64_t size : {uint64_t{0}, uint64_t{1}, uint64_t{191}}) {
    auto r = parse_array_header(b.data(), size);
    ASSERT_FALSE(r) << size;
    EXPECT_EQ(r.status().code(), Errc::kCorrupt);
    EXPECT_NE(r.status().message().find("smaller than its 192-byte array header"),
              std::string::npos)
        << r.status().message();
  }
  EXPECT_EQ(parse_array_header(nullptr, 4096).status().code(), Errc::kCorrupt);
  // Every truncation of a valid segment is refused (the elements no longer fit).
  for (uint64_t size = 0; size < b.size; ++size) {
    EXPECT_FALSE(parse_array_header(b.data(), size)) << size;
  }
}

}  // namespace
}  // namespace shoal
