// src/layout/frozen_layout.hpp — the frozen image: an immutable object graph (dict, list,
// tuple, set, frozenset, str, bytes, int, float, bool, None, ndarray, pickled leaves) laid out
// as offset tables and open-addressing hash tables, read in place by every process.
//
// The same bytes live in two places: the data area of a kFrozen segment (shoal.freeze) and a
// file (shoal.save / shoal.load, mapped read-only). Nothing in an image is a pointer: a Ref is
// a tagged 64-bit word, either an inline scalar or the offset of a node from the image start.
//
//   0              64                                                        image_size
//   +--------------+----------------------------------------------------------+
//   | FrozenHeader | nodes, each 16-byte aligned, children before parents     |
//   +--------------+----------------------------------------------------------+
//
// Ref (uint64_t): low 4 bits are the Tag, the rest is the payload.
//   kNone, kFalse, kTrue                 payload 0
//   kInt                                 payload is the value: (int64_t)ref >> 4, so only
//                                        integers in [-2**59, 2**59) are inline
//   every other tag                      ref & ~15 is the node's offset (16-byte aligned,
//                                        >= kFrozenHeaderSize, node inside the image)
//
// Nodes (all fields little-endian, fixed width; sizes in bytes):
//   kFloat      FloatNode   {double value; uint64_t zero}
//   kBigInt     BlobNode    {uint64_t nbytes; uint64_t zero} + nbytes of two's complement,
//                           little-endian, minimal length; never an integer that fits inline
//   kStr        BlobNode    {uint64_t nbytes; uint64_t flags} + UTF-8 (surrogatepass) text;
//                           flags: kStrAscii when every byte < 0x80, kStrSurrogates when the
//                           text holds lone surrogates (decode with surrogatepass)
//   kBytes      BlobNode    {uint64_t nbytes; uint64_t zero} + bytes
//   kPickle     BlobNode    {uint64_t nbytes; uint64_t zero} + a pickle (protocol 5, in band)
//   kList/kTuple SeqNode    {uint64_t count; uint64_t zero} + Ref items[count]
//   kDict/kSet/kFrozenSet TableNode {uint64_t count; uint32_t log2_slots; uint32_t entry_words}
//                           + Entry slots[1 << log2_slots]: the open-addressing table itself,
//                             entry_words 64-bit words each, {uint64_t hash; Ref key} for
//                             sets, + Ref value for dicts; an empty slot is all zero but for
//                             key == kEmptyKey
//                           + uint32_t order[count]: the slot of each entry in insertion order
//                             (iteration reads order[i], then that slot)
//   kNdarray    NdNode      {see struct} + uint64_t shape[ndim] + descr text; the elements
//                           are elsewhere in the image at data_offset (64-byte aligned)
//
// Hash tables: CPython's dict probing (Probe below): the first slot of a hash h is h & mask,
// then perturb >>= 5, slot = (5 * slot + perturb + 1) & mask. Identity-like int hashes keep
// consecutive int keys in consecutive slots (cache-friendly, as in a dict) and the perturbation
// spreads keys that share low bits. Entries live in the slots themselves, so a lookup that
// hits costs one cache miss for the entry (and one for a value node, if any). A lookup stops at
// an empty slot or after nslots + 64 probes (the perturbation is spent after 13 shifts; then
// 5*i + 1 mod 2**k visits every slot), so a corrupt full table cannot loop forever. Hashes (the same in
// every process, whatever PYTHONHASHSEED): Python's numeric hash for bool, int and float (so
// 1, 1.0 and True are one key, as are 2**60 and 2.0**60; NaN hashes to 0 and equals nothing);
// shoal's seeded hash (header.hash_seed) of the UTF-8 bytes for str and of the bytes for bytes;
// CPython's tuple and frozenset combining rules applied to those element hashes.
//
// Invariants (the writer guarantees them; a reader checks each before it relies on it, so a
// corrupt or truncated image raises DecodeError and never crashes):
//   F1  magic == kFrozenMagic, version == kFrozenVersion, reserved == 0,
//       kFrozenHeaderSize <= image_size <= the bytes actually mapped
//   F2  every node offset is 16-byte aligned, >= kFrozenHeaderSize, and the whole node
//       (fixed part and variable part, computed without overflow) lies inside the image
//   F3  tables: entry_words == 2 (sets) or 3 (dicts); 3 <= log2_slots <= 40;
//       count <= (1 << log2_slots) / 2 and count < 2**32; order[i] < nslots, distinct, and
//       names a non-empty slot; exactly count slots are non-empty; every entry is found by
//       probing its hash without crossing an empty slot
//   F4  a container's children were written before it (offsets of children < offset of the
//       parent), so a well-formed image has no cycles; readers still bound their recursion
//   F5  ndarray: data_offset % 64 == 0 and data_offset + nbytes <= image_size,
//       nbytes == itemsize * prod(shape), ndim <= 32, order is kNdOrderC, kNdOrderF or
//       kNdOrderScalar, and kNdOrderScalar only with ndim == 0
// Who writes: the builder, in private memory, before the image is published (a segment is
// sealed, a file is renamed into place); nobody writes an image after that.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

// Tags, refs, the empty key, the table bounds and the probe sequence: the constants the public
// inline readers of include/shoal/frozen.hpp need too.
#include "shoal/detail/frozen_format.hpp"

namespace shoal::layout {

inline constexpr uint64_t kFrozenMagic = 0x5A52'464C'414F'4853ULL;  // "SHOALFRZ" little-endian
inline constexpr uint32_t kFrozenVersion = 1;
inline constexpr uint64_t kNdDataAlign = 64;
inline constexpr uint32_t kMaxNdDims = 32;
/// NdNode::order. kNdOrderScalar is a numpy scalar (np.float32(1.5), np.int64(3)): its one
/// element is stored as a 0-d array and read back as the scalar. A reader older than the
/// scalar order refuses it as corrupt; every image it could read before still reads the same.
inline constexpr uint32_t kNdOrderC = 0;
inline constexpr uint32_t kNdOrderF = 1;
inline constexpr uint32_t kNdOrderScalar = 2;

/// Header flags.
inline constexpr uint32_t kFrozenHasPickles = 1u << 0;  // at least one kPickle node
inline constexpr uint32_t kFrozenKnownFlags = kFrozenHasPickles;

/// Str flags.
inline constexpr uint64_t kStrAscii = 1u << 0;
inline constexpr uint64_t kStrSurrogates = 1u << 1;


struct FrozenHeader {
  uint64_t magic;       // kFrozenMagic
  uint32_t version;     // kFrozenVersion
  uint32_t flags;       // kFrozen* flags
  uint64_t image_size;  // bytes of the whole image, this header included
  uint64_t root;        // Ref of the root object
  uint64_t hash_seed;   // seed of the str/bytes hash used by every table of this image
  uint64_t node_count;  // nodes written (statistics; not relied on)
  uint64_t reserved[2];  // zero
};
static_assert(std::is_standard_layout_v<FrozenHeader>);
static_assert(sizeof(FrozenHeader) == kFrozenHeaderSize, "layout is ABI: bump kFrozenVersion");

struct FloatNode {
  double value;
  uint64_t zero;
};
struct BlobNode {  // kStr, kBytes, kBigInt, kPickle; the bytes follow
  uint64_t nbytes;
  uint64_t flags;  // kStr only; zero otherwise
};
struct SeqNode {  // kList, kTuple; Ref items[count] follow
  uint64_t count;
  uint64_t zero;
};
struct TableNode {  // kDict, kSet, kFrozenSet; slots then order follow
  uint64_t count;
  uint32_t log2_slots;
  uint32_t entry_words;  // 2: {hash, key}; 3: {hash, key, value}
};
struct NdNode {  // shape[ndim] then descr text follow
  uint64_t itemsize;
  uint64_t nbytes;
  uint64_t data_offset;  // from the image start; multiple of kNdDataAlign
  uint64_t descr_size;   // numpy descr text, as in array_layout.hpp
  uint32_t ndim;
  uint32_t order;  // kNdOrderC, kNdOrderF, kNdOrderScalar
  uint64_t zero;
};
static_assert(sizeof(FloatNode) == 16 && sizeof(BlobNode) == 16 && sizeof(SeqNode) == 16);
static_assert(sizeof(TableNode) == 16 && sizeof(NdNode) == 48);


}  // namespace shoal::layout
