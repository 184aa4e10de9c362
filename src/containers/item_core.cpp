// src/containers/item_core.cpp — encode_item: an Item as the item word or node block a container
// stores (src/containers/item_core.hpp).
#include "containers/item_core.hpp"

#include <cstring>

#include "layout/frozen_layout.hpp"

namespace shoal::containers {

Encoded encode_item(const Item& v) {
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
    default: {
      const std::string& b = std::get<Pickled>(v).data;
      node(Tag::kPickle, b.size(), 0, b.data(), b.size());
      break;
    }
  }
  return e;
}

}  // namespace shoal::containers
