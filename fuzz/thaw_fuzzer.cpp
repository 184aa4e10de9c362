// fuzz/thaw_fuzzer.cpp — a value-encoded channel message (a frozen image, layout::kEncodingValue)
// from arbitrary bytes, thawed by frozen::Thaw (src/frozen/thaw.hpp): the walk the Python
// binding's decode_message runs, with an output policy that reads every leaf through the checked
// readers instead of building Python objects. Only shoal::Error and std::out_of_range may come
// out; anything else, a crash, an ASan report or a hang (libFuzzer's -timeout: the walk's work
// must stay bounded by the message's size, also for a forged DAG) is a bug.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "frozen/thaw.hpp"
#include "shoal/frozen.hpp"

namespace fz = shoal::frozen;
namespace layout = shoal::layout;

namespace {

// Obj counts the leaves under a thawed value, as a stand-in for the objects Python would build.
struct CountingOut {
  using Obj = uint64_t;
  Obj leaf(const fz::Image& im, uint64_t r) {
    const fz::Value v(&im, r);
    switch (v.type()) {
      case fz::Type::kStr: {
        const auto s = v.as_str();
        volatile char last = s.empty() ? 0 : s.back();  // touch the last byte
        (void)last;
        (void)v.str_flags();
        break;
      }
      case fz::Type::kBytes: {
        const auto b = v.as_bytes();
        volatile std::byte last = b.empty() ? std::byte{0} : b.back();
        (void)last;
        break;
      }
      case fz::Type::kBigInt: (void)v.bigint_bytes(); break;
      case fz::Type::kFloat: (void)v.as_float(); break;
      case fz::Type::kInt:
      case fz::Type::kBool: (void)v.as_int(); break;
      default: break;
    }
    return 1;
  }
  Obj again(const Obj& o) { return o; }
  Obj sequence(bool, uint64_t) { return 0; }
  void set_item(Obj& seq, uint64_t, Obj item) { seq += item; }
  Obj table(layout::Tag) { return 0; }
  void add_key(Obj& set, Obj key) { set += key; }
  void add_entry(Obj& dict, Obj key, Obj value) { dict += key + value; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size heap copy, so ASan flags any read past the message.
  std::vector<std::byte> buf(reinterpret_cast<const std::byte*>(data),
                             reinterpret_cast<const std::byte*>(data) + size);
  auto r = fz::Image::open(size ? buf.data() : nullptr, size);
  if (!r) return 0;
  try {
    CountingOut out;
    fz::Thaw<CountingOut> thaw(r.value(), out);
    (void)thaw.root();
  } catch (const shoal::Error&) {
  } catch (const std::out_of_range&) {
  }
  return 0;
}
