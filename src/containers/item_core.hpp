// src/containers/item_core.hpp — the items every shoal container stores (shoal::Dict's keys and
// values, shoal::List's elements): the encoding of an Item as one 64-bit item word (inline, or a
// node block), and its decoding over any memory. Item words: src/layout/dict_layout.hpp
// ("Items").
//
// The functions are templates over `Mem`, anything with `std::byte* at(uint64_t ref, uint64_t
// len) const` that throws an shoal::Error when [ref, ref + len) is not inside its memory: a
// shoal::Heap in the library, a byte buffer in the fuzz targets. Every offset read from the
// memory is checked before use; a corrupt item throws DecodeError or CorruptSegmentError,
// never crashes.
//
// Readers of a live container read memory that a writer may be freeing and reusing under them
// (the gen protocol of docs/design/dict.md: the reader retries when gen moved). Every load here
// from such memory goes through racy_load*/racy_copy: acquire loads (so that the reader's final
// gen load cannot move before them), hidden from TSan, which cannot know that a read whose gen
// check fails is thrown away.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "layout/dict_layout.hpp"
#include "shoal/codec.hpp"
#include "shoal/detail/frozen_format.hpp"
#include "shoal/dict.hpp"
#include "shoal/error.hpp"
#include "shoal/frozen.hpp"

namespace shoal::containers {

#if defined(__SANITIZE_THREAD__)
#define SHOAL_RACY_READ __attribute__((noinline, no_sanitize("thread")))
#else
#define SHOAL_RACY_READ
#endif

SHOAL_RACY_READ inline uint64_t racy_load64(const void* p) noexcept {
  return __atomic_load_n(static_cast<const uint64_t*>(p), __ATOMIC_ACQUIRE);
}
SHOAL_RACY_READ inline uint32_t racy_load32(const void* p) noexcept {
  return __atomic_load_n(static_cast<const uint32_t*>(p), __ATOMIC_ACQUIRE);
}
/// Copies n bytes from 8-byte aligned shared memory (nodes are 16-byte aligned).
SHOAL_RACY_READ inline void racy_copy(void* dst, const std::byte* src, size_t n) noexcept {
  auto* d = static_cast<unsigned char*>(dst);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t w = __atomic_load_n(reinterpret_cast<const uint64_t*>(src + i), __ATOMIC_RELAXED);
    __builtin_memcpy(d + i, &w, 8);
  }
  for (; i < n; ++i) {
    d[i] = __atomic_load_n(reinterpret_cast<const unsigned char*>(src + i), __ATOMIC_RELAXED);
  }
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
}
/// Whether n bytes of shared memory equal `want`.
SHOAL_RACY_READ inline bool racy_equal(const std::byte* src, const char* want, size_t n) noexcept {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t w = __atomic_load_n(reinterpret_cast<const uint64_t*>(src + i), __ATOMIC_RELAXED);
    uint64_t v;
    __builtin_memcpy(&v, want + i, 8);
    if (w != v) return false;
  }
  for (; i < n; ++i) {
    if (__atomic_load_n(reinterpret_cast<const unsigned char*>(src + i), __ATOMIC_RELAXED) !=
        static_cast<unsigned char>(want[i])) {
      return false;
    }
  }
  return true;
}

/// Thrown inside a reader when gen moved before it would trust a length it read (the reader
/// retries; never escapes Dict's API).
struct StaleRead {};

/// CorruptSegmentError naming the container whose memory failed a check: `who` is "dict" or
/// "list" (the items below are every container's, so their checks are told which one reads).
[[noreturn]] inline void corrupt_in(const char* who, const std::string& what) {
  throw_error(Errc::kCorrupt, std::string(who) + ": " + what + "; the " + who +
                                  "'s memory is corrupt");
}
[[noreturn]] inline void corrupt(const std::string& what) { corrupt_in("dict", what); }

// ---- items ------------------------------------------------------------------------------

using layout::Tag;

inline uint64_t item_ref(uint64_t item) noexcept { return item & ~layout::kTagMask; }
inline bool item_has_node(uint64_t item) noexcept {
  return layout::is_node_tag(layout::tag_of(item));
}

/// An item to store: an inline word, or a node (its 16 fixed bytes and its payload) to copy
/// into a new block whose Ref is or-ed with `tag`.
struct Encoded {
  uint64_t inline_item = 0;
  Tag tag = Tag::kNone;
  std::string node;  // empty: inline
};
Encoded encode_item(const Item& v, const char* who);

/// The tag a FrozenKey's image is stored under (its root's: kTuple or kFrozenSet);
/// InvalidArgumentError / DecodeError for an image of anything else.
Tag frozen_key_tag(std::string_view image, const char* who);

/// A tuple/frozenset key's image (DecodeError when its header fails its checks).
inline frozen::Image open_key_image(const char* data, uint64_t n) {
  Result<frozen::Image> im = frozen::Image::open(reinterpret_cast<const std::byte*>(data), n);
  if (!im) im.status().throw_if_error();
  return im.value();
}
inline bool is_frozen_key_tag(Tag t) noexcept { return t == Tag::kTuple || t == Tag::kFrozenSet; }

/// The largest node payload a reader copies (the heap's largest block).
inline constexpr uint64_t kMaxNodeBytes = uint64_t{1} << 36;

/// The node of an item (its 16 fixed bytes), checked.
template <class Mem>
const std::byte* node_fixed(const Mem& mem, uint64_t item) {
  return mem.at(item_ref(item), layout::kNodeFixedSize);
}

/// The payload length of a str/bytes/bigint/pickle node, and the payload (checked).
template <class Mem>
const std::byte* node_payload(const Mem& mem, uint64_t item, uint64_t* n, const char* who) {
  *n = racy_load64(node_fixed(mem, item));
  if (*n > kMaxNodeBytes) corrupt_in(who, "a node's length is larger than any block");
  return mem.at(item_ref(item), layout::kNodeFixedSize + *n) + layout::kNodeFixedSize;
}

/// The number a stored numeric item holds; kNotNumber for any other item.
template <class Mem>
codec::Number number_of(const Mem& mem, uint64_t item, std::string* big_buf) {
  switch (layout::tag_of(item)) {
    case Tag::kFalse: return codec::Number::of_int(0);
    case Tag::kTrue: return codec::Number::of_int(1);
    case Tag::kInt: return codec::Number::of_int(layout::inline_int(item));
    case Tag::kFloat: {
      const uint64_t bits = racy_load64(node_fixed(mem, item));
      double f;
      std::memcpy(&f, &bits, sizeof f);
      return codec::Number::of_float(f);
    }
    case Tag::kBigInt: {
      uint64_t n = 0;
      const std::byte* p = node_payload(mem, item, &n, "dict");
      if (n > (uint64_t{1} << 20)) corrupt("a big int key longer than 1 MiB");
      big_buf->resize(n);
      racy_copy(big_buf->data(), p, n);
      return codec::Number::of_bigint(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(big_buf->data()), n));
    }
    default: return codec::Number{};
  }
}

/// An item read back as the C++ API's Item. `still_valid()` is asked before a length read from
/// the memory is trusted for an allocation (a reader then throws StaleRead when it says no).
/// A stored value the C++ API has no type for (a big int beyond 64 bits, a container) is
/// InvalidArgumentError. `who` ("dict", "list") names the container in its errors.
template <class Mem, class Valid>
Item decode_item(const Mem& mem, uint64_t item, Valid&& still_valid, const char* who) {
  switch (layout::tag_of(item)) {
    case Tag::kNone: return std::monostate{};
    case Tag::kFalse: return false;
    case Tag::kTrue: return true;
    case Tag::kInt: return int64_t{layout::inline_int(item)};
    case Tag::kFloat: {
      const uint64_t bits = racy_load64(node_fixed(mem, item));
      double f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    }
    case Tag::kBigInt: {
      uint64_t n = 0;
      const std::byte* p = node_payload(mem, item, &n, who);
      if (n > 8) {
        if (!still_valid()) throw StaleRead{};  // n is trusted from here
        BigInt big;
        big.le.resize(n);
        racy_copy(big.le.data(), p, n);
        return big;
      }
      unsigned char b[8] = {};
      racy_copy(b, p, n);
      const bool neg = n > 0 && (b[n - 1] & 0x80) != 0;
      uint64_t v = neg ? ~uint64_t{0} : 0;
      for (uint64_t i = 0; i < n; ++i) {
        v &= ~(uint64_t{0xff} << (8 * i));
        v |= uint64_t{b[i]} << (8 * i);
      }
      return static_cast<int64_t>(v);
    }
    case Tag::kStr:
    case Tag::kBytes:
    case Tag::kPickle: {
      uint64_t n = 0;
      const std::byte* p = node_payload(mem, item, &n, who);
      if (!still_valid()) throw StaleRead{};  // n is trusted from here
      std::string s(n, '\0');
      racy_copy(s.data(), p, n);
      if (layout::tag_of(item) == Tag::kStr) return s;
      if (layout::tag_of(item) == Tag::kPickle) return Pickled{std::move(s)};
      return Bytes{std::move(s)};
    }
    case Tag::kTuple:
    case Tag::kFrozenSet: {
      uint64_t n = 0;
      const std::byte* p = node_payload(mem, item, &n, who);
      if (!still_valid()) throw StaleRead{};
      FrozenKey k;
      k.image.resize(n);
      racy_copy(k.image.data(), p, n);
      return k;
    }
    case layout::kObjectRefTag: {
      const std::byte* p = mem.at(item_ref(item), sizeof(layout::ObjectRefNode));
      if (racy_load64(p) != layout::kObjectRefPayload) corrupt_in(who, "an object reference node's size is wrong");
      ObjectRef r;
      r.object.hi = racy_load64(p + offsetof(layout::ObjectRefNode, object_hi));
      r.object.lo = racy_load64(p + offsetof(layout::ObjectRefNode, object_lo));
      r.size = racy_load64(p + offsetof(layout::ObjectRefNode, size));
      r.kind = static_cast<uint32_t>(racy_load64(p + offsetof(layout::ObjectRefNode, kind)));
      return r;
    }
    default:
      if (!still_valid()) throw StaleRead{};
      throw_error(Errc::kInvalidArgument,
                  std::string(who) + ": a stored value of tag " +
                      std::to_string(static_cast<int>(layout::tag_of(item))) +
                      " has no C++ type (written by the Python layer)");
  }
}

}  // namespace shoal::containers
