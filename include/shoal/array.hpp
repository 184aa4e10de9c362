// include/shoal/array.hpp — an n-dimensional array in one shared segment, readable from C++
// and from Python (where it is a numpy.ndarray subclass, shoal.Array).
//
// Layout: src/layout/array_layout.hpp. The element type is described by numpy's dtype descr
// text ("'<f8'", "'<i4'", "[('x', '<i4'), ('y', '<f8')]"), so any numpy dtype round-trips;
// C++ typed access (`as<T>()`) is offered for the fixed-size arithmetic types.
//
// Concurrency: like Segment, the bytes are the user's; a sealed array is read-only everywhere.
// Differs from std::mdspan: owns its (shared) storage; from boost::interprocess: no name, no leak.
#pragma once

#include <complex>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "shoal/error.hpp"
#include "shoal/segment.hpp"

namespace shoal {

/// numpy's descr text for a C++ arithmetic type on this (little-endian) machine.
template <class T>
constexpr std::string_view dtype_descr_of() {
  if constexpr (std::is_same_v<T, bool>) return "'|b1'";
  else if constexpr (std::is_same_v<T, int8_t>) return "'|i1'";
  else if constexpr (std::is_same_v<T, uint8_t>) return "'|u1'";
  else if constexpr (std::is_same_v<T, int16_t>) return "'<i2'";
  else if constexpr (std::is_same_v<T, uint16_t>) return "'<u2'";
  else if constexpr (std::is_same_v<T, int32_t>) return "'<i4'";
  else if constexpr (std::is_same_v<T, uint32_t>) return "'<u4'";
  else if constexpr (std::is_same_v<T, int64_t>) return "'<i8'";
  else if constexpr (std::is_same_v<T, uint64_t>) return "'<u8'";
  else if constexpr (std::is_same_v<T, float>) return "'<f4'";
  else if constexpr (std::is_same_v<T, double>) return "'<f8'";
  else if constexpr (std::is_same_v<T, std::complex<float>>) return "'<c8'";
  else if constexpr (std::is_same_v<T, std::complex<double>>) return "'<c16'";
  else static_assert(sizeof(T) == 0, "no numpy dtype for this type");
}

class Array {
 public:
  /// A zero-filled array of `shape` elements of `itemsize` bytes described by `descr`.
  static Array create(std::string_view descr, uint64_t itemsize, std::span<const uint64_t> shape,
                      bool fortran = false);
  template <class T>
  static Array create(std::span<const uint64_t> shape, bool fortran = false) {
    return create(dtype_descr_of<T>(), sizeof(T), shape, fortran);
  }
  /// An array holding a copy of `nbytes` bytes at `elements` (in C order, or F order when
  /// `fortran`), written into the segment with pwrite (no page faults in this process), and
  /// sealed read-only for every process when `seal`. This is what shoal.share() uses.
  static Array create_from(std::string_view descr, uint64_t itemsize,
                           std::span<const uint64_t> shape, bool fortran, const void* elements,
                           uint64_t nbytes, bool seal = true);
  /// Attaches an array by its segment handle; throws if the segment is not a valid array.
  static Array attach(std::string_view handle);
  /// Wraps an attached segment (validates its array header).
  static Array from_segment(Segment seg);

  const Segment& segment() const noexcept { return seg_; }
  std::string handle(bool pin = true) const { return seg_.handle(pin); }
  const std::string& descr() const noexcept { return descr_; }
  uint64_t itemsize() const noexcept { return itemsize_; }
  const std::vector<uint64_t>& shape() const noexcept { return shape_; }
  bool fortran() const noexcept { return fortran_; }
  uint64_t nbytes() const noexcept { return nbytes_; }
  uint64_t data_offset() const noexcept { return data_offset_; }
  uint64_t element_count() const noexcept { return itemsize_ ? nbytes_ / itemsize_ : 0; }
  std::byte* data() const noexcept { return seg_.data() + data_offset_; }
  /// Makes it read-only for every process (see Segment::seal).
  void seal() { seg_.seal(); }

  /// A typed view of every element in memory order; InvalidArgumentError if T is not the
  /// array's dtype.
  template <class T>
  std::span<T> as() const {
    if (descr_ != dtype_descr_of<std::remove_const_t<T>>() || itemsize_ != sizeof(T)) {
      throw_error(Errc::kInvalidArgument, "array has dtype " + descr_ + ", not " +
                                              std::string(dtype_descr_of<std::remove_const_t<T>>()));
    }
    return {reinterpret_cast<T*>(data()), static_cast<size_t>(element_count())};
  }

 private:
  Segment seg_;
  std::string descr_;
  uint64_t itemsize_ = 0;
  std::vector<uint64_t> shape_;
  bool fortran_ = false;
  uint64_t nbytes_ = 0;
  uint64_t data_offset_ = 0;
};

/// Validates an array header at the start of `data` (a segment's data area of `size` bytes)
/// and fills the outputs; never crashes on any input (fuzzed by fuzz/array_header_fuzzer.cpp).
struct ArrayInfo {
  std::string descr;
  uint64_t itemsize = 0;
  std::vector<uint64_t> shape;
  bool fortran = false;
  uint64_t nbytes = 0;
  uint64_t data_offset = 0;
};
Result<ArrayInfo> parse_array_header(const std::byte* data, uint64_t size) noexcept;
/// The same, given only the first `readable` bytes of the `size`-byte data area (a copy): an
/// error (kDecode) too when the header and its descr extend past them; reads nothing beyond.
Result<ArrayInfo> parse_array_header(const std::byte* data, uint64_t size,
                                     uint64_t readable) noexcept;

}  // namespace shoal
