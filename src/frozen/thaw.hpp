// src/frozen/thaw.hpp — a frozen image (an in-memory value: a channel message) turned into
// plain objects, all at once: the "thaw" decoder behind the queues' value encoding.
//
// The views of a mapped image (python/bindings/frozen_bind.cpp) decode lazily and keep the
// image mapped; a message is a private copy read once, so it is thawed into plain objects
// straight away. The walk is written once, here, over an output policy `Out`: the Python
// binding's builds Python objects (python/bindings/codec.cpp, decode_message), the fuzzer's
// only reads (fuzz/thaw_fuzzer.cpp), so libFuzzer drives the same walk over plain bytes.
//
// What must stay true (docs/design/codec.md, C3): every node is read through the checked
// readers (Image::node: F2; a container's children before it: F4, so there is no cycle), and
// the work is bounded by the image's size, whatever the bytes say:
//   - each container node is thawed once (memo by ref): a shared subtree comes back as one
//     shared object, as pickle does, and a forged DAG of 2**60 paths costs one visit a node;
//   - the items of all containers together are at most size/8 (a legit item is an 8-byte ref
//     of its container's node), checked before anything is allocated for a container;
//   - depth at most kThawMaxDepth (the encoder refuses deeper values: they are pickled).
// Tags a message never holds (ndarray, pickle, reserved) are DecodeError.
//
// Out provides: using Obj (owning, copyable); Obj leaf(const Image&, uint64_t ref);
// Obj again(const Obj&) (a memoised container met again); Obj sequence(bool tuple, uint64_t n)
// then void set_item(Obj&, uint64_t i, Obj item); Obj table(layout::Tag) then
// void add_key(Obj&, Obj key) (sets) / void add_entry(Obj&, Obj key, Obj value) (dicts).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "layout/frozen_layout.hpp"
#include "shoal/error.hpp"
#include "shoal/frozen.hpp"

namespace shoal::frozen {

inline constexpr int kThawMaxDepth = 1000;

template <class Out>
class Thaw {
 public:
  using Obj = typename Out::Obj;
  Thaw(const Image& im, Out& out) : im_(im), out_(out), budget_(im.size() / 8) {}

  Obj root() { return value(im_.root().ref(), 0); }

 private:
  Obj value(uint64_t r, int depth) {
    using layout::Tag;
    const Tag t = layout::tag_of(r);
    switch (t) {
      case Tag::kList:
      case Tag::kTuple:
      case Tag::kDict:
      case Tag::kSet:
      case Tag::kFrozenSet:
        break;
      case Tag::kNdarray:
      case Tag::kPickle:
      case Tag::kReserved:
        throw_error(Errc::kDecode, "a value message holds an ndarray, pickle or reserved tag, "
                                   "which its encoder never writes (the message is corrupt)");
      default:
        return out_.leaf(im_, r);
    }
    if (auto it = memo_.find(r); it != memo_.end()) return out_.again(it->second);
    if (depth >= kThawMaxDepth) {
      throw_error(Errc::kDecode, "a value message nests deeper than " +
                                     std::to_string(kThawMaxDepth) + " (the message is corrupt)");
    }
    const Value v(&im_, r);
    const uint64_t n = v.size();
    if (n > budget_) {
      throw_error(Errc::kDecode, "a value message's containers claim more items than its " +
                                     std::to_string(im_.size()) +
                                     " bytes can hold (the message is corrupt)");
    }
    budget_ -= n;
    Obj o;
    if (t == Tag::kList || t == Tag::kTuple) {
      o = out_.sequence(t == Tag::kTuple, n);
      for (uint64_t i = 0; i < n; ++i) out_.set_item(o, i, value(v[i].ref(), depth + 1));
    } else if (t == Tag::kDict) {
      o = out_.table(t);
      for (uint64_t i = 0; i < n; ++i) {
        Obj k = value(v.key_at(i).ref(), depth + 1);
        out_.add_entry(o, std::move(k), value(v.value_at(i).ref(), depth + 1));
      }
    } else {
      o = out_.table(t);
      for (uint64_t i = 0; i < n; ++i) out_.add_key(o, value(v.key_at(i).ref(), depth + 1));
    }
    // The root is nobody's child (F4): only inner containers can be met again.
    if (depth > 0) memo_.emplace(r, out_.again(o));
    return o;
  }

  const Image& im_;
  Out& out_;
  uint64_t budget_;
  std::unordered_map<uint64_t, Obj> memo_;
};

}  // namespace shoal::frozen
