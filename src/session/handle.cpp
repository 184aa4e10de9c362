#include "shoal/handle.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

namespace shoal {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void put_hex(std::string& out, uint64_t v, int digits) {
  for (int i = digits - 1; i >= 0; --i) out.push_back(kHex[(v >> (4 * i)) & 0xF]);
}

// Lower-case hex only: one spelling per handle, so handles compare as strings.
int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Parses `digits` hex digits at text[pos]; false on a non-hex character (reported at *bad).
bool get_hex(std::string_view text, size_t pos, int digits, uint64_t* out, size_t* bad) noexcept {
  uint64_t v = 0;
  for (int i = 0; i < digits; ++i) {
    int d = hex_value(text[pos + static_cast<size_t>(i)]);
    if (d < 0) {
      *bad = pos + static_cast<size_t>(i);
      return false;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

struct CrcTable {
  uint32_t t[256];
  constexpr CrcTable() : t{} {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
  }
};
constexpr CrcTable kCrcTable;

// Where the kind field starts: after the prefix, two ids, the pin and the size, each with its ':'.
constexpr size_t kKindOffset = kHandlePrefix.size() + 33 + 33 + 17 + 17;
static_assert(kKindOffset == 107);

}  // namespace

namespace {

// The hint after the 133 bytes of a handle:
//   offset 133: ";h1:"  137: pid (8 hex)  145: ':'  146: fd (8 hex)  154: ':'  155: crc (8 hex)
// PRECONDITION: text.size() == kHandleHintedTextSize and text[133] == ';'; `prefix_crc` is the
// crc32 of text[0, kHandleTextSize - 9) (the handle's own checksum, already verified), which the
// hint's checksum continues: CRC-32 chains, so the 124 bytes are not read twice.
Status decode_hint(std::string_view text, uint32_t prefix_crc, Handle* h) {
  constexpr size_t kTag = kHandleTextSize;
  constexpr size_t kPid = kTag + kHandleHintTag.size();
  constexpr size_t kFd = kPid + 9;
  constexpr size_t kCrc = kFd + 9;
  static_assert(kCrc + 8 == kHandleHintedTextSize);
  if (text.substr(kTag, kHandleHintTag.size()) != kHandleHintTag) {
    return {Errc::kDecode, "shoal handle hint at offset " + std::to_string(kTag) +
                               " is not ';h1:': an unknown hint version, made by a newer shoal"};
  }
  uint64_t pid = 0, fd = 0, crc = 0;
  size_t bad = 0;
  if (!get_hex(text, kPid, 8, &pid, &bad) || !get_hex(text, kFd, 8, &fd, &bad) ||
      !get_hex(text, kCrc, 8, &crc, &bad)) {
    return {Errc::kDecode,
            "malformed shoal handle: expected a hex digit at offset " + std::to_string(bad)};
  }
  for (size_t colon : {kFd - 1, kCrc - 1}) {
    if (text[colon] != ':') {
      return {Errc::kDecode,
              "malformed shoal handle: expected ':' at offset " + std::to_string(colon)};
    }
  }
  constexpr size_t kPrefix = kHandleTextSize - 9;
  if (static_cast<uint32_t>(crc) !=
      crc32(text.data() + kPrefix, kCrc - 1 - kPrefix, prefix_crc)) {
    return {Errc::kDecode, "corrupt shoal handle: hint checksum mismatch at offset " +
                               std::to_string(kCrc) + " (the handle was altered or cut)"};
  }
  // One spelling per handle: encode() writes no hint for pid 0, and no pid or fd is negative.
  if (pid == 0 || pid > 0x7FFFFFFFu || fd > 0x7FFFFFFFu) {
    return {Errc::kDecode, "malformed shoal handle: hint at offset " + std::to_string(kPid) +
                               " names pid " + std::to_string(pid) + ", descriptor " +
                               std::to_string(fd)};
  }
  h->hint_pid = static_cast<uint32_t>(pid);
  h->hint_fd = static_cast<uint32_t>(fd);
  return {};
}

}  // namespace

uint32_t crc32(const void* data, size_t n, uint32_t seed) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~seed;
  for (size_t i = 0; i < n; ++i) c = kCrcTable.t[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}

std::string Id128::hex() const {
  std::string s;
  s.reserve(32);
  put_hex(s, hi, 16);
  put_hex(s, lo, 16);
  return s;
}

Result<Id128> Id128::from_hex(std::string_view s) {
  if (s.size() != 32) {
    return {Errc::kDecode, "an id is 32 hex digits, got " + std::to_string(s.size())};
  }
  Id128 id;
  size_t bad = 0;
  if (!get_hex(s, 0, 16, &id.hi, &bad) || !get_hex(s, 16, 16, &id.lo, &bad)) {
    return {Errc::kDecode, "an id is lower-case hex; bad character at offset " +
                               std::to_string(bad)};
  }
  return id;
}

Id128 Id128::random() {
  Id128 id;
  while (id.is_zero()) {
    uint64_t buf[2];
    size_t got = 0;
    while (got < sizeof buf) {
      ssize_t r = getrandom(reinterpret_cast<char*>(buf) + got, sizeof buf - got, 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_error(Errc::kSystem, errno_message("getrandom", errno));
      }
      got += static_cast<size_t>(r);
    }
    id.hi = buf[0];
    id.lo = buf[1];
  }
  return id;
}

std::string Handle::encode() const {
  std::string s;
  s.reserve(kHandleTextSize);
  s.append(kHandlePrefix);
  put_hex(s, session.hi, 16);
  put_hex(s, session.lo, 16);
  s.push_back(':');
  put_hex(s, object.hi, 16);
  put_hex(s, object.lo, 16);
  s.push_back(':');
  put_hex(s, pin, 16);
  s.push_back(':');
  put_hex(s, size, 16);
  s.push_back(':');
  put_hex(s, kind, 8);
  s.push_back(':');
  put_hex(s, flags, 8);
  const uint32_t crc = crc32(s.data(), s.size());  // everything before the last ':'
  s.push_back(':');
  put_hex(s, crc, 8);
  if (has_hint()) {
    s.append(kHandleHintTag);
    put_hex(s, hint_pid, 8);
    s.push_back(':');
    put_hex(s, hint_fd, 8);
    const uint32_t hint_crc = crc32(s.data(), s.size());  // the whole text before its last ':'
    s.push_back(':');
    put_hex(s, hint_crc, 8);
  }
  return s;
}

Result<Handle> Handle::decode(std::string_view text) noexcept {
  // Field layout after the prefix: (width, separator-follows).
  struct Field {
    int digits;
  };
  static constexpr Field kFields[] = {{32}, {32}, {16}, {16}, {8}, {8}, {8}};
  try {
    if (text.substr(0, kHandlePrefix.size()) != kHandlePrefix) {
      return {Errc::kDecode, "not a shoal handle: it must start with 'shoal1:' (got " +
                                 std::to_string(text.size()) + " bytes)"};
    }
    if (text.size() < kHandleTextSize) {
      return {Errc::kDecode, "shoal handle truncated at offset " + std::to_string(text.size()) +
                                 " (a handle is " + std::to_string(kHandleTextSize) + " bytes)"};
    }
    // A hint follows the 133 bytes only if they are followed by its tag's ';'.
    const bool hinted = text.size() > kHandleTextSize && text[kHandleTextSize] == ';';
    if (text.size() > kHandleTextSize && !hinted) {
      return {Errc::kDecode, "shoal handle has " +
                                 std::to_string(text.size() - kHandleTextSize) +
                                 " trailing bytes at offset " + std::to_string(kHandleTextSize)};
    }
    if (hinted && text.size() < kHandleHintedTextSize) {
      return {Errc::kDecode, "shoal handle hint truncated at offset " +
                                 std::to_string(text.size()) + " (a handle with a hint is " +
                                 std::to_string(kHandleHintedTextSize) + " bytes)"};
    }
    if (hinted && text.size() > kHandleHintedTextSize) {
      return {Errc::kDecode, "shoal handle has " +
                                 std::to_string(text.size() - kHandleHintedTextSize) +
                                 " trailing bytes at offset " +
                                 std::to_string(kHandleHintedTextSize)};
    }
    uint64_t v[9] = {};
    size_t pos = kHandlePrefix.size();
    int vi = 0;
    for (size_t f = 0; f < std::size(kFields); ++f) {
      size_t bad = 0;
      if (kFields[f].digits == 32) {
        if (!get_hex(text, pos, 16, &v[vi], &bad) || !get_hex(text, pos + 16, 16, &v[vi + 1], &bad)) {
          return {Errc::kDecode, "malformed shoal handle: expected a hex digit at offset " +
                                     std::to_string(bad)};
        }
        vi += 2;
      } else {
        if (!get_hex(text, pos, kFields[f].digits, &v[vi], &bad)) {
          return {Errc::kDecode, "malformed shoal handle: expected a hex digit at offset " +
                                     std::to_string(bad)};
        }
        vi += 1;
      }
      pos += static_cast<size_t>(kFields[f].digits);
      if (f + 1 < std::size(kFields)) {
        if (text[pos] != ':') {
          return {Errc::kDecode, "malformed shoal handle: expected ':' at offset " +
                                     std::to_string(pos)};
        }
        ++pos;
      }
    }
    const size_t crc_pos = kHandleTextSize - 8;
    uint32_t want = static_cast<uint32_t>(v[8]);
    uint32_t got = crc32(text.data(), crc_pos - 1);
    if (want != got) {
      return {Errc::kDecode, "corrupt shoal handle: checksum mismatch at offset " +
                                 std::to_string(crc_pos) + " (the handle was altered or cut)"};
    }
    Handle h;
    h.session = {v[0], v[1]};
    h.object = {v[2], v[3]};
    h.pin = v[4];
    h.size = v[5];
    h.kind = static_cast<uint32_t>(v[6]);
    h.flags = static_cast<uint32_t>(v[7]);
    if (h.session.is_zero() || h.object.is_zero()) {
      return {Errc::kDecode, "malformed shoal handle: zero session or object id"};
    }
    if ((h.flags & ~kHandleKnownFlags) != 0) {
      return {Errc::kDecode, "shoal handle has unknown flags " + std::to_string(h.flags) +
                                 ": it was made by a newer shoal"};
    }
    if (h.held() && h.pin != 0) {  // one spelling per handle: a held handle has no pin
      return {Errc::kDecode, "malformed shoal handle: a held handle (flag bit 1) with a pin at "
                             "offset 73"};
    }
    if (!kind_known(h.kind)) {
      return {Errc::kDecode, "shoal handle names object kind " + std::to_string(h.kind) +
                                 " at offset " + std::to_string(kKindOffset) + ", unknown to this build (it knows " +
                                 known_kind_names() + "): it was made by a newer shoal"};
    }
    if (hinted) {
      Status st = decode_hint(text, got, &h);
      if (!st) return st;
    }
    return h;
  } catch (const std::bad_alloc&) {
    return {Errc::kSystem, "out of memory while decoding a handle"};
  }
}

}  // namespace shoal
