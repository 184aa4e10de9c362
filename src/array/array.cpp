#include "shoal/array.hpp"

#include <algorithm>
#include <cstring>

#include "layout/array_layout.hpp"
#include "layout/segment_layout.hpp"

namespace shoal {

using layout::ArrayHeader;

namespace {

struct Planned {
  ArrayHeader header{};
  uint64_t data_offset = 0;
  uint64_t nbytes = 0;
};

// Validates the request and lays out the header (shared by create and create_from).
Planned plan(std::string_view descr, uint64_t itemsize, std::span<const uint64_t> shape,
             bool fortran) {
  if (shape.size() > layout::kMaxDims) {
    throw_error(Errc::kInvalidArgument, "an array has at most " +
                                            std::to_string(layout::kMaxDims) + " dimensions, got " +
                                            std::to_string(shape.size()));
  }
  if (descr.empty() || descr.size() > layout::kMaxDescr) {
    throw_error(Errc::kInvalidArgument, "dtype description must have 1 to 1 MiB of text");
  }
  // numpy's rule, so that every shape created here can be viewed: the nonzero dimensions times
  // the item size must fit in a signed 64-bit size even when a zero dimension makes the array
  // empty (numpy refuses np.zeros((2**40, 0, 2**40)) as "array is too big"). Checked before
  // anything is made; it also keeps the element count below from overflowing.
  uint64_t span = std::max<uint64_t>(itemsize, 1);
  for (uint64_t d : shape) {
    if (d != 0 && span > static_cast<uint64_t>(INT64_MAX) / d) {
      std::string dims;
      for (uint64_t e : shape) dims += (dims.empty() ? "" : ", ") + std::to_string(e);
      throw_error(Errc::kInvalidArgument,
                  "array is too big: shape (" + dims + ") of " + std::to_string(itemsize) +
                      "-byte items: its nonzero dimensions times the item size exceed 2**63 - 1 "
                      "bytes (numpy refuses such a shape too)");
    }
    if (d != 0) span *= d;
  }
  uint64_t count = 1;
  for (uint64_t d : shape) count *= d;
  if (itemsize != 0 && count > layout::kMaxSegmentBytes / itemsize) {
    throw_error(Errc::kInvalidArgument, "array of " + std::to_string(count) + " elements of " +
                                            std::to_string(itemsize) + " bytes is too large");
  }
  Planned p;
  p.nbytes = count * itemsize;
  const uint64_t head = layout::kArrayHeaderSize + descr.size();
  p.data_offset = (head + layout::kArrayAlign - 1) / layout::kArrayAlign * layout::kArrayAlign;
  ArrayHeader& h = p.header;
  h.magic = layout::kArrayMagic;
  h.version = layout::kArrayVersion;
  h.ndim = static_cast<uint32_t>(shape.size());
  h.itemsize = itemsize;
  h.nbytes = p.nbytes;
  h.data_offset = p.data_offset;
  h.descr_size = descr.size();
  h.fortran = fortran ? 1 : 0;
  for (size_t i = 0; i < shape.size(); ++i) h.shape[i] = shape[i];
  return p;
}

}  // namespace

Array Array::create_from(std::string_view descr, uint64_t itemsize,
                         std::span<const uint64_t> shape, bool fortran, const void* elements,
                         uint64_t nbytes, bool seal) {
  Planned p = plan(descr, itemsize, shape, fortran);
  if (nbytes != p.nbytes) {
    throw_error(Errc::kInvalidArgument, "the shape and itemsize make " + std::to_string(p.nbytes) +
                                            " bytes, the data has " + std::to_string(nbytes));
  }
  using Part = std::pair<uint64_t, std::span<const std::byte>>;
  const Part parts[] = {
      {0, std::as_bytes(std::span(&p.header, 1))},
      {sizeof(ArrayHeader), std::as_bytes(std::span(descr.data(), descr.size()))},
      {p.data_offset, std::span(static_cast<const std::byte*>(elements), nbytes)},
  };
  return from_segment(Segment::create_from(p.data_offset + p.nbytes, ObjectKind::kArray, parts, seal));
}

Array Array::create(std::string_view descr, uint64_t itemsize, std::span<const uint64_t> shape,
                    bool fortran) {
  Planned p = plan(descr, itemsize, shape, fortran);
  Segment seg = Segment::create(p.data_offset + p.nbytes, {ObjectKind::kArray, false});
  std::memcpy(seg.data(), &p.header, sizeof p.header);
  std::memcpy(seg.data() + sizeof p.header, descr.data(), descr.size());
  return from_segment(std::move(seg));
}

Array Array::attach(std::string_view handle) { return from_segment(Segment::attach(handle)); }

Array Array::from_segment(Segment seg) {
  if (!seg.valid()) throw_error(Errc::kInvalidArgument, "segment is closed");
  if (seg.kind() != ObjectKind::kArray) {
    throw_error(Errc::kInvalidArgument, "segment holds kind " +
                                            std::to_string(static_cast<uint32_t>(seg.kind())) +
                                            ", not an array");
  }
  ArrayInfo info = parse_array_header(seg.data(), seg.size()).take();
  Array a;
  a.seg_ = std::move(seg);
  a.descr_ = std::move(info.descr);
  a.itemsize_ = info.itemsize;
  a.shape_ = std::move(info.shape);
  a.fortran_ = info.fortran;
  a.nbytes_ = info.nbytes;
  a.data_offset_ = info.data_offset;
  return a;
}

Result<ArrayInfo> parse_array_header(const std::byte* data, uint64_t size) noexcept {
  return parse_array_header(data, size, size);
}

Result<ArrayInfo> parse_array_header(const std::byte* data, uint64_t size,
                                     uint64_t readable) noexcept {
  readable = std::min(readable, size);
  try {
    if (data == nullptr || size < sizeof(ArrayHeader)) {
      return {Errc::kCorrupt, "array segment of " + std::to_string(size) +
                                  " bytes is smaller than its 192-byte array header"};
    }
    if (readable < sizeof(ArrayHeader)) {
      return {Errc::kDecode, "array header extends past the " + std::to_string(readable) +
                                 " bytes given"};
    }
    ArrayHeader h;  // a local copy: check and use only this (another process may be writing)
    std::memcpy(&h, data, sizeof h);
    if (h.magic != layout::kArrayMagic) return {Errc::kCorrupt, "array header: bad magic at offset 0"};
    if (h.version != layout::kArrayVersion) {
      return {Errc::kIncompatible, "array header has version " + std::to_string(h.version) +
                                       ", this build reads " + std::to_string(layout::kArrayVersion)};
    }
    if (h.reserved0 != 0 || h.reserved1 != 0) {
      return {Errc::kIncompatible, "array header uses reserved fields: made by a newer shoal"};
    }
    if (h.ndim > layout::kMaxDims) {
      return {Errc::kCorrupt, "array header at offset 12: ndim " + std::to_string(h.ndim) +
                                  " exceeds " + std::to_string(layout::kMaxDims)};
    }
    if (h.descr_size == 0 || h.descr_size > layout::kMaxDescr ||
        h.data_offset % layout::kArrayAlign != 0 ||
        h.data_offset < layout::kArrayHeaderSize + h.descr_size || h.data_offset > size) {
      return {Errc::kCorrupt, "array header at offset 32: data offset " +
                                  std::to_string(h.data_offset) + " / descr size " +
                                  std::to_string(h.descr_size) + " are inconsistent"};
    }
    if (h.descr_size > readable - sizeof h) {
      return {Errc::kDecode, "array descr extends past the " + std::to_string(readable) +
                                 " bytes given"};
    }
    if (h.nbytes > size - h.data_offset) {
      return {Errc::kCorrupt, "array header at offset 24: " + std::to_string(h.nbytes) +
                                  " bytes of elements do not fit in the segment"};
    }
    uint64_t count = 1;
    for (uint32_t i = 0; i < h.ndim; ++i) {
      uint64_t d = h.shape[i];
      if (d != 0 && count > UINT64_MAX / d) return {Errc::kCorrupt, "array shape overflows"};
      count *= d;
    }
    if ((h.itemsize != 0 && count > UINT64_MAX / h.itemsize) || count * h.itemsize != h.nbytes ||
        (h.itemsize == 0 && h.nbytes != 0)) {
      return {Errc::kCorrupt, "array header: shape x itemsize does not equal nbytes"};
    }
    ArrayInfo info;
    info.descr.assign(reinterpret_cast<const char*>(data) + sizeof h, h.descr_size);
    info.itemsize = h.itemsize;
    info.shape.assign(h.shape, h.shape + h.ndim);
    info.fortran = h.fortran != 0;
    info.nbytes = h.nbytes;
    info.data_offset = h.data_offset;
    return info;
  } catch (const std::bad_alloc&) {
    return {Errc::kOutOfSpace, "out of memory while reading an array header"};
  }
}

}  // namespace shoal
