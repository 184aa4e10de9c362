// include/shoal/frozen.hpp — frozen object graphs: an immutable tree of maps, lists and scalars
// in one image that every process reads in place (shoal.freeze in Python).
//
// Three pieces:
//   Builder  writes an image in private memory (children first), then publishes it as a sealed
//            kFrozen segment (finish), a file (save) or bytes (finish_bytes).
//   Frozen   owns a published image (a segment or a read-only file mapping) and validates its
//            header; root() is where reading starts.
//   Value    a (image, ref) pair: a typed, bounds-checked view of one value. Reading never
//            allocates; every offset is checked before use, so a corrupt or truncated image
//            throws DecodeError instead of crashing.
// Hashes are the same in every process (shoal::frozen::hash), so a table built by one process
// (or written to a file years ago) is probed by any other: Python's numeric hash for
// bool/int/float, shoal's seeded hash for str and bytes.
//
// Layout: src/layout/frozen_layout.hpp (docs/design/frozen.md byte by byte).
// Concurrency: none needed; an image is never written after it is published.
// Differs from flatbuffers/capnp: no schema; keys and values are Python's types with Python's
// equality (1 == 1.0 == True is one key), and tables are hash tables, not sorted vectors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shoal/codec.hpp"
#include "shoal/detail/frozen_format.hpp"
#include "shoal/error.hpp"
#include "shoal/segment.hpp"

namespace shoal::frozen {

/// What a Value holds (the layout's Tag with kFalse/kTrue folded into kBool).
enum class Type : uint8_t {
  kNone,
  kBool,
  kInt,     // fits in 60 bits, inline
  kBigInt,  // any other integer: two's complement bytes
  kFloat,
  kStr,
  kBytes,
  kList,
  kTuple,
  kDict,
  kSet,
  kFrozenSet,
  kNdarray,
  kPickle,  // an arbitrary Python object, pickled; C++ sees the bytes
};
std::string_view type_name(Type t) noexcept;  // "dict", "list", "str", ...

namespace detail {
// Cold paths of the inline accessors below (out of line, so the hot paths stay small).
[[noreturn]] void throw_wrong_type(std::string_view expected, Type found);  // InvalidArgumentError
[[noreturn]] void throw_reserved_tag(uint64_t ref);                         // DecodeError
[[noreturn]] void throw_corrupt(const char* what, uint64_t ref);            // DecodeError
// The Type of each of the 16 tags (layout::Tag); 15 is reserved and never returned.
inline constexpr Type kTagType[layout::kTagMask + 1] = {
    Type::kNone,  Type::kBool,  Type::kBool,   Type::kInt,  Type::kFloat,     Type::kBigInt,
    Type::kStr,   Type::kBytes, Type::kList,   Type::kTuple, Type::kDict,     Type::kSet,
    Type::kFrozenSet, Type::kNdarray, Type::kPickle, Type::kNone};
}  // namespace detail

inline constexpr uint64_t kDefaultHashSeed = 0x5348'4F41'4C31'2026ULL;

class Image;

/// The elements of an ndarray leaf.
struct NdView {
  std::string_view descr;  // numpy descr text, e.g. "'<f8'"
  uint64_t itemsize = 0;
  std::vector<uint64_t> shape;
  bool fortran = false;
  bool scalar = false;  // a numpy scalar (ndim 0), not a 0-d array
  const std::byte* data = nullptr;
  uint64_t nbytes = 0;
  uint64_t data_offset = 0;  // from the image start
};

/// One value of an image. Cheap to copy; valid while the image it came from is mapped.
/// Accessors of the wrong type throw InvalidArgumentError ("expected str, found int");
/// corrupt data throws DecodeError.
class Value {
 public:
  Value() noexcept = default;
  Value(const Image* image, uint64_t ref) noexcept : image_(image), ref_(ref) {}

  Type type() const;
  uint64_t ref() const noexcept { return ref_; }
  const Image& image() const noexcept { return *image_; }

  bool is_none() const;
  bool as_bool() const;
  int64_t as_int() const;                          // kInt (kBool reads as 0/1)
  std::span<const std::byte> bigint_bytes() const;  // kBigInt
  double as_float() const;
  std::string_view as_str() const;  // UTF-8
  uint64_t str_flags() const;       // layout::kStrAscii | kStrSurrogates
  std::span<const std::byte> as_bytes() const;  // kBytes, kPickle
  NdView as_ndarray() const;

  /// Containers (list, tuple, dict, set, frozenset): number of items.
  uint64_t size() const;
  /// list/tuple item i; std::out_of_range past the end.
  Value operator[](uint64_t i) const;
  /// dict/set/frozenset entry i in insertion order: its key, its value (dicts), its hash.
  Value key_at(uint64_t i) const;
  Value value_at(uint64_t i) const;
  uint64_t hash_at(uint64_t i) const;
  /// The entry in table slot s (as probe() returns): its key, its value (dicts).
  Value key_in_slot(uint64_t s) const;
  Value value_in_slot(uint64_t s) const;

  /// dict: the value under key; set/frozenset: the stored element equal to key. Python's
  /// equality: find(1) finds the key 1.0 or True.
  std::optional<Value> find(int64_t key) const;
  std::optional<Value> find(double key) const;
  std::optional<Value> find(std::string_view utf8_key) const;
  std::optional<Value> find(const char* utf8_key) const { return find(std::string_view(utf8_key)); }
  std::optional<Value> find_bytes(std::span<const std::byte> key) const;
  /// As find, but std::out_of_range when the key is absent (as std::map::at).
  template <class K>
  Value at(const K& key) const {
    if (auto v = find(key)) return *v;
    throw std::out_of_range("key not found in frozen " + std::string(type_name(type())));
  }

  /// The probe under every lookup (the Python binding calls it with its own equality): walks
  /// the table for `hash`, calling eq(Value key) for entries whose stored hash equals `hash`;
  /// returns the SLOT index of the first entry for which eq returns true (read it with
  /// key_in_slot / value_in_slot), or -1. Bounded by the slot count, so a corrupt table (no
  /// empty slot, a cycle) cannot loop forever.
  template <class Eq>
  int64_t probe(uint64_t hash, Eq&& eq) const;

 private:
  const Image* image_ = nullptr;
  uint64_t ref_ = 0;
};

/// A validated view of an image's bytes (does not own them).
class Image {
 public:
  /// Checks the header (F1 of the layout) of `size` bytes at `data`; the nodes are checked as
  /// they are read. Never crashes on any input (fuzzed by fuzz/frozen_fuzzer.cpp).
  static Result<Image> open(const std::byte* data, uint64_t size) noexcept;

  Value root() const noexcept { return Value(this, root_); }
  const std::byte* data() const noexcept { return data_; }
  uint64_t size() const noexcept { return size_; }
  uint64_t hash_seed() const noexcept { return seed_; }
  uint32_t flags() const noexcept { return flags_; }
  bool has_pickles() const noexcept;

  /// The node a ref points at, after checking F2 for `fixed` bytes plus `extra` bytes after it
  /// (callers compute extra from the fixed part, with overflow checks). Throws DecodeError.
  const std::byte* node(uint64_t ref, uint64_t fixed, uint64_t extra = 0) const;

  /// Visits every node reachable from the root (depth <= max_depth, at most max_nodes visits),
  /// checking every invariant of the layout; the fuzzer and `shoal info` call it. Throws
  /// DecodeError at the first violation.
  void validate(uint32_t max_depth = 1000, uint64_t max_nodes = UINT64_MAX) const;

 private:
  const std::byte* data_ = nullptr;
  uint64_t size_ = 0;
  uint64_t root_ = 0;
  uint64_t seed_ = 0;
  uint32_t flags_ = 0;
};

/// The table hash of a value (None, bool, int, float, str, bytes, and tuples / frozensets of
/// these), as the builder stores it: str and bytes are hashed with the value's image seed.
/// InvalidArgumentError ("unhashable type: 'list'") for any other type; DecodeError when the
/// value is corrupt or nested deeper than kMaxKeyDepth.
uint64_t hash_of(const Value& key);
/// Python's == between two keys, possibly of different images (1 == 1.0 == True, 0.0 == -0.0,
/// NaN != NaN, str != bytes, tuples elementwise, frozensets as sets). InvalidArgumentError when
/// either is unhashable; DecodeError as hash_of.
bool keys_equal(const Value& a, const Value& b);
/// How deeply hash_of / keys_equal follow tuples and frozensets inside a key.
inline constexpr uint32_t kMaxKeyDepth = 256;

/// A published image and what keeps it mapped: a kFrozen segment or a read-only file mapping.
/// Copies share the mapping; the Image (and so every Value) stays at a fixed address.
class Frozen {
 public:
  /// Attaches a frozen segment by handle; throws as Segment::attach, or DecodeError /
  /// IncompatibleSegmentError when the segment does not hold a frozen image.
  static Frozen attach(std::string_view handle);
  static Frozen from_segment(Segment seg);
  /// Maps a file written by save() read-only, in O(1) (only the header is read).
  static Frozen load(const std::string& path);

  Frozen() noexcept = default;
  bool valid() const noexcept { return state_ != nullptr; }
  const Image& image() const;
  Value root() const { return image().root(); }
  /// The segment (an invalid Segment for a loaded file).
  const Segment& segment() const;
  /// The segment's handle; InvalidArgumentError for a loaded file.
  std::string handle(bool pin = true) const;
  /// The file path, empty for a segment.
  const std::string& path() const;
  /// Which file was mapped, from fstat at load (zeros for a segment): a pickle names the file
  /// by these, so that a file replaced at the same path is refused, not read as the old one.
  struct FileId {
    uint64_t dev = 0;
    uint64_t ino = 0;
    uint64_t size = 0;
  };
  FileId file_id() const;

 private:
  struct State;
  std::shared_ptr<const State> state_;
};

/// Writes an image. Methods return the Ref of what they wrote; containers take the Refs of
/// their children, which must come from this builder. Not thread-safe.
class Builder {
 public:
  using Ref = uint64_t;
  explicit Builder(uint64_t hash_seed = kDefaultHashSeed);
  ~Builder();
  Builder(const Builder&) = delete;
  Builder& operator=(const Builder&) = delete;

  Ref none() const noexcept;
  Ref boolean(bool v) const noexcept;
  Ref integer(int64_t v);  // inline when it fits 60 bits, else a kBigInt node
  /// Any integer as minimal-or-not two's complement little-endian bytes (canonicalised).
  Ref big_integer(std::span<const std::byte> twos_complement_le);
  Ref floating(double v);
  /// UTF-8 text; flags as layout::kStr* (kStrAscii is computed when `flags` is absent).
  Ref str(std::string_view utf8, std::optional<uint64_t> flags = std::nullopt);
  Ref bytes(std::span<const std::byte> data);
  Ref pickle(std::span<const std::byte> data);
  Ref ndarray(std::string_view descr, uint64_t itemsize, std::span<const uint64_t> shape,
              bool fortran, const void* data, uint64_t nbytes);
  /// A numpy scalar of dtype `descr`: its `itemsize` bytes, read back as the scalar itself.
  Ref numpy_scalar(std::string_view descr, uint64_t itemsize, const void* data);
  Ref list(std::span<const Ref> items);
  Ref tuple(std::span<const Ref> items);
  /// A list (tuple when `tuple`) of `count` inline scalars -- None, bools, ints within 60 bits
  /// -- written straight into the image, with no array of refs in between: fill(items) writes
  /// the node's item array in place and returns true; when it returns false (an item is not an
  /// inline scalar), the node is dropped and the result is nullopt (use list() instead).
  std::optional<Ref> try_inline_sequence(bool tuple, uint64_t count,
                                         const std::function<bool(Ref* items)>& fill);
  /// Hash tables. Keys must be hashable (None, bool, int, float, str, bytes, and tuples /
  /// frozensets of these), else InvalidArgumentError; an equal key twice is
  /// InvalidArgumentError ("duplicate key"). The *_hashed forms take precomputed hashes
  /// (hash_of(key) for each key), as the Python encoder has them at hand.
  Ref dict(std::span<const Ref> keys, std::span<const Ref> values);
  Ref set(std::span<const Ref> keys);
  Ref frozenset(std::span<const Ref> keys);
  Ref dict_hashed(std::span<const Ref> keys, std::span<const Ref> values,
                  std::span<const uint64_t> hashes);
  Ref set_hashed(std::span<const Ref> keys, std::span<const uint64_t> hashes, bool frozen);

  /// The table hash of a key already written; InvalidArgumentError when it is unhashable.
  uint64_t hash_of(Ref key) const;
  /// Python's == between two written keys (1 == 1.0 == True; NaN != NaN).
  bool keys_equal(Ref a, Ref b) const;
  uint64_t hash_seed() const noexcept;
  /// Bytes written so far.
  uint64_t size() const noexcept;

  /// Publishes the image with `root` as its root: a new kFrozen segment, sealed read-only.
  /// The builder is empty afterwards (reusable).
  Frozen finish(Ref root);
  /// Writes the image to `path` (to `path.shoal-tmp-XXXXXX`, locked with flock while it is
  /// written, fsynced, then renamed into place; mode 0444 less the umask's bits). A writer killed
  /// mid-save leaves that file: remove_dead_save_temps removes it. The builder is empty
  /// afterwards.
  void save(Ref root, const std::string& path);
  /// The image as bytes (tests, golden files, fuzz corpora). The builder is empty afterwards.
  std::vector<std::byte> finish_bytes(Ref root);
  /// The image as bytes, without a copy (channel messages): valid until the builder is next
  /// written to or cleared. Unlike finish_bytes, the builder is NOT emptied: call clear().
  std::span<const std::byte> finish_view(Ref root);
  /// Drops everything written (an encoding abandoned part-way, or after finish_view).
  void clear() noexcept;

 private:
  Ref nd_node(std::string_view descr, uint64_t itemsize, std::span<const uint64_t> shape,
              uint32_t order, const void* data, uint64_t nbytes);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Removes from `dir` (not its subdirectories) the temporary files of saves whose writer died
/// mid-save (Builder::save): files named `NAME.shoal-tmp-XXXXXX`, regular, owned by this user,
/// empty or starting with an image's magic, whose flock no live writer holds. Never a file
/// being written, and nothing else. Returns the paths removed. SegmentNotFoundError,
/// AccessDeniedError or ShoalOSError when `dir` cannot be listed.
std::vector<std::string> remove_dead_save_temps(const std::string& dir);

// ---- inline: the probe and node() are on the hot path of every Python lookup -------------

inline const std::byte* Image::node(uint64_t ref, uint64_t fixed, uint64_t extra) const {
  const uint64_t off = layout::node_offset(ref);
  // F2: aligned (by construction of off), past the header, and [off, off+fixed+extra) inside.
  if (off < layout::kFrozenHeaderSize || off > size_ || fixed > size_ - off ||
      extra > size_ - off - fixed) [[unlikely]] {
    throw_error(Errc::kDecode, "frozen image: a reference points outside the image (offset " +
                                   std::to_string(off) + ", image of " + std::to_string(size_) +
                                   " bytes); the data is corrupt or truncated");
  }
  return data_ + off;
}

inline Type Value::type() const {
  const layout::Tag tag = layout::tag_of(ref_);
  if (tag == layout::Tag::kReserved) [[unlikely]] detail::throw_reserved_tag(ref_);
  return detail::kTagType[static_cast<uint8_t>(tag)];
}
inline bool Value::is_none() const { return type() == Type::kNone; }
inline bool Value::as_bool() const {
  const layout::Tag tag = layout::tag_of(ref_);
  if (tag != layout::Tag::kFalse && tag != layout::Tag::kTrue) [[unlikely]] {
    detail::throw_wrong_type("bool", type());
  }
  return tag == layout::Tag::kTrue;
}
inline int64_t Value::as_int() const {
  const layout::Tag tag = layout::tag_of(ref_);
  if (tag == layout::Tag::kInt) [[likely]] return layout::inline_int(ref_);
  if (tag == layout::Tag::kFalse || tag == layout::Tag::kTrue) return tag == layout::Tag::kTrue;
  detail::throw_wrong_type("int", type());
}
inline double Value::as_float() const {
  if (layout::tag_of(ref_) != layout::Tag::kFloat) [[unlikely]] detail::throw_wrong_type("float", type());
  double v;
  std::memcpy(&v, image_->node(ref_, layout::kNodeFixedSize), sizeof v);
  return v;
}
inline std::string_view Value::as_str() const {
  if (layout::tag_of(ref_) != layout::Tag::kStr) [[unlikely]] detail::throw_wrong_type("str", type());
  uint64_t n;
  std::memcpy(&n, image_->node(ref_, layout::kNodeFixedSize), sizeof n);
  return {reinterpret_cast<const char*>(image_->node(ref_, layout::kNodeFixedSize, n)) +
              layout::kNodeFixedSize,
          static_cast<size_t>(n)};
}
inline std::span<const std::byte> Value::as_bytes() const {
  const layout::Tag tag = layout::tag_of(ref_);
  if (tag != layout::Tag::kBytes && tag != layout::Tag::kPickle) [[unlikely]] {
    detail::throw_wrong_type("bytes", type());
  }
  uint64_t n;
  std::memcpy(&n, image_->node(ref_, layout::kNodeFixedSize), sizeof n);
  return {image_->node(ref_, layout::kNodeFixedSize, n) + layout::kNodeFixedSize,
          static_cast<size_t>(n)};
}
inline Value Value::operator[](uint64_t i) const {
  const layout::Tag tag = layout::tag_of(ref_);
  if (tag != layout::Tag::kList && tag != layout::Tag::kTuple) [[unlikely]] {
    detail::throw_wrong_type("list or tuple", type());
  }
  uint64_t count;
  std::memcpy(&count, image_->node(ref_, layout::kNodeFixedSize), sizeof count);
  if (count > image_->size() / sizeof(uint64_t)) [[unlikely]] {
    detail::throw_corrupt("sequence count", ref_);
  }
  const std::byte* p = image_->node(ref_, layout::kNodeFixedSize, count * sizeof(uint64_t));
  if (i >= count) throw std::out_of_range("index " + std::to_string(i) + " out of range for a frozen " +
                                          std::string(type_name(type())) + " of " +
                                          std::to_string(count) + " items");
  uint64_t item;
  std::memcpy(&item, p + layout::kNodeFixedSize + i * sizeof item, sizeof item);
  if (!layout::child_before(item, ref_)) [[unlikely]] detail::throw_corrupt("child after its parent", ref_);
  return Value(image_, item);
}

template <class Eq>
int64_t Value::probe(uint64_t hash, Eq&& eq) const {
  const std::byte* p = image_->node(ref_, layout::kNodeFixedSize);
  const auto [count, log2_slots, entry_words] = layout::read_table_header(p);
  // F3, checked on every probe: cheap next to the cache misses that follow.
  if (!layout::table_header_ok(count, log2_slots, entry_words)) [[unlikely]] {
    throw_error(Errc::kDecode, "frozen table header is corrupt");
  }
  const uint64_t stride = uint64_t{entry_words} * sizeof(uint64_t);
  // Throws unless every slot fits.
  p = image_->node(ref_, layout::kNodeFixedSize, (uint64_t{1} << log2_slots) * stride);
  const std::byte* slots = p + layout::kNodeFixedSize;
  // CPython's probe sequence, bounded (Probe::limit) so that a full corrupt table ends.
  layout::Probe pr(hash, log2_slots);
  for (uint64_t n = 0, limit = pr.limit(); n < limit; ++n, pr.next()) {
    const std::byte* e = slots + pr.slot * stride;
    uint64_t h, key;
    std::memcpy(&key, e + 8, 8);
    if (key == layout::kEmptyKey) return -1;
    std::memcpy(&h, e, 8);
    if (h == hash) {
      // F4, as in operator[]: a key lies before its table, so eq never follows a cycle.
      if (!layout::child_before(key, ref_)) [[unlikely]] detail::throw_corrupt("child after its parent", ref_);
      if (eq(Value(image_, key))) return static_cast<int64_t>(pr.slot);
    }
  }
  return -1;
}

}  // namespace shoal::frozen
