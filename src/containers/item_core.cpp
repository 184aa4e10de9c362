// src/containers/item_core.cpp — encode_item: an Item as the item word or node block a container
// stores (src/containers/item_core.hpp).
#include "containers/item_core.hpp"

#include <cstring>

#include "layout/frozen_layout.hpp"
#include "shoal/frozen.hpp"

namespace shoal::containers {

Encoded encode_item(const Item& v, const char* who) {
  Encoded e;
  auto node = [&](Tag tag, uint64_t w0, uint64_t w1, const void* data, uint64_t n) {
    e.tag = tag;
    e.node.resize(layout::kNodeFixedSize + n);
    std::memcpy(e.node.data(), &w0, 8);
    std::memcpy(e.node.data() + 8, &w1, 8);
    if (n != 0) std::memcpy(e.node.data() + layout::kNodeFixedSize, data, n);
  };
  switch (v.index()) {
    case 0: e.inline_item = static_cast<uint64_t>(Tag::kNone); break;
    case 1:
      e.inline_item = static_cast<uint64_t>(std::get<bool>(v) ? Tag::kTrue : Tag::kFalse);
      break;
    case 2: {
      const int64_t i = std::get<int64_t>(v);
      if (i >= layout::kInlineIntMin && i <= layout::kInlineIntMax) {
        e.inline_item = (static_cast<uint64_t>(i) << 4) | static_cast<uint64_t>(Tag::kInt);
      } else {  // a kBigInt node: minimal little-endian two's complement (8 bytes here)
        unsigned char b[8];
        for (int k = 0; k < 8; ++k) b[k] = static_cast<unsigned char>(static_cast<uint64_t>(i) >> (8 * k));
        const size_t n = codec::canonical_int_len(std::span<const std::byte>(
            reinterpret_cast<const std::byte*>(b), sizeof b));
        node(Tag::kBigInt, n, 0, b, n);
      }
      break;
    }
    case 3: {
      const double d = std::get<double>(v);
      uint64_t bits;
      std::memcpy(&bits, &d, 8);
      node(Tag::kFloat, bits, 0, nullptr, 0);
      break;
    }
    case 4: {
      const std::string& s = std::get<std::string>(v);
      uint64_t flags = layout::kStrAscii;
      for (unsigned char c : s) {
        if (c >= 0x80) {
          flags = 0;
          break;
        }
      }
      node(Tag::kStr, s.size(), flags, s.data(), s.size());
      break;
    }
    case 5: {
      const std::string& b = std::get<Bytes>(v).data;
      node(Tag::kBytes, b.size(), 0, b.data(), b.size());
      break;
    }
    case 6: {
      const std::string& b = std::get<Pickled>(v).data;
      node(Tag::kPickle, b.size(), 0, b.data(), b.size());
      break;
    }
    case 7: {  // kBigInt: the codec's canonical length
      const std::string& b = std::get<BigInt>(v).le;
      const size_t n = codec::canonical_int_len(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(b.data()), b.size()));
      if (n == 0) {
        e.inline_item = static_cast<uint64_t>(Tag::kInt);  // 0
      } else {
        node(Tag::kBigInt, n, 0, b.data(), n);
      }
      break;
    }
    case 8: {  // a tuple or frozenset: a whole frozen image, tagged as its root
      const std::string& im = std::get<FrozenKey>(v).image;
      const Tag t = frozen_key_tag(im, who);
      node(t, im.size(), 0, im.data(), im.size());
      break;
    }
    default: {
      const ObjectRef& r = std::get<ObjectRef>(v);
      layout::ObjectRefNode n{};
      n.nbytes = layout::kObjectRefPayload;
      n.object_hi = r.object.hi;
      n.object_lo = r.object.lo;
      n.size = r.size;
      n.kind = r.kind;
      e.tag = layout::kObjectRefTag;
      e.node.resize(sizeof n);
      std::memcpy(e.node.data(), &n, sizeof n);
      break;
    }
  }
  return e;
}

Tag frozen_key_tag(std::string_view image, const char* who) {
  Result<frozen::Image> im = frozen::Image::open(
      reinterpret_cast<const std::byte*>(image.data()), image.size());
  if (!im) im.status().throw_if_error();
  const Tag t = layout::tag_of(im.value().root().ref());
  if (t != Tag::kTuple && t != Tag::kFrozenSet) {
    throw_error(Errc::kInvalidArgument,
                std::string(who) + ": a FrozenKey's image must hold a tuple or frozenset");
  }
  return t;
}

}  // namespace shoal::containers
