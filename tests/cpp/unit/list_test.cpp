// shoal::List in one process: Python's list semantics (negative indices, insert's clamping,
// slices with a step and the size rule of extended slice assignment, pop, remove, reverse,
// permute), growth and shrinking with memory reused, the recursive lock, attach checks, and
// check() after every scenario (L1-L7 of src/layout/list_layout.hpp).
#include "shoal/list.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "layout/list_layout.hpp"
#include "shoal/dict.hpp"
#include "shoal/frozen.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

Item I(int64_t v) { return Item{v}; }
Item S(std::string v) { return Item{std::move(v)}; }

std::vector<Item> ints(std::initializer_list<int64_t> v) {
  std::vector<Item> out;
  for (int64_t x : v) out.push_back(I(x));
  return out;
}

void expect_items(const List& l, const std::vector<Item>& want) {
  const std::vector<Item> got = l.items();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], want[i]) << i << ": " << item_repr(got[i]) << " != " << item_repr(want[i]);
  }
  EXPECT_EQ(l.size(), want.size());
}

Slice sl(std::optional<int64_t> a, std::optional<int64_t> b, int64_t step = 1) {
  return Slice{a, b, step};
}

TEST(List, EmptyListHasNothing) {
  test::ScopedRuntimeDir rd;
  List l = List::create();
  EXPECT_EQ(l.size(), 0u);
  EXPECT_FALSE(l.get(0).has_value());
  EXPECT_FALSE(l.get(-1).has_value());
  EXPECT_FALSE(l.pop().has_value());
  EXPECT_FALSE(l.set(0, I(1)));
  EXPECT_FALSE(l.remove(I(1)));
  EXPECT_TRUE(l.items().empty());
  l.check();
}

TEST(List, EveryItemTypeRoundTrips) {
  test::ScopedRuntimeDir rd;
  List l = List::create();
  const std::vector<Item> vs = {I(1),
                                I(std::numeric_limits<int64_t>::min()),
                                I(std::numeric_limits<int64_t>::max()),
                                Item{2.5},
                                S("text"),
                                S(std::string(5000, 'z')),
                                Item{Bytes{std::string("\0\1\2", 3)}},
                                Item{Pickled{"pickle"}},
                                Item{std::monostate{}},
                                Item{true},
                                Item{false}};
  for (const Item& v : vs) l.append(v);
  expect_items(l, vs);
  EXPECT_EQ(*l.get(-1), Item{false});
  EXPECT_EQ(*l.get(-11), I(1));
  EXPECT_FALSE(l.get(11).has_value());
  EXPECT_FALSE(l.get(-12).has_value());
  EXPECT_EQ(l.check().node_blocks, 7u);  // two big ints, a float, two strs, bytes, a pickle
}

// The item encoding and decoding are every container's: their errors name the list, not the
// dict, when a list stores or reads the item.
TEST(List, ItemErrorsNameTheList) {
  test::ScopedRuntimeDir rd;
  List l = List::create();
  frozen::Builder b;
  const std::vector<std::byte> img = b.finish_bytes(b.integer(1));  // not a tuple or frozenset
  const Item not_a_key{FrozenKey{std::string(reinterpret_cast<const char*>(img.data()), img.size())}};
  try {
    l.append(not_a_key);
    ADD_FAILURE() << "a FrozenKey of an int was stored";
  } catch (const InvalidArgumentError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("list: a FrozenKey's image", 0), 0u) << e.what();
  }
  Dict d = Dict::create();
  try {
    d.set(I(1), not_a_key);
    ADD_FAILURE() << "a FrozenKey of an int was stored";
  } catch (const InvalidArgumentError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("dict: a FrozenKey's image", 0), 0u) << e.what();
  }
  EXPECT_EQ(l.size(), 0u);
  EXPECT_EQ(d.size(), 0u);
}

TEST(List, InsertSetPopRemoveAsPythonDoes) {
  test::ScopedRuntimeDir rd;
  List l = List::create();
  l.extend(ints({0, 1, 2, 3}));
  l.insert(0, I(-1));
  l.insert(-1, I(25));        // before the last
  l.insert(100, I(4));        // clamped: appended
  l.insert(-100, I(-2));      // clamped: first
  expect_items(l, ints({-2, -1, 0, 1, 2, 25, 3, 4}));
  EXPECT_TRUE(l.set(-3, S("x")));
  EXPECT_EQ(*l.pop(), I(4));
  EXPECT_EQ(*l.pop(0), I(-2));
  EXPECT_EQ(*l.pop(-2), S("x"));
  EXPECT_FALSE(l.pop(10).has_value());
  EXPECT_TRUE(l.remove(Item{1.0}));  // 1 == 1.0, as list.remove
  EXPECT_FALSE(l.remove(I(99)));
  expect_items(l, ints({-1, 0, 2, 3}));
  l.reverse();
  expect_items(l, ints({3, 2, 0, -1}));
  l.permute({3, 1, 2, 0});
  expect_items(l, ints({-1, 2, 0, 3}));
  EXPECT_THROW(l.permute({0, 0, 1, 2}), InvalidArgumentError);
  EXPECT_THROW(l.permute({0, 1}), InvalidArgumentError);
  l.check();
}

TEST(List, SlicesFollowPythonsRules) {
  test::ScopedRuntimeDir rd;
  List l = List::create();
  l.extend(ints({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  auto got = [&](const Slice& s) { return l.slice(s); };
  EXPECT_EQ(got(sl(2, 5)), ints({2, 3, 4}));
  EXPECT_EQ(got(sl(-3, std::nullopt)), ints({7, 8, 9}));
  EXPECT_EQ(got(sl(std::nullopt, std::nullopt, -1)), ints({9, 8, 7, 6, 5, 4, 3, 2, 1, 0}));
  EXPECT_EQ(got(sl(8, 1, -3)), ints({8, 5, 2}));
  EXPECT_EQ(got(sl(1, std::nullopt, 4)), ints({1, 5, 9}));
  EXPECT_EQ(got(sl(100, 200)), ints({}));
  EXPECT_EQ(got(sl(-100, 2)), ints({0, 1}));
  EXPECT_EQ(got(sl(5, 2)), ints({}));
  EXPECT_EQ(got(sl(std::nullopt, std::nullopt, std::numeric_limits<int64_t>::min())), ints({9}));
  EXPECT_THROW(got(sl(0, 1, 0)), InvalidArgumentError);

  l.set_slice(sl(2, 5), ints({20}));  // shrinks
  expect_items(l, ints({0, 1, 20, 5, 6, 7, 8, 9}));
  l.set_slice(sl(1, 1), ints({10, 11}));  // inserts
  expect_items(l, ints({0, 10, 11, 1, 20, 5, 6, 7, 8, 9}));
  l.set_slice(sl(5, 2), ints({-5}));  // stop before start: inserts at start
  expect_items(l, ints({0, 10, 11, 1, 20, -5, 5, 6, 7, 8, 9}));
  l.set_slice(sl(std::nullopt, std::nullopt, 2), ints({100, 101, 102, 103, 104, 105}));
  expect_items(l, ints({100, 10, 101, 1, 102, -5, 103, 6, 104, 8, 105}));
  EXPECT_THROW(l.set_slice(sl(std::nullopt, std::nullopt, 2), ints({1, 2})), InvalidArgumentError);
  EXPECT_THROW(l.set_slice(sl(std::nullopt, std::nullopt, -1), ints({1})), InvalidArgumentError);
  l.set_slice(sl(std::nullopt, std::nullopt, -5), ints({7, 8, 9}));
  expect_items(l, ints({9, 10, 101, 1, 102, 8, 103, 6, 104, 8, 7}));
  l.del_slice(sl(std::nullopt, std::nullopt, 3));
  expect_items(l, ints({10, 101, 102, 8, 6, 104, 7}));
  l.del_slice(sl(-2, std::nullopt));
  expect_items(l, ints({10, 101, 102, 8, 6}));
  l.del_slice(sl(3, 1));  // empty: nothing
  l.set_slice(sl(std::nullopt, std::nullopt), {});
  expect_items(l, {});
  l.check();
}

TEST(List, GrowsShrinksAndReusesTheHeap) {
  test::ScopedRuntimeDir rd;
  List l = List::create(List::Options{64 * 1024});
  for (int64_t i = 0; i < 5000; ++i) l.append(S("v" + std::to_string(i)));
  EXPECT_EQ(l.size(), 5000u);
  EXPECT_GE(l.stats().capacity, 5000u);
  EXPECT_EQ(*l.get(4321), S("v4321"));
  l.check();
  const uint64_t reserved = l.stats().heap_reserved_bytes;
  for (int round = 0; round < 5; ++round) {
    while (l.size() > 10) l.pop();
    EXPECT_LT(l.stats().capacity, 100u) << "shrinks when much smaller than its array";
    for (int64_t i = 0; i < 4990; ++i) l.append(S("w" + std::to_string(i)));
  }
  EXPECT_LE(l.stats().heap_reserved_bytes, reserved * 2) << "freed space is reused";
  l.clear();
  EXPECT_EQ(l.size(), 0u);
  EXPECT_EQ(l.check().heap.used_blocks, 2u);
}

TEST(List, ValuesLargerThanTheRootSegmentAddExtents) {
  test::ScopedRuntimeDir rd;
  List l = List::create(List::Options{64 * 1024});
  l.extend(ints({1, 2, 3}));
  std::vector<Item> big = {S("a"), Item{Bytes{std::string(1, 'x')}}};
  big.push_back(S(std::string(size_t{1} << 20, 'y')));
  l.extend(big);
  EXPECT_EQ(l.size(), 6u);
  EXPECT_EQ(*l.get(-1), S(std::string(size_t{1} << 20, 'y')));
  l.del_slice(sl(3, std::nullopt));
  expect_items(l, ints({1, 2, 3}));
  l.check();
}

TEST(List, LockIsRecursiveAndAttachChecksTheKind) {
  test::ScopedRuntimeDir rd;
  List l = List::create();
  EXPECT_EQ(l.lock(), SyncStatus::kOk);
  EXPECT_EQ(l.lock(), SyncStatus::kOk);
  EXPECT_EQ(l.lock_depth(), 2u);
  l.append(I(1));  // takes it again
  l.unlock();
  l.unlock();
  EXPECT_EQ(l.lock_depth(), 0u);
  EXPECT_THROW(l.unlock(), InvalidArgumentError);
  List same = List::attach(l.handle());
  EXPECT_EQ(*same.get(0), I(1));
  Dict d = Dict::create();
  EXPECT_THROW(List::attach(d.handle()), IncompatibleSegmentError);
  EXPECT_THROW(Dict::attach(l.handle()), IncompatibleSegmentError);
}

// A list made by a version-1 build (no reference or tuple elements, one gen bump per write) is
// refused when attached, with a message that says what to do, not misread by this build; so is
// one of a later version.
TEST(List, AnotherLayoutVersionIsRefusedWithWhatToDo) {
  static_assert(layout::kListVersion == 2, "a new version: extend this test to the older ones");
  test::ScopedRuntimeDir rd;
  List l = List::create();
  l.append(I(7));
  auto* h = reinterpret_cast<layout::ListHeader*>(
      l.heap().at(l.heap().root().load(), sizeof(layout::ListHeader)));
  for (uint32_t v : {1u, layout::kListVersion + 1}) {
    h->version = v;
    try {
      (void)List::attach(l.handle());
      ADD_FAILURE() << "a version-" << v << " list was attached";
    } catch (const IncompatibleSegmentError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("list: layout version " + std::to_string(v) + ", this build reads 2"),
                std::string::npos)
          << what;
      EXPECT_NE(what.find("must run the same shoal version"), std::string::npos) << what;
      EXPECT_NE(what.find("create a new list"), std::string::npos) << what;
    }
  }
  h->version = layout::kListVersion;
  EXPECT_EQ(*List::attach(l.handle()).get(0), I(7));
}

TEST(List, CursorWalksByIndex) {
  test::ScopedRuntimeDir rd;
  List l = List::create();
  l.extend(ints({1, 2, 3}));
  List::Cursor c = l.cursor();
  Item v;
  ASSERT_TRUE(c.next(&v));
  EXPECT_EQ(v, I(1));
  l.append(I(4));  // seen: the walk is by index
  std::vector<Item> rest;
  while (c.next(&v)) rest.push_back(v);
  EXPECT_EQ(rest, ints({2, 3, 4}));
  l.append(I(5));
  EXPECT_FALSE(c.next(&v)) << "a cursor that ended stays ended";
}

// A random walk against a std::vector model (the Python tests compare slices with list's own).
TEST(List, RandomOperationsMatchAModel) {
  test::ScopedRuntimeDir rd;
  List l = List::create(List::Options{64 * 1024});
  std::vector<Item> m;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 3000; ++i) {
    const uint64_t op = rng() % 8;
    const Item v = rng() % 2 ? I(static_cast<int64_t>(rng() % 100)) : S(std::string(rng() % 50, 'a'));
    const int64_t n = static_cast<int64_t>(m.size());
    const int64_t at = n == 0 ? 0 : static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
    switch (op) {
      case 0:
      case 1: l.append(v); m.push_back(v); break;
      case 2: l.insert(at, v); m.insert(m.begin() + at, v); break;
      case 3:
        if (n > 0) {
          EXPECT_TRUE(l.set(at, v));
          m[static_cast<size_t>(at)] = v;
        }
        break;
      case 4:
        if (n > 0) {
          EXPECT_EQ(*l.pop(at), m[static_cast<size_t>(at)]);
          m.erase(m.begin() + at);
        }
        break;
      case 5: l.pop(); if (n > 0) m.pop_back(); break;
      case 6: l.extend({v, v}); m.push_back(v); m.push_back(v); break;
      default:
        if (n > 3) {
          l.del_slice(sl(at / 2, at));
          m.erase(m.begin() + at / 2, m.begin() + at);
        }
    }
  }
  expect_items(l, m);
  l.check();
}

}  // namespace
}  // namespace shoal
