#include "shoal/handle.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>
#include <string_view>

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

// A held handle (valid while its sender holds the object): flag bit 1, no pin, with or
// without the hint, is one spelling that round-trips; a held flag with a pin is refused.
TEST(Handle, HeldHandlesRoundTripWithAndWithoutAHint) {
  Handle h = sample();
  h.pin = 0;
  h.flags = kHandleHeld;
  EXPECT_TRUE(h.held());
  for (uint32_t flags : {kHandleHeld, kHandleHeld | kHandleReadOnly}) {
    h.flags = flags;
    h.hint_pid = 0;
    h.hint_fd = 0;
    auto back = Handle::decode(h.encode());
    ASSERT_TRUE(back) << back.status().message();
    EXPECT_EQ(back.value(), h);
    EXPECT_TRUE(back.value().held());
    h.hint_pid = 4242;
    h.hint_fd = 17;
    const std::string text = h.encode();
    EXPECT_EQ(text.size(), kHandleHintedTextSize);
    back = Handle::decode(text);
    ASSERT_TRUE(back) << back.status().message();
    EXPECT_EQ(back.value(), h);
    // Cut to 133 bytes: the same held handle without its hint.
    back = Handle::decode(std::string_view(text).substr(0, kHandleTextSize));
    ASSERT_TRUE(back) << back.status().message();
    EXPECT_TRUE(back.value().held());
    EXPECT_FALSE(back.value().has_hint());
  }
  EXPECT_FALSE(sample().held());
}

TEST(Handle, AHeldHandleWithAPinIsRejectedEvenWithAValidChecksum) {
  Handle h = sample();  // pin 0xdeadbeef
  h.flags = kHandleHeld;
  for (uint32_t pid : {0u, 99u}) {
    h.hint_pid = pid;
    h.hint_fd = pid != 0 ? 5 : 0;
    auto r = Handle::decode(h.encode());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.status().code(), Errc::kDecode);
    EXPECT_NE(r.status().message().find("held handle"), std::string::npos) << r.status().message();
  }
  h.flags = 1u << 2;  // the next bit is still unknown
  h.pin = 0;
  EXPECT_NE(Handle::decode(h.encode()).status().message().find("unknown flags"), std::string::npos);
}

TEST(Handle, UnknownKindsAreRejectedEvenWithAValidChecksum) {
  for (uint32_t kind : {static_cast<uint32_t>(ObjectKind::kCount), 0x1234u, 0xffffffffu}) {
    Handle h = sample();
    h.kind = kind;
    const std::string text = h.encode();  // encode() writes any kind: only decode() refuses
    auto r = Handle::decode(text);
    ASSERT_FALSE(r) << kind;
    EXPECT_EQ(r.status().code(), Errc::kDecode);
    const std::string want = "object kind " + std::to_string(kind) +
                             " at offset 107, unknown to this build (it knows bytes, array";
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status().message();
    EXPECT_EQ(text.substr(107, 8), [&] {
      char buf[9];
      std::snprintf(buf, sizeof buf, "%08x", kind);
      return std::string(buf);
    }()) << "the message's offset is where the kind field starts";
  }
}

TEST(Handle, EveryListedKindRoundTrips) {
  for (const KindInfo& k : kObjectKinds) {
    Handle h = sample();
    h.kind = static_cast<uint32_t>(k.kind);
    auto back = Handle::decode(h.encode());
    ASSERT_TRUE(back) << k.name << ": " << back.status().message();
    EXPECT_EQ(back.value(), h);
    h.hint_pid = 42;  // and with a hint
    h.hint_fd = 7;
    back = Handle::decode(h.encode());
    ASSERT_TRUE(back) << k.name << ": " << back.status().message();
    EXPECT_EQ(back.value(), h);
  }
}

TEST(ObjectKinds, TheTableIsDenseWithUniqueNonEmptyNamesAndTheReleasedIds) {
  ASSERT_EQ(kObjectKinds.size(), static_cast<size_t>(ObjectKind::kCount));
  std::set<std::string_view> names;
  for (size_t i = 0; i < kObjectKinds.size(); ++i) {
    const KindInfo& k = kObjectKinds[i];
    EXPECT_EQ(static_cast<size_t>(k.kind), i);
    EXPECT_FALSE(k.name.empty()) << i;
    EXPECT_FALSE(k.description.empty()) << i;
    EXPECT_TRUE(names.insert(k.name).second) << "duplicate kind name " << k.name;
    for (char c : k.name) {
      EXPECT_TRUE((c >= 'a' && c <= 'z') || c == '_') << "kind name " << k.name;
    }
    EXPECT_TRUE(kind_known(static_cast<uint32_t>(i)));
    EXPECT_EQ(kind_name(static_cast<uint32_t>(i)), k.name);
  }
  // The ids in handles and segment headers already written.
  EXPECT_EQ(kind_name(0), "bytes");
  EXPECT_EQ(kind_name(1), "array");
  EXPECT_EQ(kind_name(2), "frozen");
  const auto count = static_cast<uint32_t>(ObjectKind::kCount);
  EXPECT_FALSE(kind_known(count));
  EXPECT_EQ(kind_name(count), "");
  EXPECT_FALSE(kind_known(0xffffffffu));
  EXPECT_EQ(kind_name(0xffffffffu), "");
  EXPECT_EQ(known_kind_names().rfind("bytes, array, frozen", 0), 0u) << known_kind_names();
}

TEST(Handle, ZeroIdsAreRejected) {
  Handle h = sample();
  h.object = {};
  EXPECT_EQ(Handle::decode(h.encode()).status().code(), Errc::kDecode);
}

Handle hinted() {
  Handle h = sample();
  h.hint_pid = 4194304;  // pid_max's ceiling
  h.hint_fd = 0x1234;
  return h;
}

TEST(Handle, AHintRoundTripsAndItsFirst133BytesAreTheHandleWithoutIt) {
  Handle h = hinted();
  std::string text = h.encode();
  EXPECT_EQ(text.size(), kHandleHintedTextSize);
  EXPECT_EQ(text.substr(kHandleTextSize, 4), ";h1:");
  auto back = Handle::decode(text);
  ASSERT_TRUE(back) << back.status().message();
  EXPECT_EQ(back.value(), h);
  Handle plain = h;
  plain.hint_pid = 0;
  plain.hint_fd = 0;
  EXPECT_EQ(text.substr(0, kHandleTextSize), plain.encode());
  auto cut = Handle::decode(std::string_view(text).substr(0, kHandleTextSize));
  ASSERT_TRUE(cut);
  EXPECT_FALSE(cut.value().has_hint());
}

TEST(Handle, EveryTruncationOfAHintedHandleIsDecodeErrorExceptTheBareHandle) {
  std::string text = hinted().encode();
  for (size_t n = 0; n < text.size(); ++n) {
    auto r = Handle::decode(std::string_view(text).substr(0, n));
    if (n == kHandleTextSize) {
      EXPECT_TRUE(r) << r.status().message();
      continue;
    }
    ASSERT_FALSE(r) << n;
    EXPECT_EQ(r.status().code(), Errc::kDecode);
  }
  auto r = Handle::decode(text.substr(0, 150));
  EXPECT_NE(r.status().message().find("hint truncated at offset 150"), std::string::npos)
      << r.status().message();
  r = Handle::decode(text + "0");
  EXPECT_NE(r.status().message().find("1 trailing bytes at offset 163"), std::string::npos)
      << r.status().message();
}

TEST(Handle, EverySingleCharacterChangeInTheHintIsRejected) {
  const std::string text = hinted().encode();
  for (size_t i = kHandleTextSize; i < text.size(); ++i) {
    for (char c : {'0', 'f', 'x', ':', ';', 'A'}) {
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

// A hint that is well-formed hex with a valid checksum but that encode() never writes.
std::string forge_hint(const std::string& base, const std::string& tag, uint64_t pid,
                       uint64_t fd) {
  char body[64];
  std::snprintf(body, sizeof body, "%s%08llx:%08llx", tag.c_str(),
                static_cast<unsigned long long>(pid), static_cast<unsigned long long>(fd));
  std::string t = base + body;
  char crc[16];
  std::snprintf(crc, sizeof crc, ":%08x", crc32(t.data(), t.size()));
  return t + crc;
}

TEST(Handle, UnknownHintVersionsAndImpossibleHintsAreRejected) {
  const std::string base = sample().encode();
  ASSERT_TRUE(Handle::decode(forge_hint(base, ";h1:", 77, 5)));
  auto r = Handle::decode(forge_hint(base, ";h2:", 77, 5));
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("unknown hint version"), std::string::npos);
  EXPECT_FALSE(Handle::decode(forge_hint(base, ";h1:", 0, 5)));             // pid 0: no hint
  EXPECT_FALSE(Handle::decode(forge_hint(base, ";h1:", 0x80000000u, 5)));  // not a pid_t
  EXPECT_FALSE(Handle::decode(forge_hint(base, ";h1:", 77, 0x80000000u)));  // not an fd
  // The hint's checksum covers the 133 bytes before it too (they have their own as well).
  std::string t = forge_hint(base, ";h1:", 77, 5);
  Handle h2 = sample();
  h2.pin = 1;
  std::string swapped = h2.encode() + t.substr(kHandleTextSize);
  r = Handle::decode(swapped);
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("hint checksum mismatch at offset 155"), std::string::npos)
      << r.status().message();
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
