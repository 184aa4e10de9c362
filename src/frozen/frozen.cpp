// src/frozen/frozen.cpp — reading frozen images: Value accessors, Python equality and hashing of keys,
// Image::open / validate, and Frozen (a published image kept mapped).
//
// Every read goes through Image::node(), which checks that the whole node lies inside the
// image (F2) with overflow-safe arithmetic; tables are checked (F3) before every use, and a
// container's child must lie before it (F4) before it is handed out, so no chain of refs can
// cycle. Corrupt data raises DecodeError; it never crashes and never loops.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>

#include "layout/frozen_layout.hpp"
#include "shoal/frozen.hpp"

namespace shoal::frozen {

using layout::Tag;

namespace {

using layout::is_node_tag;
using layout::node_offset;
using layout::tag_of;

uint64_t rd64(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

[[noreturn]] void decode_error(const std::string& what) { throw_error(Errc::kDecode, "frozen image: " + what); }

// F4 for a child read from the container at `parent`.
void check_child(uint64_t child, uint64_t parent) {
  if (!layout::child_before(child, parent)) [[unlikely]] detail::throw_corrupt("child after its parent", parent);
}

// A table node, its header checked (F3) and all of it inside the image.
struct TableView {
  uint64_t count;
  uint32_t log2_slots;
  uint32_t entry_words;
  const std::byte* slots;  // 1 << log2_slots entries of entry_words words
  const std::byte* order;  // uint32_t[count]: slot of the i-th inserted entry

  uint64_t nslots() const { return uint64_t{1} << log2_slots; }
  // The i-th entry in insertion order (i < count), its order value checked.
  const std::byte* entry(uint64_t i, uint64_t ref) const {
    uint32_t s;
    std::memcpy(&s, order + i * 4, 4);
    if (s >= nslots()) detail::throw_corrupt("table order names a slot past the end", ref);
    const std::byte* e = slots + s * entry_words * 8;
    if (rd64(e + 8) == layout::kEmptyKey) detail::throw_corrupt("table order names an empty slot", ref);
    return e;
  }
  const std::byte* slot(uint64_t s, uint64_t ref) const {
    if (s >= nslots()) throw std::out_of_range("slot " + std::to_string(s) + " out of range");
    const std::byte* e = slots + s * entry_words * 8;
    if (rd64(e + 8) == layout::kEmptyKey) detail::throw_corrupt("reading an empty table slot", ref);
    return e;
  }
};

TableView table_view(const Image& img, uint64_t ref) {
  const std::byte* p = img.node(ref, 16);
  TableView t;
  const layout::TableHeader th = layout::read_table_header(p);
  t.count = th.count;
  t.log2_slots = th.log2_slots;
  t.entry_words = th.entry_words;
  if (!layout::table_header_ok(t.count, t.log2_slots, t.entry_words)) {
    detail::throw_corrupt("table header", ref);
  }
  const uint64_t slots_bytes = t.nslots() * t.entry_words * 8;  // <= 3 * 2**43: no overflow
  p = img.node(ref, 16, slots_bytes + t.count * 4);
  t.slots = p + 16;
  t.order = t.slots + slots_bytes;
  return t;
}

bool is_table_tag(Tag t) { return t == Tag::kDict || t == Tag::kSet || t == Tag::kFrozenSet; }

TableView checked_table(const Value& v) {
  if (!is_table_tag(tag_of(v.ref()))) detail::throw_wrong_type("dict, set or frozenset", v.type());
  return table_view(v.image(), v.ref());
}

// A number value of an image as codec::Number (kNotNumber for any other value).
codec::Number num_of(const Value& v) {
  switch (tag_of(v.ref())) {
    case Tag::kFalse: case Tag::kTrue: case Tag::kInt: return codec::Number::of_int(v.as_int());
    case Tag::kFloat: return codec::Number::of_float(v.as_float());
    case Tag::kBigInt: return codec::Number::of_bigint(v.bigint_bytes());
    default: return {};
  }
}

// False, True, int, float, big int: the tags whose values compare as numbers.
bool is_number_tag(Tag t) { return t >= Tag::kFalse && t <= Tag::kBigInt; }

// None, the numbers, str, bytes, and tuples and frozensets (of these): the key types.
bool hashable_tag(Tag t) { return t <= Tag::kBytes || t == Tag::kTuple || t == Tag::kFrozenSet; }

[[noreturn]] void unhashable(Type t) {
  throw_error(Errc::kInvalidArgument, "unhashable type: '" + std::string(type_name(t)) + "'");
}

void check_depth(uint32_t depth) {
  if (depth > kMaxKeyDepth) {
    decode_error("a key is nested deeper than " + std::to_string(kMaxKeyDepth) + " levels");
  }
}

uint64_t hash_with_seed(const Value& v, uint64_t seed, uint32_t depth) {
  check_depth(depth);
  switch (tag_of(v.ref())) {
    case Tag::kNone: return codec::hash::kNoneHash;
    case Tag::kFalse: return 0;
    case Tag::kTrue: return 1;
    case Tag::kInt: return static_cast<uint64_t>(codec::hash::of_int(v.as_int()));
    case Tag::kFloat: return static_cast<uint64_t>(codec::hash::of_float(v.as_float()));
    case Tag::kBigInt: return static_cast<uint64_t>(codec::hash::of_bigint(v.bigint_bytes()));
    case Tag::kStr: {
      auto s = v.as_str();
      return codec::hash::of_bytes(seed, s.data(), s.size());
    }
    case Tag::kBytes: {
      auto b = v.as_bytes();
      return codec::hash::of_bytes(seed, b.data(), b.size());
    }
    case Tag::kTuple: {
      const uint64_t n = v.size();
      uint64_t small[16];
      std::vector<uint64_t> big;
      uint64_t* h = small;
      if (n > 16) {
        big.resize(n);
        h = big.data();
      }
      for (uint64_t i = 0; i < n; ++i) h[i] = hash_with_seed(v[i], seed, depth + 1);
      return static_cast<uint64_t>(codec::hash::of_tuple({h, static_cast<size_t>(n)}));
    }
    case Tag::kFrozenSet: {
      const TableView t = table_view(v.image(), v.ref());
      std::vector<uint64_t> h(t.count);
      const bool same_seed = seed == v.image().hash_seed();
      for (uint64_t i = 0; i < t.count; ++i) {
        h[i] = same_seed ? v.hash_at(i) : hash_with_seed(v.key_at(i), seed, depth + 1);
      }
      return static_cast<uint64_t>(codec::hash::of_frozenset(h));
    }
    default:
      unhashable(v.type());
  }
}

bool equal_keys(const Value& a, const Value& b, uint32_t depth) {
  check_depth(depth);
  const Tag ta = tag_of(a.ref());
  const Tag tb = tag_of(b.ref());
  if (!hashable_tag(ta)) unhashable(a.type());
  if (!hashable_tag(tb)) unhashable(b.type());
  if (is_number_tag(ta) || is_number_tag(tb)) {
    if (!is_number_tag(ta) || !is_number_tag(tb)) return false;
    if (ta == Tag::kInt && tb == Tag::kInt) return a.ref() == b.ref();
    return codec::numbers_equal(num_of(a), num_of(b));
  }
  if (ta != tb) return false;
  switch (ta) {
    case Tag::kNone: return true;
    case Tag::kStr: return a.as_str() == b.as_str();
    case Tag::kBytes: {
      auto x = a.as_bytes();
      auto y = b.as_bytes();
      return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size()) == 0);
    }
    case Tag::kTuple: {
      const uint64_t n = a.size();
      if (n != b.size()) return false;
      for (uint64_t i = 0; i < n; ++i) {
        if (!equal_keys(a[i], b[i], depth + 1)) return false;
      }
      return true;
    }
    default: {  // frozenset: same size, and every element of a is in b
      const uint64_t n = a.size();
      if (n != b.size()) return false;
      const bool same_seed = a.image().hash_seed() == b.image().hash_seed();
      for (uint64_t i = 0; i < n; ++i) {
        const Value k = a.key_at(i);
        const uint64_t h = same_seed ? a.hash_at(i) : hash_with_seed(k, b.image().hash_seed(), depth + 1);
        if (b.probe(h, [&](const Value& other) { return equal_keys(k, other, depth + 1); }) < 0) {
          return false;
        }
      }
      return true;
    }
  }
}

template <class Eq>
std::optional<Value> find_impl(const Value& t, uint64_t hash, Eq&& eq) {
  const Tag tag = tag_of(t.ref());
  if (!is_table_tag(tag)) detail::throw_wrong_type("dict, set or frozenset", t.type());
  const int64_t idx = t.probe(hash, eq);
  if (idx < 0) return std::nullopt;
  return tag == Tag::kDict ? t.value_in_slot(static_cast<uint64_t>(idx))
                   : t.key_in_slot(static_cast<uint64_t>(idx));
}

}  // namespace

// ---- names and cold paths ----------------------------------------------------------------------

std::string_view type_name(Type t) noexcept {
  switch (t) {
    case Type::kNone: return "NoneType";
    case Type::kBool: return "bool";
    case Type::kInt: return "int";
    case Type::kBigInt: return "int";
    case Type::kFloat: return "float";
    case Type::kStr: return "str";
    case Type::kBytes: return "bytes";
    case Type::kList: return "list";
    case Type::kTuple: return "tuple";
    case Type::kDict: return "dict";
    case Type::kSet: return "set";
    case Type::kFrozenSet: return "frozenset";
    case Type::kNdarray: return "ndarray";
    case Type::kPickle: return "pickle";
  }
  return "unknown";
}

namespace detail {

void throw_wrong_type(std::string_view expected, Type found) {
  std::string msg = "expected " + std::string(expected) + ", found " + std::string(type_name(found));
  if (found == Type::kBigInt && expected == "int") msg += " that does not fit 60 bits (read bigint_bytes())";
  throw_error(Errc::kInvalidArgument, msg);
}

void throw_reserved_tag(uint64_t ref) {
  decode_error("reserved tag 15 in reference 0x" + [&] {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(ref));
    return std::string(buf);
  }() + " (made by a newer shoal, or corrupt)");
}

void throw_corrupt(const char* what, uint64_t ref) {
  decode_error(std::string("corrupt ") + what + " in the node at offset " +
               std::to_string(node_offset(ref)));
}

}  // namespace detail

// ---- Value -------------------------------------------------------------------------------------

std::span<const std::byte> Value::bigint_bytes() const {
  if (tag_of(ref_) != Tag::kBigInt) detail::throw_wrong_type("a big int", type());
  const uint64_t n = rd64(image_->node(ref_, 16));
  return {image_->node(ref_, 16, n) + 16, static_cast<size_t>(n)};
}

uint64_t Value::str_flags() const {
  if (tag_of(ref_) != Tag::kStr) detail::throw_wrong_type("str", type());
  return rd64(image_->node(ref_, 16) + 8);
}

NdView Value::as_ndarray() const {
  if (tag_of(ref_) != Tag::kNdarray) detail::throw_wrong_type("ndarray", type());
  const std::byte* p = image_->node(ref_, sizeof(layout::NdNode));
  layout::NdNode nd;
  std::memcpy(&nd, p, sizeof nd);
  if (nd.ndim > layout::kMaxNdDims || nd.descr_size > image_->size()) {
    detail::throw_corrupt("ndarray header", ref_);
  }
  p = image_->node(ref_, sizeof nd, nd.ndim * 8 + nd.descr_size);
  NdView v;
  v.shape.resize(nd.ndim);
  if (nd.ndim) std::memcpy(v.shape.data(), p + sizeof nd, nd.ndim * 8);
  v.descr = {reinterpret_cast<const char*>(p + sizeof nd + nd.ndim * 8),
             static_cast<size_t>(nd.descr_size)};
  // F5: the elements lie inside the image and agree with shape and itemsize.
  uint64_t count = 1;
  bool overflow = false;
  for (uint64_t d : v.shape) {
    if (d != 0 && count > UINT64_MAX / d) overflow = true;
    count *= d;
  }
  if (overflow || (nd.itemsize != 0 && count > UINT64_MAX / nd.itemsize) ||
      count * nd.itemsize != nd.nbytes || nd.data_offset % layout::kNdDataAlign != 0 ||
      nd.data_offset < layout::kFrozenHeaderSize || nd.data_offset > image_->size() ||
      nd.nbytes > image_->size() - nd.data_offset || nd.order > layout::kNdOrderScalar ||
      (nd.order == layout::kNdOrderScalar && nd.ndim != 0)) {
    detail::throw_corrupt("ndarray shape, size or data offset", ref_);
  }
  v.itemsize = nd.itemsize;
  v.fortran = nd.order == layout::kNdOrderF;
  v.scalar = nd.order == layout::kNdOrderScalar;
  v.data = image_->data() + nd.data_offset;
  v.nbytes = nd.nbytes;
  v.data_offset = nd.data_offset;
  return v;
}

uint64_t Value::size() const {
  const Tag tag = tag_of(ref_);
  if (tag == Tag::kList || tag == Tag::kTuple) {
    const uint64_t count = rd64(image_->node(ref_, 16));
    if (count > image_->size() / 8) detail::throw_corrupt("sequence count", ref_);
    image_->node(ref_, 16, count * 8);
    return count;
  }
  if (is_table_tag(tag)) return table_view(*image_, ref_).count;
  detail::throw_wrong_type("a container", type());
}

Value Value::key_at(uint64_t i) const {
  const TableView t = checked_table(*this);
  if (i >= t.count) throw std::out_of_range("entry " + std::to_string(i) + " out of range for a frozen " +
                                            std::string(type_name(type())) + " of " +
                                            std::to_string(t.count) + " entries");
  const uint64_t key = rd64(t.entry(i, ref_) + 8);
  check_child(key, ref_);
  return Value(image_, key);
}

Value Value::key_in_slot(uint64_t s) const {
  const TableView t = checked_table(*this);
  const uint64_t key = rd64(t.slot(s, ref_) + 8);
  check_child(key, ref_);
  return Value(image_, key);
}

Value Value::value_in_slot(uint64_t s) const {
  if (tag_of(ref_) != Tag::kDict) detail::throw_wrong_type("dict", type());
  const TableView t = table_view(*image_, ref_);
  if (t.entry_words != 3) detail::throw_corrupt("dict entry size", ref_);
  const uint64_t value = rd64(t.slot(s, ref_) + 16);
  check_child(value, ref_);
  return Value(image_, value);
}

Value Value::value_at(uint64_t i) const {
  if (tag_of(ref_) != Tag::kDict) detail::throw_wrong_type("dict", type());
  const TableView t = table_view(*image_, ref_);
  if (t.entry_words != 3) detail::throw_corrupt("dict entry size", ref_);
  if (i >= t.count) throw std::out_of_range("entry " + std::to_string(i) + " out of range for a frozen dict of " +
                                            std::to_string(t.count) + " entries");
  const uint64_t value = rd64(t.entry(i, ref_) + 16);
  check_child(value, ref_);
  return Value(image_, value);
}

uint64_t Value::hash_at(uint64_t i) const {
  const TableView t = checked_table(*this);
  if (i >= t.count) throw std::out_of_range("entry " + std::to_string(i) + " out of range for a frozen " +
                                            std::string(type_name(type())) + " of " +
                                            std::to_string(t.count) + " entries");
  return rd64(t.entry(i, ref_));
}

std::optional<Value> Value::find(int64_t key) const {
  const uint64_t h = static_cast<uint64_t>(codec::hash::of_int(key));
  const bool inline_range = key >= layout::kInlineIntMin && key <= layout::kInlineIntMax;
  return find_impl(*this, h, [&](const Value& v) {
    switch (tag_of(v.ref())) {
      case Tag::kFalse: return key == 0;
      case Tag::kTrue: return key == 1;
      case Tag::kInt: return v.as_int() == key;
      case Tag::kFloat:
        return codec::numbers_equal(codec::Number::of_int(key), codec::Number::of_float(v.as_float()));
      case Tag::kBigInt:  // canonical bigints lie outside the inline range; compare anyway, by value
        if (inline_range) return false;
        return codec::numbers_equal(codec::Number::of_int(key), num_of(v));
      default: return false;
    }
  });
}

std::optional<Value> Value::find(double key) const {
  if (std::isnan(key)) {
    if (!is_table_tag(tag_of(ref_))) detail::throw_wrong_type("dict, set or frozenset", type());
    return std::nullopt;  // NaN equals nothing
  }
  const uint64_t h = static_cast<uint64_t>(codec::hash::of_float(key));
  return find_impl(*this, h, [&](const Value& v) {
    const Tag t = tag_of(v.ref());
    if (t == Tag::kFloat) return v.as_float() == key;
    if (!is_number_tag(t)) return false;
    return codec::numbers_equal(codec::Number::of_float(key), num_of(v));
  });
}

std::optional<Value> Value::find(std::string_view key) const {
  if (!is_table_tag(tag_of(ref_))) detail::throw_wrong_type("dict, set or frozenset", type());
  const uint64_t h = codec::hash::of_bytes(image_->hash_seed(), key.data(), key.size());
  return find_impl(*this, h, [&](const Value& v) { return tag_of(v.ref()) == Tag::kStr && v.as_str() == key; });
}

std::optional<Value> Value::find_bytes(std::span<const std::byte> key) const {
  if (!is_table_tag(tag_of(ref_))) detail::throw_wrong_type("dict, set or frozenset", type());
  const uint64_t h = codec::hash::of_bytes(image_->hash_seed(), key.data(), key.size());
  return find_impl(*this, h, [&](const Value& v) {
    if (tag_of(v.ref()) != Tag::kBytes) return false;
    auto b = v.as_bytes();
    return b.size() == key.size() && (b.empty() || std::memcmp(b.data(), key.data(), b.size()) == 0);
  });
}

uint64_t hash_of(const Value& key) { return hash_with_seed(key, key.image().hash_seed(), 0); }

bool keys_equal(const Value& a, const Value& b) { return equal_keys(a, b, 0); }

// ---- Image -------------------------------------------------------------------------------------

Result<Image> Image::open(const std::byte* data, uint64_t size) noexcept {
  try {
    if (data == nullptr || size < layout::kFrozenHeaderSize) {
      return {Errc::kDecode, "frozen image of " + std::to_string(size) +
                                 " bytes is smaller than its 64-byte header (truncated?)"};
    }
    layout::FrozenHeader h;
    std::memcpy(&h, data, sizeof h);
    if (h.magic != layout::kFrozenMagic) {
      return {Errc::kDecode, "not a shoal frozen image: bad magic at offset 0"};
    }
    if (h.version != layout::kFrozenVersion) {
      return {Errc::kIncompatible, "frozen image has format version " + std::to_string(h.version) +
                                       ", this build reads " + std::to_string(layout::kFrozenVersion)};
    }
    if ((h.flags & ~layout::kFrozenKnownFlags) != 0 || h.reserved[0] != 0 || h.reserved[1] != 0) {
      return {Errc::kIncompatible,
              "frozen image header uses flags or reserved fields unknown to this build (offset 12 or "
              "48): made by a newer shoal"};
    }
    if (h.image_size < layout::kFrozenHeaderSize || h.image_size > size) {
      return {Errc::kDecode, "frozen image header at offset 16 says " + std::to_string(h.image_size) +
                                 " bytes, but " + std::to_string(size) +
                                 " are there: the image is truncated or corrupt"};
    }
    const Tag root_tag = tag_of(h.root);
    if (root_tag == Tag::kReserved ||
        (is_node_tag(root_tag) && (node_offset(h.root) < layout::kFrozenHeaderSize ||
                                   node_offset(h.root) >= h.image_size))) {
      return {Errc::kDecode, "frozen image header at offset 24: the root reference is invalid"};
    }
    Image img;
    img.data_ = data;
    img.size_ = h.image_size;
    img.root_ = h.root;
    img.seed_ = h.hash_seed;
    img.flags_ = h.flags;
    return img;
  } catch (const std::bad_alloc&) {
    return {Errc::kOutOfSpace, "out of memory while opening a frozen image"};
  }
}

bool Image::has_pickles() const noexcept { return (flags_ & layout::kFrozenHasPickles) != 0; }

namespace {

bool valid_utf8(const uint8_t* s, uint64_t n, bool surrogates) {
  uint64_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    uint64_t len;
    uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED && !surrogates) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return false;
    for (uint64_t k = 2; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

struct Validator {
  const Image& img;
  uint32_t max_depth;
  uint64_t max_nodes;
  uint64_t visits = 0;
  bool saw_pickle = false;
  std::vector<uint64_t> seen;  // 4 bits (a tag, 0: not seen) per 16-byte unit of the image

  void fail(const std::string& what, uint64_t ref) {
    decode_error(what + " (node at offset " + std::to_string(node_offset(ref)) + ")");
  }

  void visit(uint64_t ref, uint32_t depth, uint64_t parent) {
    const Tag t = tag_of(ref);
    const auto tag = static_cast<uint64_t>(t);  // 4 bits, recorded per node in `seen`
    if (t == Tag::kReserved) detail::throw_reserved_tag(ref);
    if (t <= Tag::kTrue) {
      if ((ref >> 4) != 0) fail("None/False/True with a nonzero payload", ref);
      return;
    }
    if (t == Tag::kInt) return;
    if (parent != UINT64_MAX && !layout::child_before(ref, parent)) {
      fail("a container's child lies after it (F4)", parent);
    }
    if (++visits > max_nodes) {
      decode_error("more than " + std::to_string(max_nodes) + " node visits (validation limit)");
    }
    const uint64_t unit = node_offset(ref) / layout::kNodeAlign;
    img.node(ref, 16);  // F2 before `seen` is indexed
    // The tag each node was first reached with: a node is validated once, and a forged ref
    // that reads the same node as another type is caught.
    const unsigned shift = static_cast<unsigned>(unit % 16) * 4;
    const uint64_t seen_tag = (seen[unit / 16] >> shift) & 15;
    if (seen_tag == tag) return;
    if (seen_tag != 0) fail("a node is referenced with two different tags", ref);
    seen[unit / 16] |= tag << shift;
    if (depth > max_depth) {
      decode_error("nested deeper than " + std::to_string(max_depth) + " levels (validation limit)");
    }
    const Value v(&img, ref);
    const std::byte* p = img.node(ref, 16);
    switch (t) {
      case Tag::kFloat:
        if (rd64(p + 8) != 0) fail("float node with a nonzero pad", ref);
        break;
      case Tag::kBigInt: {
        auto b = v.bigint_bytes();
        if (rd64(p + 8) != 0) fail("bigint node with nonzero flags", ref);
        if (b.empty() || codec::canonical_int_len(b) != b.size()) fail("bigint not minimal", ref);
        if (const codec::Number x = codec::Number::of_bigint(b);
            x.kind == codec::Number::kInt && x.i >= layout::kInlineIntMin &&
            x.i <= layout::kInlineIntMax) {
          fail("bigint that fits an inline int", ref);
        }
        break;
      }
      case Tag::kStr: {
        const uint64_t flags = v.str_flags();
        auto s = v.as_str();
        const auto* u = reinterpret_cast<const uint8_t*>(s.data());
        if (flags & ~(layout::kStrAscii | layout::kStrSurrogates)) fail("str with unknown flags", ref);
        if (flags & layout::kStrAscii) {
          for (uint8_t c : std::span(u, s.size())) {
            if (c >= 0x80) fail("str flagged ASCII holds a non-ASCII byte", ref);
          }
        } else if (!valid_utf8(u, s.size(), (flags & layout::kStrSurrogates) != 0)) {
          fail("str is not valid UTF-8", ref);
        }
        break;
      }
      case Tag::kBytes:
      case Tag::kPickle:
        (void)v.as_bytes();
        if (rd64(p + 8) != 0) fail("bytes node with nonzero flags", ref);
        if (t == Tag::kPickle) saw_pickle = true;
        break;
      case Tag::kList:
      case Tag::kTuple: {
        const uint64_t n = v.size();
        if (rd64(p + 8) != 0) fail("sequence node with a nonzero pad", ref);
        const std::byte* items = p + 16;
        for (uint64_t i = 0; i < n; ++i) visit(rd64(items + i * 8), depth + 1, ref);
        break;
      }
      case Tag::kDict:
      case Tag::kSet:
      case Tag::kFrozenSet:
        table(v, depth);
        break;
      case Tag::kNdarray: {
        (void)v.as_ndarray();
        layout::NdNode nd;
        std::memcpy(&nd, p, sizeof nd);
        if (nd.zero != 0) fail("ndarray node with a nonzero pad", ref);
        if (nd.descr_size == 0) fail("ndarray without a dtype description", ref);
        break;
      }
      default:
        fail("unknown tag", ref);
    }
  }

  void table(const Value& v, uint32_t depth) {
    const uint64_t ref = v.ref();
    const TableView t = table_view(img, ref);
    if (t.entry_words != (tag_of(ref) == Tag::kDict ? layout::kDictEntryWords : layout::kSetEntryWords)) fail("table entry size does not match its type", ref);
    if (t.count >= (uint64_t{1} << 32)) fail("table of 2**32 entries or more", ref);
    const uint64_t ew = t.entry_words;
    const uint64_t nslots = t.nslots();
    // order (F3): each value a distinct non-empty slot; exactly count non-empty slots.
    std::vector<bool> listed(nslots);
    for (uint64_t i = 0; i < t.count; ++i) {
      uint32_t s;
      std::memcpy(&s, t.order + i * 4, 4);
      if (s >= nslots) fail("table order names a slot past the end", ref);
      if (listed[s]) fail("table order names a slot twice", ref);
      listed[s] = true;
    }
    uint64_t used = 0;
    for (uint64_t s = 0; s < nslots; ++s) {
      const std::byte* e = t.slots + s * ew * 8;
      const uint64_t key = rd64(e + 8);
      if (key == layout::kEmptyKey) {
        if (rd64(e) != 0 || (ew == 3 && rd64(e + 16) != 0)) fail("empty table slot not zeroed", ref);
        if (listed[s]) fail("table order names an empty slot", ref);
        continue;
      }
      ++used;
      if (!listed[s]) fail("table slot " + std::to_string(s) + " missing from the order", ref);
      visit(key, depth + 1, ref);
      if (!hashable_tag(tag_of(key))) fail("table key of unhashable type", ref);
      uint64_t h;
      try {
        h = hash_of(Value(&img, key));
      } catch (const InvalidArgumentError& err) {
        fail(std::string("table key: ") + err.what(), ref);
      }
      if (h != rd64(e)) fail("table slot " + std::to_string(s) + " has a wrong stored hash", ref);
      if (ew == 3) visit(rd64(e + 16), depth + 1, ref);
      // Reachable: probing h from its first slot reaches s without crossing an empty slot.
      layout::Probe pr(h, t.log2_slots);
      uint64_t n = 0;
      while (pr.slot != s) {
        if (rd64(t.slots + pr.slot * ew * 8 + 8) == layout::kEmptyKey || ++n > pr.limit()) {
          fail("table entry unreachable from its first slot", ref);
        }
        pr.next();
      }
    }
    if (used != t.count) fail("table has a different number of entries than its count", ref);
  }
};

}  // namespace

void Image::validate(uint32_t max_depth, uint64_t max_nodes) const {
  Validator val{*this, max_depth, max_nodes, 0, false, {}};
  val.seen.assign(static_cast<size_t>((size_ / 16 + 15) / 16), 0);
  val.visit(root_, 0, UINT64_MAX);
  if (val.saw_pickle && !has_pickles()) {
    decode_error("the image holds pickles but its header does not flag them");
  }
}

// ---- Frozen ------------------------------------------------------------------------------------

struct Frozen::State {
  Segment seg;
  std::string path;
  FileId file;
  void* map = nullptr;
  size_t map_len = 0;
  Image image;

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (map != nullptr) ::munmap(map, map_len);
  }
};

Frozen Frozen::attach(std::string_view handle) { return from_segment(Segment::attach(handle)); }

Frozen Frozen::from_segment(Segment seg) {
  if (!seg.valid()) throw_error(Errc::kInvalidArgument, "segment is closed");
  if (seg.kind() != ObjectKind::kFrozen) {
    throw_error(Errc::kIncompatible, "segment holds kind " +
                                         std::to_string(static_cast<uint32_t>(seg.kind())) +
                                         ", not a frozen image");
  }
  auto st = std::make_shared<State>();
  st->image = Image::open(seg.data(), seg.size()).take();
  st->seg = std::move(seg);
  Frozen f;
  f.state_ = std::move(st);
  return f;
}

Frozen Frozen::load(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, maybe forever;
  // with it the open returns at once and the fstat below refuses anything but a regular file.
  // (It changes nothing for a regular file's mmap, and the descriptor is closed right after.)
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) throw_error(Errc::kNotFound, "no such frozen file: '" + path + "'");
    if (err == EACCES || err == EPERM) throw_error(Errc::kPermission, errno_message("open '" + path + "'", err));
    throw_error(Errc::kSystem, errno_message("open '" + path + "'", err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw_error(Errc::kSystem, errno_message("fstat '" + path + "'", err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_error(Errc::kDecode, "'" + path + "' is not a regular file (a directory, FIFO or "
                               "device): load maps a file written by save");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < layout::kFrozenHeaderSize) {
    ::close(fd);
    throw_error(Errc::kDecode, "'" + path + "' is " + std::to_string(size) +
                                   " bytes: too small for a frozen image (truncated?)");
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps the file
  if (map == MAP_FAILED) {
    throw_error(err == ENOMEM ? Errc::kOutOfSpace : Errc::kSystem, errno_message("mmap '" + path + "'", err));
  }
  auto state = std::make_shared<State>();
  state->map = map;
  state->map_len = static_cast<size_t>(size);
  state->path = path;
  state->file = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), size};
  auto img = Image::open(static_cast<const std::byte*>(map), size);
  if (!img) throw_error(img.status().code(), "'" + path + "': " + img.status().message());
  state->image = img.value();
  Frozen f;
  f.state_ = std::move(state);
  return f;
}

const Image& Frozen::image() const {
  if (!state_) throw_error(Errc::kInvalidArgument, "frozen object is empty or closed");
  return state_->image;
}

const Segment& Frozen::segment() const {
  static const Segment kNone;
  return state_ ? state_->seg : kNone;
}

std::string Frozen::handle(bool pin) const {
  if (!state_) throw_error(Errc::kInvalidArgument, "frozen object is empty or closed");
  if (!state_->seg.valid()) {
    throw_error(Errc::kInvalidArgument, "a frozen image loaded from a file has no handle: send its path ('" +
                                            state_->path + "') instead");
  }
  return state_->seg.handle(pin);
}

const std::string& Frozen::path() const {
  static const std::string kEmpty;
  return state_ ? state_->path : kEmpty;
}

Frozen::FileId Frozen::file_id() const { return state_ ? state_->file : FileId{}; }

}  // namespace shoal::frozen
