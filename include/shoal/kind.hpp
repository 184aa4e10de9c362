// include/shoal/kind.hpp — the one list of object kinds.
//
// A kind says what a segment holds and how to read it. Its numeric id is written into every
// handle (include/shoal/handle.hpp) and every segment header (src/layout/segment_layout.hpp,
// offset 20), so an id, once released, never changes meaning or value.
//
// To add a kind: append one line to SHOAL_OBJECT_KINDS below (the next id; ids stay dense),
// then give it a Python entry in python/shoal/_kinds.py (tests/python/test_kinds.py fails
// until every kind listed here has one). Everything else reads this list: ObjectKind,
// Handle::decode and validate_segment_header (which refuse an id this build does not list),
// the bindings' _shoal.object_kinds(), and through it shoal.attach, the pickling
// reconstructors and the names `shoal ls` prints.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace shoal {

// X(enumerator, id, short name, description). The short name is what `shoal ls` prints and
// what python/shoal/_kinds.py keys its entries by: lower-case, unique, stable.
#define SHOAL_OBJECT_KINDS(X)                                                         \
  X(kBytes, 0, "bytes", "raw bytes: a plain segment (shoal::Segment, shoal.Segment)") \
  X(kArray, 1, "array", "an n-dimensional array (shoal::Array, shoal.Array)")         \
  X(kFrozen, 2, "frozen", "a read-only object graph (shoal::Frozen, shoal.freeze)")         \
  X(kHeap, 3, "heap", "a growable object: the root of a heap (shoal::Heap)")                \
  X(kExtent, 4, "extent", "part of a heap, added as it grew (referenced by its root)")       \
  X(kSync, 5, "sync", "a lock, semaphore, event, condition, barrier or value (shoal/sync.hpp)")

/// What a segment holds (see SHOAL_OBJECT_KINDS).
enum class ObjectKind : uint32_t {
#define SHOAL_KIND_ENUMERATOR(name, id, short_name, description) name = id,
  SHOAL_OBJECT_KINDS(SHOAL_KIND_ENUMERATOR)
#undef SHOAL_KIND_ENUMERATOR
  kCount  // one past the last kind, not a kind: ids are exactly 0 .. kCount-1
};

struct KindInfo {
  ObjectKind kind;
  std::string_view name;         // short name (the CLI's, Python's registry key)
  std::string_view description;  // one line, for people
};

inline constexpr std::array<KindInfo, static_cast<size_t>(ObjectKind::kCount)> kObjectKinds = {{
#define SHOAL_KIND_INFO(name, id, short_name, description) \
  {ObjectKind::name, short_name, description},
    SHOAL_OBJECT_KINDS(SHOAL_KIND_INFO)
#undef SHOAL_KIND_INFO
}};

namespace detail {
constexpr bool kinds_are_dense() {
  for (size_t i = 0; i < kObjectKinds.size(); ++i) {
    if (static_cast<size_t>(kObjectKinds[i].kind) != i) return false;
  }
  return true;
}
}  // namespace detail
// kind_known() and kind_name() index the table by id: a gap or a reordering would make them
// lie about ids already in handles and on disk.
static_assert(detail::kinds_are_dense(), "SHOAL_OBJECT_KINDS ids must be 0, 1, 2, ... in order");
// Released ids: these must never change (they are in handles and segment headers).
static_assert(static_cast<uint32_t>(ObjectKind::kBytes) == 0);
static_assert(static_cast<uint32_t>(ObjectKind::kArray) == 1);
static_assert(static_cast<uint32_t>(ObjectKind::kFrozen) == 2);
static_assert(static_cast<uint32_t>(ObjectKind::kHeap) == 3);
static_assert(static_cast<uint32_t>(ObjectKind::kExtent) == 4);
static_assert(static_cast<uint32_t>(ObjectKind::kSync) == 5);

/// True if this build knows kind `id` (a handle or header with another id is refused).
constexpr bool kind_known(uint32_t id) noexcept {
  return id < static_cast<uint32_t>(ObjectKind::kCount);
}

/// The short name of kind `id` ("bytes", "array", ...); empty if this build does not know it.
constexpr std::string_view kind_name(uint32_t id) noexcept {
  return kind_known(id) ? kObjectKinds[id].name : std::string_view{};
}

/// The short names of every known kind, "bytes, array, frozen": for error messages.
inline std::string known_kind_names() {
  std::string s;
  for (const KindInfo& k : kObjectKinds) {
    if (!s.empty()) s += ", ";
    s += k.name;
  }
  return s;
}

}  // namespace shoal
