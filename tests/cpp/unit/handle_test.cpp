#include "shoal/handle.hpp"

#include <gtest/gtest.h>

#include <string>

namespace shoal {
namespace {

Handle sample() {
  Handle h;
  h.session = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  h.object = {0x1111111111111111ULL, 0x2222222222222222ULL};
  h.pin = 0xdeadbeef;
  h.size = 5ULL << 30;  // sizes past 4 GiB are ordinary
  h.kind = 1;
  h.flags = kHandleReadOnly;
  return h;
}

TEST(Handle, EncodeDecodeRoundTrips) {
  Handle h = sample();
  std::string text = h.encode();
  EXPECT_EQ(text.size(), kHandleTextSize);
  EXPECT_EQ(text.rfind("shoal1:", 0), 0u);
  auto back = Handle::decode(text);
  ASSERT_TRUE(back) << back.status().message();
  EXPECT_EQ(back.value(), h);
}

TEST(Handle, EveryTruncationIsDecodeErrorWithOffset) {
  std::string text = sample().encode();
  for (size_t n = 0; n < text.size(); ++n) {
    auto r = Handle::decode(std::string_view(text).substr(0, n));
    ASSERT_FALSE(r) << n;
    EXPECT_EQ(r.status().code(), Errc::kDecode);
  }
  auto r = Handle::decode(text.substr(0, 100));
  EXPECT_NE(r.status().message().find("truncated at offset 100"), std::string::npos)
      << r.status().message();
}

TEST(Handle, EverySingleCharacterChangeIsRejected) {
  const std::string text = sample().encode();
  for (size_t i = 0; i < text.size(); ++i) {
    for (char c : {'0', 'f', 'x', ':', 'A'}) {
      if (text[i] == c) continue;
      std::string t = text;
      t[i] = c;
      auto r = Handle::decode(t);
      EXPECT_FALSE(r) << "offset " << i << " char " << c;
      if (!r) {
        EXPECT_EQ(r.status().code(), Errc::kDecode);
      }
    }
  }
}

TEST(Handle, TrailingBytesAndForeignPrefixAreRejected) {
  std::string text = sample().encode();
  EXPECT_EQ(Handle::decode(text + "x").status().code(), Errc::kDecode);
  EXPECT_EQ(Handle::decode("pickle:" + text.substr(7)).status().code(), Errc::kDecode);
  EXPECT_EQ(Handle::decode("").status().code(), Errc::kDecode);
}

TEST(Handle, UnknownFlagsAreRejectedEvenWithAValidChecksum) {
  Handle h = sample();
  h.flags = 0x80;
  auto r = Handle::decode(h.encode());
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("unknown flags"), std::string::npos);
}

TEST(Handle, ZeroIdsAreRejected) {
  Handle h = sample();
  h.object = {};
  EXPECT_EQ(Handle::decode(h.encode()).status().code(), Errc::kDecode);
}

TEST(Id128, RandomIdsDifferAndRoundTripThroughHex) {
  Id128 a = Id128::random(), b = Id128::random();
  EXPECT_NE(a, b);
  EXPECT_FALSE(a.is_zero());
  auto back = Id128::from_hex(a.hex());
  ASSERT_TRUE(back);
  EXPECT_EQ(back.value(), a);
  EXPECT_FALSE(Id128::from_hex("0123"));
  EXPECT_FALSE(Id128::from_hex(std::string(32, 'G')));
}

TEST(Crc32, MatchesTheZlibCheckValue) {
  // The standard check value of CRC-32/ISO-HDLC for "123456789".
  EXPECT_EQ(crc32("123456789", 9), 0xCBF43926u);
}

}  // namespace
}  // namespace shoal
