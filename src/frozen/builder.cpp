// src/frozen/builder.cpp — writing frozen images (src/layout/frozen_layout.hpp).
//
// The image grows in one private anonymous mapping, enlarged with mremap(MREMAP_MAYMOVE): the
// kernel moves page tables, not bytes, so a multi-GiB image is never copied while it grows. Nodes
// are appended, children before parents (F4), each 16-byte aligned; every padding byte is
// written explicitly (a reused builder's buffer holds old bytes), so the same calls always give
// the same bytes (the golden files in tests/data/frozen/ depend on it).
//
// Keys are hashed and compared through the reader (hash_of, keys_equal in frozen.cpp) over an
// Image opened on the builder's own buffer, so writer and reader cannot disagree on equality.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>

#include "layout/frozen_layout.hpp"
#include "layout/segment_layout.hpp"
#include "platform/platform.hpp"
#include "shoal/frozen.hpp"

namespace shoal::frozen {

using layout::Tag;

namespace {

constexpr uint64_t kInitialCapacity = uint64_t{1} << 16;
constexpr uint64_t kMaxDescr = uint64_t{1} << 20;

constexpr uint64_t tag_ref(Tag t, uint64_t offset) { return offset | static_cast<uint64_t>(t); }

bool all_ascii(std::string_view s) {
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    acc |= w;
  }
  for (; i < s.size(); ++i) acc |= static_cast<uint8_t>(s[i]);
  return (acc & 0x8080'8080'8080'8080ULL) == 0;
}

}  // namespace

struct Builder::Impl {
  uint64_t seed;
  std::byte* buf = nullptr;
  uint64_t cap = 0;
  uint64_t len = layout::kFrozenHeaderSize;  // the header is written by publish()
  uint64_t nodes = 0;
  bool has_pickles = false;
  Image view;  // the buffer as an image, for hash_of / keys_equal (refreshed by refresh())

  explicit Impl(uint64_t s) : seed(s) {
    void* p = ::mmap(nullptr, kInitialCapacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw_error(Errc::kOutOfSpace, errno_message("frozen builder: mmap", errno));
    buf = static_cast<std::byte*>(p);
    cap = kInitialCapacity;
    std::memset(buf, 0, layout::kFrozenHeaderSize);
  }
  ~Impl() { ::munmap(buf, cap); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void reserve(uint64_t more) {
    if (more > cap - len) {
      if (more > layout::kMaxSegmentBytes - len) {
        throw_error(Errc::kInvalidArgument, "frozen image would exceed 2**56 bytes");
      }
      uint64_t want = std::max(cap * 2, len + more);
      want = (want + 0xFFFF) & ~uint64_t{0xFFFF};
      void* p = ::mremap(buf, cap, want, MREMAP_MAYMOVE);
      if (p == MAP_FAILED) {
        throw_error(Errc::kOutOfSpace, errno_message("frozen builder: growing to " + std::to_string(want) +
                                                         " bytes (mremap)", errno));
      }
      buf = static_cast<std::byte*>(p);
      cap = want;
    }
  }
  void pad_to(uint64_t align) {
    const uint64_t target = (len + align - 1) & ~(align - 1);
    reserve(target - len);
    std::memset(buf + len, 0, target - len);
    len = target;
  }
  // Appends a node: 16 fixed bytes, then the parts; returns its offset.
  uint64_t node(uint64_t w0, uint64_t w1, std::initializer_list<std::span<const std::byte>> parts) {
    pad_to(layout::kNodeAlign);
    uint64_t total = 16;
    for (auto part : parts) total += part.size();
    reserve(total);
    const uint64_t off = len;
    std::memcpy(buf + len, &w0, 8);
    std::memcpy(buf + len + 8, &w1, 8);
    len += 16;
    for (auto part : parts) {
      if (!part.empty()) std::memcpy(buf + len, part.data(), part.size());
      len += part.size();
    }
    ++nodes;
    return off;
  }

  // The buffer as an Image (a provisional header that makes Image::open accept it).
  const Image& refresh() {
    layout::FrozenHeader h{};
    h.magic = layout::kFrozenMagic;
    h.version = layout::kFrozenVersion;
    h.image_size = len;
    h.hash_seed = seed;
    std::memcpy(buf, &h, sizeof h);
    view = Image::open(buf, len).take();
    return view;
  }

  // PRECONDITION (checked): `ref` was returned by this builder.
  void check_ref(uint64_t ref) const {
    const uint64_t tag = ref & 15;
    if (tag == 15) throw_error(Errc::kInvalidArgument, "frozen builder: reference with the reserved tag 15");
    if (tag <= 2 && (ref >> 4) != 0) throw_error(Errc::kInvalidArgument, "frozen builder: malformed reference");
    if (tag >= 4) {
      const uint64_t off = ref & ~uint64_t{15};
      if (off < layout::kFrozenHeaderSize || off + 16 > len) {
        throw_error(Errc::kInvalidArgument, "frozen builder: reference " + std::to_string(ref) +
                                                " does not come from this builder");
      }
    }
  }

  void reset() {
    len = layout::kFrozenHeaderSize;
    nodes = 0;
    has_pickles = false;
    std::memset(buf, 0, layout::kFrozenHeaderSize);
  }

  std::vector<uint64_t> hashes(std::span<const uint64_t> keys) {
    std::vector<uint64_t> h(keys.size());
    for (auto k : keys) check_ref(k);
    const Image& img = refresh();
    for (size_t i = 0; i < keys.size(); ++i) h[i] = frozen::hash_of(Value(&img, keys[i]));
    return h;
  }

  uint64_t table(Tag tag, std::span<const uint64_t> keys, const uint64_t* values,
                 std::span<const uint64_t> hashes);

  // The header of the image with `root`, written into the buffer; returns the image size.
  uint64_t publish(uint64_t root) {
    check_ref(root);
    layout::FrozenHeader h{};
    h.magic = layout::kFrozenMagic;
    h.version = layout::kFrozenVersion;
    h.flags = has_pickles ? layout::kFrozenHasPickles : 0;
    h.image_size = len;
    h.root = root;
    h.hash_seed = seed;
    h.node_count = nodes;
    std::memcpy(buf, &h, sizeof h);
    return len;
  }
};

uint64_t Builder::Impl::table(Tag tag, std::span<const uint64_t> keys, const uint64_t* values,
                              std::span<const uint64_t> hashes) {
  const uint64_t count = keys.size();
  if (hashes.size() != count) {
    throw_error(Errc::kInvalidArgument, "frozen builder: " + std::to_string(count) + " keys but " +
                                            std::to_string(hashes.size()) + " hashes");
  }
  // order[] holds 32-bit slot indices: at most 2**32 slots, so at most 2**31 entries.
  if (count > (uint64_t{1} << 31)) {
    throw_error(Errc::kInvalidArgument, "a frozen dict or set holds at most 2**31 entries, not " +
                                            std::to_string(count));
  }
  for (uint64_t k : keys) check_ref(k);
  if (tag == Tag::kDict) {
    for (uint64_t i = 0; i < count; ++i) check_ref(values[i]);
  }
  uint32_t log2 = layout::kMinLog2Slots;
  while ((uint64_t{1} << log2) < 2 * count) ++log2;  // load factor <= 1/2
  const uint64_t nslots = uint64_t{1} << log2;
  const uint64_t ew = tag == Tag::kDict ? 3 : 2;
  const uint64_t slots_bytes = nslots * ew * 8;
  pad_to(layout::kNodeAlign);
  reserve(16 + slots_bytes + count * 4);  // before refresh(): mremap may move the buffer
  const Image& img = refresh();
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t t = keys[i] & 15;
    if (!(t <= 7 || t == 9 || t == 12)) {
      throw_error(Errc::kInvalidArgument,
                  "unhashable type: '" + std::string(type_name(Value(&img, keys[i]).type())) + "'");
    }
#ifndef NDEBUG
    if (frozen::hash_of(Value(&img, keys[i])) != hashes[i]) {
      throw_error(Errc::kInvalidArgument, "frozen builder: the hash given for key " + std::to_string(i) +
                                              " is not hash_of(key)");
    }
#endif
  }
  const uint64_t off = len;
  const layout::TableNode th{count, log2, static_cast<uint32_t>(ew)};
  std::memcpy(buf + off, &th, sizeof th);
  std::byte* slots = buf + off + 16;
  auto* order = reinterpret_cast<uint32_t*>(slots + slots_bytes);  // 8-byte aligned
  for (uint64_t s = 0; s < nslots; ++s) {
    std::byte* e = slots + s * ew * 8;
    std::memset(e, 0, ew * 8);
    std::memcpy(e + 8, &layout::kEmptyKey, 8);
  }
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t h = hashes[i];
    layout::Probe pr(h, log2);
    for (;;) {
      std::byte* e = slots + pr.slot * ew * 8;
      uint64_t k;
      std::memcpy(&k, e + 8, 8);
      if (k == layout::kEmptyKey) break;
      uint64_t eh;
      std::memcpy(&eh, e, 8);
      if (eh == h && frozen::keys_equal(Value(&img, k), Value(&img, keys[i]))) {
        throw_error(Errc::kInvalidArgument, "duplicate key in a frozen " +
                                                std::string(tag == Tag::kDict ? "dict" : "set") +
                                                ": entry " + std::to_string(i) +
                                                " equals an earlier one");
      }
      pr.next();
    }
    std::byte* e = slots + pr.slot * ew * 8;
    std::memcpy(e, &h, 8);
    std::memcpy(e + 8, &keys[i], 8);
    if (tag == Tag::kDict) std::memcpy(e + 16, &values[i], 8);
    order[i] = static_cast<uint32_t>(pr.slot);
  }
  len += 16 + slots_bytes + count * 4;
  ++nodes;
  return tag_ref(tag, off);
}

// ---- Builder -----------------------------------------------------------------------------------

Builder::Builder(uint64_t hash_seed) : impl_(std::make_unique<Impl>(hash_seed)) {}
Builder::~Builder() = default;

Builder::Ref Builder::none() const noexcept { return static_cast<Ref>(Tag::kNone); }
Builder::Ref Builder::boolean(bool v) const noexcept {
  return static_cast<Ref>(v ? Tag::kTrue : Tag::kFalse);
}

Builder::Ref Builder::integer(int64_t v) {
  if (v >= layout::kInlineIntMin && v <= layout::kInlineIntMax) {
    return (static_cast<uint64_t>(v) << 4) | static_cast<uint64_t>(Tag::kInt);
  }
  uint8_t b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
  const auto bytes = std::as_bytes(std::span(b));
  return big_integer(bytes.first(codec::canonical_int_len(bytes)));
}

Builder::Ref Builder::big_integer(std::span<const std::byte> twos_complement_le) {
  const size_t n = codec::canonical_int_len(twos_complement_le);
  if (n <= 8) {
    const int64_t v = codec::Number::of_bigint(twos_complement_le).i;  // kInt: n <= 8 bytes
    if (v >= layout::kInlineIntMin && v <= layout::kInlineIntMax) return integer(v);
  }
  return tag_ref(Tag::kBigInt, impl_->node(n, 0, {twos_complement_le.first(n)}));
}

Builder::Ref Builder::floating(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  return tag_ref(Tag::kFloat, impl_->node(bits, 0, {}));
}

Builder::Ref Builder::str(std::string_view utf8, std::optional<uint64_t> flags) {
  uint64_t f;
  if (flags) {
    f = *flags;
    if (f & ~(layout::kStrAscii | layout::kStrSurrogates)) {
      throw_error(Errc::kInvalidArgument, "unknown str flags " + std::to_string(f));
    }
#ifndef NDEBUG
    if ((f & layout::kStrAscii) && !all_ascii(utf8)) {
      throw_error(Errc::kInvalidArgument, "str flagged ASCII holds a non-ASCII byte");
    }
#endif
  } else {
    f = all_ascii(utf8) ? layout::kStrAscii : 0;
  }
  return tag_ref(Tag::kStr, impl_->node(utf8.size(), f, {std::as_bytes(std::span(utf8.data(), utf8.size()))}));
}

Builder::Ref Builder::bytes(std::span<const std::byte> data) {
  return tag_ref(Tag::kBytes, impl_->node(data.size(), 0, {data}));
}

Builder::Ref Builder::pickle(std::span<const std::byte> data) {
  impl_->has_pickles = true;
  return tag_ref(Tag::kPickle, impl_->node(data.size(), 0, {data}));
}

Builder::Ref Builder::ndarray(std::string_view descr, uint64_t itemsize, std::span<const uint64_t> shape,
                              bool fortran, const void* data, uint64_t nbytes) {
  return nd_node(descr, itemsize, shape, fortran ? layout::kNdOrderF : layout::kNdOrderC, data,
                 nbytes);
}

Builder::Ref Builder::numpy_scalar(std::string_view descr, uint64_t itemsize, const void* data) {
  return nd_node(descr, itemsize, {}, layout::kNdOrderScalar, data, itemsize);
}

Builder::Ref Builder::nd_node(std::string_view descr, uint64_t itemsize,
                              std::span<const uint64_t> shape, uint32_t order, const void* data,
                              uint64_t nbytes) {
  if (shape.size() > layout::kMaxNdDims) {
    throw_error(Errc::kInvalidArgument, "a frozen ndarray has at most " + std::to_string(layout::kMaxNdDims) +
                                            " dimensions, got " + std::to_string(shape.size()));
  }
  if (descr.empty() || descr.size() > kMaxDescr) {
    throw_error(Errc::kInvalidArgument, "dtype description must have 1 to 1 MiB of text");
  }
  uint64_t count = 1;
  for (uint64_t d : shape) {
    if (d != 0 && count > UINT64_MAX / d) throw_error(Errc::kInvalidArgument, "ndarray shape overflows 64 bits");
    count *= d;
  }
  if ((itemsize != 0 && count > UINT64_MAX / itemsize) || count * itemsize != nbytes) {
    throw_error(Errc::kInvalidArgument, "ndarray: shape and itemsize make a different size than the " +
                                            std::to_string(nbytes) + " bytes given");
  }
  Impl& m = *impl_;
  m.pad_to(layout::kNdDataAlign);
  m.reserve(nbytes);
  const uint64_t data_offset = m.len;
  if (nbytes) std::memcpy(m.buf + m.len, data, nbytes);
  m.len += nbytes;
  layout::NdNode nd{};
  nd.itemsize = itemsize;
  nd.nbytes = nbytes;
  nd.data_offset = data_offset;
  nd.descr_size = descr.size();
  nd.ndim = static_cast<uint32_t>(shape.size());
  nd.order = order;
  // NdNode is 48 bytes: its first 16 go through node(), the rest as a part.
  const auto* raw = reinterpret_cast<const std::byte*>(&nd);
  uint64_t w0, w1;
  std::memcpy(&w0, raw, 8);
  std::memcpy(&w1, raw + 8, 8);
  return tag_ref(Tag::kNdarray, m.node(w0, w1, {std::span(raw + 16, sizeof nd - 16), std::as_bytes(shape),
                                                std::as_bytes(std::span(descr.data(), descr.size()))}));
}

Builder::Ref Builder::list(std::span<const Ref> items) {
  for (Ref r : items) impl_->check_ref(r);
  return tag_ref(Tag::kList, impl_->node(items.size(), 0, {std::as_bytes(items)}));
}

Builder::Ref Builder::tuple(std::span<const Ref> items) {
  for (Ref r : items) impl_->check_ref(r);
  return tag_ref(Tag::kTuple, impl_->node(items.size(), 0, {std::as_bytes(items)}));
}

std::optional<Builder::Ref> Builder::try_inline_sequence(bool tuple, uint64_t count,
                                                        const std::function<bool(Ref*)>& fill) {
  if (count > (uint64_t{1} << 53)) throw_error(Errc::kInvalidArgument, "frozen sequence too long");
  Impl& m = *impl_;
  m.pad_to(layout::kNodeAlign);
  m.reserve(16 + count * 8);
  const uint64_t start = m.len;
  const uint64_t nodes = m.nodes;
  const uint64_t off = m.node(count, 0, {});
  Ref* items = reinterpret_cast<Ref*>(m.buf + m.len);  // 16-byte aligned, after the header
  m.len += count * 8;
  if (!fill(items)) {  // nothing was written after this node: rewinding drops it
    m.len = start;
    m.nodes = nodes;
    return std::nullopt;
  }
  return tag_ref(tuple ? Tag::kTuple : Tag::kList, off);
}

Builder::Ref Builder::dict(std::span<const Ref> keys, std::span<const Ref> values) {
  return dict_hashed(keys, values, impl_->hashes(keys));
}
Builder::Ref Builder::set(std::span<const Ref> keys) { return set_hashed(keys, impl_->hashes(keys), false); }
Builder::Ref Builder::frozenset(std::span<const Ref> keys) {
  return set_hashed(keys, impl_->hashes(keys), true);
}

Builder::Ref Builder::dict_hashed(std::span<const Ref> keys, std::span<const Ref> values,
                                  std::span<const uint64_t> hashes) {
  if (keys.size() != values.size()) {
    throw_error(Errc::kInvalidArgument, "frozen dict: " + std::to_string(keys.size()) + " keys but " +
                                            std::to_string(values.size()) + " values");
  }
  return impl_->table(Tag::kDict, keys, values.data(), hashes);
}

Builder::Ref Builder::set_hashed(std::span<const Ref> keys, std::span<const uint64_t> hashes, bool frozen) {
  return impl_->table(frozen ? Tag::kFrozenSet : Tag::kSet, keys, nullptr, hashes);
}

uint64_t Builder::hash_of(Ref key) const {
  impl_->check_ref(key);
  return frozen::hash_of(Value(&impl_->refresh(), key));
}

bool Builder::keys_equal(Ref a, Ref b) const {
  impl_->check_ref(a);
  impl_->check_ref(b);
  const Image& img = impl_->refresh();
  return frozen::keys_equal(Value(&img, a), Value(&img, b));
}

uint64_t Builder::hash_seed() const noexcept { return impl_->seed; }
uint64_t Builder::size() const noexcept { return impl_->len; }

// ---- publishing --------------------------------------------------------------------------------

namespace {

// A save in progress writes `TARGET` + kTempInfix + the six letters or digits mkostemp picks,
// and holds an flock on that file from before its first byte until the file is renamed or removed.
// So a file with such a name, owned by this user, empty or starting with the image magic, whose
// lock can be taken, was left by a dead writer (remove_dead_save_temps). Changing the name or
// the locking breaks the gc of every shoal that still writes the old way.
constexpr std::string_view kTempInfix = ".shoal-tmp-";
constexpr size_t kTempRandom = 6;  // mkostemp's XXXXXX

bool is_temp_name(std::string_view name) {
  if (name.size() <= kTempInfix.size() + kTempRandom) return false;  // a target name comes first
  const size_t at = name.size() - kTempRandom - kTempInfix.size();
  if (name.substr(at, kTempInfix.size()) != kTempInfix) return false;
  return std::all_of(name.end() - kTempRandom, name.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; });
}

}  // namespace

Frozen Builder::finish(Ref root) {
  const uint64_t size = impl_->publish(root);
  using Part = std::pair<uint64_t, std::span<const std::byte>>;
  const Part parts[] = {{0, std::span<const std::byte>(impl_->buf, size)}};
  Frozen f = Frozen::from_segment(Segment::create_from(size, ObjectKind::kFrozen, parts, /*seal=*/true));
  impl_->reset();
  return f;
}

void Builder::save(Ref root, const std::string& path) {
  const uint64_t size = impl_->publish(root);
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  // The temporary file is locked from before its first byte until it is renamed (the lock goes
  // with the descriptor, closed only after the rename), so `shoal gc DIR` can tell a killed
  // writer's file (the lock is free) from one being written. mkostemp and flock are two calls:
  // a gc between them may take the free lock and unlink the new, empty file; the writer then
  // finds its file unlinked (no links left) and makes another. Where flock is refused (ENOLCK,
  // some network filesystems), the write goes on unlocked: gc's flock fails there too, so gc
  // never removes such a file.
  std::string tmp;
  int fd = -1;
  for (int attempt = 0;; ++attempt) {
    tmp = path + std::string(kTempInfix) + "XXXXXX";
    fd = ::mkostemp(tmp.data(), O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      throw_error(err == EACCES ? Errc::kPermission : Errc::kSystem,
                  errno_message("shoal.save: creating a temporary file next to '" + path + "'", err));
    }
    int rc;
    do {
      rc = ::flock(fd, LOCK_EX);  // gc holds it only while it looks: a wait is short
    } while (rc != 0 && errno == EINTR);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_nlink > 0) break;  // still linked (fstat failed: go on)
    ::close(fd);
    if (attempt == 100) {
      throw_error(Errc::kSystem, "shoal.save: another process keeps removing the temporary files "
                                 "next to '" + path + "' (a `shoal gc` in a loop?); stop it and save again");
    }
  }
  auto fail = [&](const char* what) {
    const int err = errno;
    ::unlink(tmp.c_str());  // before the close: the name goes while the lock still marks it live
    ::close(fd);
    throw_error(err == ENOSPC || err == EDQUOT ? Errc::kOutOfSpace : Errc::kSystem,
                errno_message(std::string("shoal.save: ") + what + " '" + tmp + "'", err));
  };
  const std::byte* p = impl_->buf;
  for (uint64_t done = 0; done < size;) {
    const ssize_t w = ::write(fd, p + done, static_cast<size_t>(std::min<uint64_t>(size - done, 1u << 30)));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("writing");
    }
    done += static_cast<uint64_t>(w);
  }
  if (::fsync(fd) != 0) fail("fsync of");
  // Read-only, so that a careless open(path, "w") fails instead of truncating the file under
  // its readers; and never more readable than the umask allows, since the file is the user's
  // data (under umask 077 it is 0400), not one of shoal's runtime files.
  if (::fchmod(fd, 0444 & ~platform::current_umask()) != 0) fail("chmod of");
  // Renamed while still locked: closing first would let a gc take a complete file.
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    ::close(fd);
    throw_error(err == EACCES ? Errc::kPermission : Errc::kSystem,
                errno_message("shoal.save: renaming into '" + path + "'", err));
  }
  (void)::close(fd);  // fsync above already reported any error writing the data
  // The rename is durable once the directory is (best effort: some filesystems refuse).
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  impl_->reset();
}

std::vector<std::string> remove_dead_save_temps(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    const int err = errno;
    throw_error(err == ENOENT    ? Errc::kNotFound
                : err == EACCES ? Errc::kPermission
                                 : Errc::kSystem,
                errno_message("cannot list the directory '" + dir + "'", err));
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    if (is_temp_name(e->d_name)) names.emplace_back(e->d_name);
  }
  ::closedir(d);
  const std::string prefix = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  std::vector<std::string> removed;
  for (const std::string& name : names) {
    const std::string p = prefix + name;
    // O_NOFOLLOW, O_NONBLOCK and S_ISREG: a symlink, FIFO or device with a matching name is
    // not a save's. Another user's file is left to that user.
    platform::UniqueFd fd(::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    struct stat st {};
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
        st.st_uid != ::geteuid()) {
      continue;
    }
    // A live writer holds this lock for as long as the file has this name (Builder::save).
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
    // Written by save: empty (its writer died before the first write) or an image's bytes,
    // which start with the magic. Sized under the lock: no writer can be adding to it now.
    if (::fstat(fd.get(), &st) != 0) continue;
    const char* magic = "SHOALFRZ";  // layout::kFrozenMagic's bytes
    char head[8] = {};
    const size_t want = static_cast<size_t>(std::min<off_t>(st.st_size, 8));
    if (::pread(fd.get(), head, want, 0) != static_cast<ssize_t>(want) ||
        std::memcmp(head, magic, want) != 0) {
      continue;
    }
    // unlink() goes by name: only while the name is still the file locked above.
    struct stat now {};
    if (::lstat(p.c_str(), &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
      continue;
    }
    if (::unlink(p.c_str()) == 0) removed.push_back(p);
  }
  return removed;
}

std::span<const std::byte> Builder::finish_view(Ref root) {
  const uint64_t size = impl_->publish(root);
  return {impl_->buf, size};
}

void Builder::clear() noexcept { impl_->reset(); }

std::vector<std::byte> Builder::finish_bytes(Ref root) {
  const uint64_t size = impl_->publish(root);
  std::vector<std::byte> out(impl_->buf, impl_->buf + size);
  impl_->reset();
  return out;
}

}  // namespace shoal::frozen
