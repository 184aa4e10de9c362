// src/layout/array_layout.hpp — the first bytes of an array segment's data area.
//
// An array segment (ObjectKind::kArray) is a segment whose data area starts with an
// ArrayHeader, then the dtype description, then the elements:
//
//   data + 0        data + 192            data + data_offset            + nbytes
//   +---------------+---------------------+------------------------------+
//   | ArrayHeader   | dtype descr (UTF-8) | elements (C or F order)       |
//   +---------------+---------------------+------------------------------+
//
// The header describes the array as created; views (slices, transposes) are not stored: their
// pickles carry (offset, shape, strides) relative to the element area, validated against it.
// The dtype descr is numpy's `dtype.descr`-style text: `repr(numpy.lib.format.dtype_to_descr(dt))`
// (e.g. "'<f8'" or "[('x', '<i4'), ('y', '<f8')]"), parsed in Python with ast.literal_eval
// (never eval) and in C++ only for simple scalar types ("'<f8'" -> kind 'f', size 8).
//
// Invariants (parse_array_header checks all, on a local copy):
//   A1  magic == kArrayMagic, version == kArrayVersion, reserved fields == 0
//   A2  ndim <= kMaxDims; descr_size <= kMaxDescr
//   A3  data_offset % 64 == 0, data_offset >= kArrayHeaderSize + descr_size
//   A4  data_offset + nbytes <= the segment's data size
//   A5  nbytes == itemsize * prod(shape) (no overflow), itemsize > 0 unless nbytes == 0
// Who writes: the creator, once, right after creating the segment and before it makes any
// handle (so before any other process can attach), and before sealing; never after.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace shoal::layout {

inline constexpr uint64_t kArrayMagic = 0x5241'4C41'4F48'53ULL;  // "SHOALAR\0" little-endian
inline constexpr uint32_t kArrayVersion = 1;
inline constexpr uint32_t kMaxDims = 16;
inline constexpr uint64_t kArrayHeaderSize = 192;
inline constexpr uint64_t kMaxDescr = 1 << 20;  // structured dtypes with many fields
inline constexpr uint64_t kArrayAlign = 64;

struct ArrayHeader {
  uint64_t magic;             // kArrayMagic
  uint32_t version;           // kArrayVersion
  uint32_t ndim;              // <= kMaxDims
  uint64_t itemsize;          // bytes per element (numpy dtype.itemsize)
  uint64_t nbytes;            // itemsize * prod(shape)
  uint64_t data_offset;       // from the start of the data area; multiple of 64
  uint64_t descr_size;        // bytes of dtype descr text right after this header
  uint32_t fortran;           // 1: column-major (F order), 0: row-major (C order)
  uint32_t reserved0;         // must be zero
  uint64_t shape[kMaxDims];   // shape[0..ndim)
  uint64_t reserved1;         // must be zero
};
static_assert(std::is_standard_layout_v<ArrayHeader>);
static_assert(sizeof(ArrayHeader) == kArrayHeaderSize, "layout is ABI: bump kArrayVersion");
static_assert(offsetof(ArrayHeader, shape) == 56, "layout is ABI: bump kArrayVersion");

}  // namespace shoal::layout
