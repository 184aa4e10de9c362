// Table-driven checks of validate_segment_header on hand-built headers.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "layout/segment_layout.hpp"
#include "shoal/segment.hpp"

namespace shoal {
namespace {

using layout::SegmentHeader;

// A header built in properly aligned storage, then copied into a buffer of `size` bytes (as a
// mapping would hold it). Only the copy's first 64 bytes matter to the validator.
struct alignas(64) HeaderBytes {
  unsigned char b[sizeof(SegmentHeader)];
  SegmentHeader* h() { return reinterpret_cast<SegmentHeader*>(b); }
};

HeaderBytes good_header(uint64_t size) {
  HeaderBytes hb{};
  SegmentHeader* h = hb.h();
  h->magic = layout::kSegmentMagic;
  h->format_version = layout::kSegmentFormatVersion;
  h->layout_fingerprint = layout::kLayoutFingerprint;
  h->state.store(layout::kSegmentReady);
  h->kind = 0;
  h->size = size;
  h->header_size = layout::kSegmentHeaderSize;
  h->object_hi = 7;
  h->object_lo = 9;
  return hb;
}

std::vector<uint64_t> as_segment(const HeaderBytes& hb, uint64_t size) {
  std::vector<uint64_t> buf((size + 7) / 8, 0);
  std::memcpy(buf.data(), hb.b, sizeof hb.b);
  return buf;
}

std::vector<uint64_t> good_segment(uint64_t size) { return as_segment(good_header(size), size); }

TEST(SegmentHeader, AValidHeaderPasses) {
  auto buf = good_segment(4096);
  EXPECT_TRUE(validate_segment_header(buf.data(), 4096, Id128{7, 9}).is_ok());
  EXPECT_TRUE(validate_segment_header(buf.data(), 4096, Id128{}).is_ok());
}

TEST(SegmentHeader, EveryListedKindPasses) {
  for (const KindInfo& k : kObjectKinds) {
    HeaderBytes hb = good_header(4096);
    hb.h()->kind = static_cast<uint32_t>(k.kind);
    auto buf = as_segment(hb, 4096);
    Status st = validate_segment_header(buf.data(), 4096, Id128{7, 9});
    EXPECT_TRUE(st.is_ok()) << k.name << ": " << st.message();
  }
}

struct Corruption {
  const char* name;
  void (*apply)(SegmentHeader*);
  Errc expect;
  const char* message_part;
};

TEST(SegmentHeader, EachBrokenInvariantIsReported) {
  const Corruption cases[] = {
      {"magic", [](SegmentHeader* h) { h->magic ^= 1; }, Errc::kIncompatible, "bad magic"},
      {"version", [](SegmentHeader* h) { h->format_version = 3; }, Errc::kIncompatible,
       "format version 3, this build reads 1"},
      {"fingerprint", [](SegmentHeader* h) { h->layout_fingerprint = 0; }, Errc::kIncompatible,
       "another layout"},
      {"state", [](SegmentHeader* h) { h->state.store(layout::kSegmentInitialising); },
       Errc::kCorrupt, "creator died"},
      {"reserved", [](SegmentHeader* h) { h->reserved = 1; }, Errc::kIncompatible, "reserved"},
      {"header_size", [](SegmentHeader* h) { h->header_size = 8; }, Errc::kCorrupt, "header_size"},
      {"size", [](SegmentHeader* h) { h->size = 1ULL << 40; }, Errc::kCorrupt, "the mapping has"},
      {"zero id", [](SegmentHeader* h) { h->object_hi = h->object_lo = 0; }, Errc::kCorrupt,
       "zero object id"},
      {"other id", [](SegmentHeader* h) { h->object_lo = 10; }, Errc::kCorrupt, "another object"},
      {"unknown kind",
       [](SegmentHeader* h) { h->kind = static_cast<uint32_t>(ObjectKind::kCount); },
       Errc::kIncompatible, "at offset 20 is unknown to this build (it knows bytes, array"},
  };
  for (const auto& c : cases) {
    HeaderBytes hb = good_header(4096);
    c.apply(hb.h());
    auto buf = as_segment(hb, 4096);
    Status st = validate_segment_header(buf.data(), 4096, Id128{7, 9});
    EXPECT_EQ(st.code(), c.expect) << c.name << ": " << st.message();
    EXPECT_NE(st.message().find(c.message_part), std::string::npos) << c.name << ": " << st.message();
  }
}

TEST(SegmentHeader, TooSmallOrNullIsCorrupt) {
  auto buf = good_segment(64);
  EXPECT_EQ(validate_segment_header(buf.data(), 63, Id128{}).code(), Errc::kCorrupt);
  EXPECT_EQ(validate_segment_header(nullptr, 4096, Id128{}).code(), Errc::kCorrupt);
}

}  // namespace
}  // namespace shoal

namespace shoal {
namespace {

// The validator must not read a field through a SegmentHeader* on an address that need not
// be aligned (UBSan: misaligned member access; segment_header_fuzzer found one). Python
// passes bytes objects and the fuzzer heap buffers, so every alignment must work.
TEST(SegmentHeader, ValidatesAtAnyAlignment) {
  auto good = good_segment(128);
  for (size_t shift = 0; shift < 8; ++shift) {
    std::vector<unsigned char> raw(128 + 8);
    std::memcpy(raw.data() + shift, good.data(), 128);
    EXPECT_TRUE(validate_segment_header(raw.data() + shift, 128, Id128{7, 9}).is_ok()) << shift;
  }
}

}  // namespace
}  // namespace shoal
