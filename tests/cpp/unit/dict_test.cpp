// shoal::Dict in one process: Python's dict semantics (insertion order, overwrite keeps the
// place, erase, clear, equal numbers as one key), growth and shrinking, the recursive lock,
// attach checks, and check() after every scenario (D1-D8 of src/layout/dict_layout.hpp).
#include "shoal/dict.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <optional>
#include <cstdlib>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "containers/dict_core.hpp"
#include "layout/dict_layout.hpp"
#include "shoal/frozen.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

Item I(int64_t v) { return Item{v}; }
Item S(std::string v) { return Item{std::move(v)}; }
Item B(std::string v) { return Item{Bytes{std::move(v)}}; }
Item F(double v) { return Item{v}; }

std::vector<Item> keys_of(const Dict& d) { return d.keys(); }

void expect_keys(const Dict& d, const std::vector<Item>& want) {
  const std::vector<Item> got = keys_of(d);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(items_equal(got[i], want[i]) && got[i].index() == want[i].index())
        << i << ": " << item_repr(got[i]) << " != " << item_repr(want[i]);
  }
}

TEST(Dict, EmptyDictHasNothing) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  EXPECT_EQ(d.size(), 0u);
  EXPECT_FALSE(d.get(I(1)).has_value());
  EXPECT_FALSE(d.contains(S("a")));
  EXPECT_FALSE(d.pop(I(1)).has_value());
  EXPECT_TRUE(d.items().empty());
  d.check();
}

TEST(Dict, SetGetEveryItemType) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  const std::vector<std::pair<Item, Item>> kv = {
      {I(1), S("one")},
      {I(-7), I(std::numeric_limits<int64_t>::min())},
      {I(std::numeric_limits<int64_t>::max()), F(2.5)},
      {F(3.25), B(std::string("\0\1\2", 3))},
      {S("k"), Item{std::monostate{}}},
      {S(""), Item{true}},
      {B("k"), Item{false}},
      {Item{std::monostate{}}, S(std::string(5000, 'x'))},
      {S("h\xc3\xa9llo"), B("")},
  };
  for (const auto& [k, v] : kv) EXPECT_TRUE(d.set(k, v)) << item_repr(k);
  EXPECT_EQ(d.size(), kv.size());
  for (const auto& [k, v] : kv) {
    const std::optional<Item> got = d.get(k);
    ASSERT_TRUE(got.has_value()) << item_repr(k);
    EXPECT_EQ(*got, v) << item_repr(k);
  }
  // str and bytes with the same contents are two keys.
  EXPECT_EQ(*d.get(S("k")), Item{std::monostate{}});
  EXPECT_EQ(*d.get(B("k")), Item{false});
  d.check();
}

TEST(Dict, PickledValuesAreTheirOwnKindNeverBytes) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  const std::string payload("\x80\x05K\x01.", 5);
  EXPECT_TRUE(d.set(S("p"), Item{Pickled{payload}}));
  EXPECT_TRUE(d.set(S("b"), B(payload)));
  // Each reads back as what was stored: the same bytes, two kinds.
  EXPECT_EQ(*d.get(S("p")), Item{Pickled{payload}});
  EXPECT_EQ(*d.get(S("b")), B(payload));
  EXPECT_FALSE(items_equal(*d.get(S("p")), *d.get(S("b"))));
  EXPECT_FALSE(d.set(S("b"), Item{Pickled{"x"}}));  // an overwrite changes the kind
  EXPECT_EQ(*d.get(S("b")), Item{Pickled{"x"}});
  const auto items = d.items();
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].second, Item{Pickled{payload}});
  EXPECT_EQ(*d.pop(S("p")), Item{Pickled{payload}});
  // A pickle is never a key: refused before anything is written.
  EXPECT_THROW(d.set(Item{Pickled{"x"}}, I(1)), InvalidArgumentError);
  EXPECT_THROW((void)d.get(Item{Pickled{"x"}}), InvalidArgumentError);
  EXPECT_EQ(d.size(), 1u);
  EXPECT_EQ(d.popitem()->second, Item{Pickled{"x"}});
  d.check();
}

TEST(Dict, EqualNumbersAreOneKeyAsInPython) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  EXPECT_TRUE(d.set(I(1), S("int")));
  EXPECT_FALSE(d.set(F(1.0), S("float")));  // d[1.0] = ... overwrites d[1]
  EXPECT_FALSE(d.set(Item{true}, S("bool")));
  EXPECT_EQ(d.size(), 1u);
  EXPECT_EQ(*d.get(I(1)), S("bool"));
  EXPECT_EQ(*d.get(F(1.0)), S("bool"));
  // The stored key keeps its first form, as dict does ({1: 'bool'}).
  expect_keys(d, {I(1)});
  EXPECT_TRUE(std::holds_alternative<int64_t>(d.keys()[0]));
  EXPECT_TRUE(d.set(F(0.5), S("half")));
  EXPECT_FALSE(d.get(I(0)).has_value());
  EXPECT_TRUE(d.set(F(-0.0), S("zero")));
  EXPECT_EQ(*d.get(I(0)), S("zero"));  // 0 == -0.0
  EXPECT_TRUE(d.set(F(std::ldexp(1.0, 62)), S("2**62")));
  EXPECT_EQ(*d.get(I(int64_t{1} << 62)), S("2**62"));  // 2**62 == 2.0**62 (a big int node)
  // Around the inline-int boundary (2**59): inline words and big-int nodes are one key space
  // (values a double holds exactly, so that the float is the same number).
  for (const int64_t v : {(int64_t{1} << 59) - 128, int64_t{1} << 59, -(int64_t{1} << 59),
                          -(int64_t{1} << 59) - 128}) {
    ASSERT_EQ(static_cast<int64_t>(static_cast<double>(v)), v);
    EXPECT_TRUE(d.set(I(v), I(v))) << v;
    EXPECT_EQ(d.get(F(static_cast<double>(v))), std::optional<Item>(I(v))) << v;
    EXPECT_FALSE(d.set(F(static_cast<double>(v)), I(-v))) << v;
    EXPECT_EQ(d.get(I(v)), std::optional<Item>(I(-v))) << v;
  }
  EXPECT_TRUE(d.erase(Item{false}));  // False == 0
  EXPECT_FALSE(d.contains(F(0.0)));
  EXPECT_TRUE(d.set(F(NAN), S("nan")));  // nan != nan: never found again
  EXPECT_FALSE(d.get(F(NAN)).has_value());
  d.check();
}

TEST(Dict, InsertionOrderOverwriteKeepsThePlaceEraseAndReinsertMovesToTheEnd) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  for (int64_t i = 0; i < 5; ++i) d.set(I(i), I(i * 10));
  d.set(I(2), S("two"));
  expect_keys(d, {I(0), I(1), I(2), I(3), I(4)});
  EXPECT_EQ(*d.get(I(2)), S("two"));
  EXPECT_EQ(*d.pop(I(1)), I(10));
  expect_keys(d, {I(0), I(2), I(3), I(4)});
  d.set(I(1), S("back"));
  expect_keys(d, {I(0), I(2), I(3), I(4), I(1)});
  const auto items = d.items();
  EXPECT_EQ(items.back().second, S("back"));
  d.check();
}

TEST(Dict, PopitemRemovesTheLastInsertedAsDictDoes) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  EXPECT_FALSE(d.popitem().has_value());
  for (int64_t i = 0; i < 4; ++i) d.set(I(i), I(i * 10));
  d.set(I(1), S("again"));  // an overwrite keeps 1's place
  d.erase(I(3));
  auto last = d.popitem();
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->first, I(2));
  EXPECT_EQ(last->second, I(20));
  last = d.popitem();
  EXPECT_EQ(last->first, I(1));
  EXPECT_EQ(last->second, S("again"));
  expect_keys(d, {I(0)});
  d.set(I(7), I(70));  // an insert after a popitem is the next one out
  EXPECT_EQ(d.popitem()->first, I(7));
  d.check();
  // A drain by popitem: last in, first out, the table shrinking under it.
  for (int64_t i = 1; i <= 20000; ++i) d.set(I(i), I(i));
  for (int64_t i = 20000; i >= 1; --i) ASSERT_EQ(d.popitem()->first, I(i));
  EXPECT_EQ(d.popitem()->first, I(0));
  EXPECT_FALSE(d.popitem().has_value());
  d.check();
}

TEST(Dict, GrowsAndShrinksKeepingOrderAndValues) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  constexpr int64_t kN = 20000;
  for (int64_t i = 0; i < kN; ++i) d.set(I(i * 7919 % 100003), S("v" + std::to_string(i)));
  EXPECT_EQ(d.size(), uint64_t{kN});
  const DictStats big = d.stats();
  EXPECT_GE(big.capacity, uint64_t{kN});
  EXPECT_GT(big.resizes, 5u);
  d.check();
  for (int64_t i = 0; i < kN; ++i) {
    ASSERT_EQ(*d.get(I(i * 7919 % 100003)), S("v" + std::to_string(i))) << i;
  }
  for (int64_t i = 0; i < kN - 10; ++i) ASSERT_TRUE(d.erase(I(i * 7919 % 100003)));
  EXPECT_EQ(d.size(), 10u);
  const DictStats small = d.stats();
  EXPECT_LT(small.capacity, 200u) << "the table shrinks when mostly empty";
  std::vector<Item> want;
  for (int64_t i = kN - 10; i < kN; ++i) want.push_back(I(i * 7919 % 100003));
  expect_keys(d, want);
  d.check();
}

TEST(Dict, ErasedEntriesAreCompactedAwayWithoutGrowing) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  for (int64_t i = 0; i < 1000; ++i) {
    d.set(I(i), I(i));
    d.erase(I(i));
  }
  EXPECT_EQ(d.size(), 0u);
  EXPECT_LE(d.stats().capacity, 5u);
  d.check();
}

TEST(Dict, ClearEmptiesAndFreesEveryNode) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  const uint64_t empty_live = d.heap().stats().live_bytes;
  for (int64_t i = 0; i < 3000; ++i) d.set(S("key" + std::to_string(i)), S(std::string(100, 'v')));
  EXPECT_GT(d.heap().stats().live_bytes, empty_live + 300000);
  d.clear();
  EXPECT_EQ(d.size(), 0u);
  EXPECT_TRUE(d.keys().empty());
  EXPECT_EQ(d.heap().stats().live_bytes, empty_live);
  d.set(I(1), I(2));
  expect_keys(d, {I(1)});
  d.check();
}

TEST(Dict, ADictThatCannotGrowRaisesOutOfSpaceAndStaysConsistent) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  // Set after the session's broker started, so only this process's per-request check sees it:
  // the heap is refused once the extent it asks for (a quarter of the heap) exceeds 8 MiB.
  ::setenv("SHOAL_MAX_BYTES", "8M", 1);
  const std::string big(1 << 20, 'b');
  int64_t stored = 0;
  bool refused = false;
  for (int64_t i = 0; i < 64 && !refused; ++i) {
    try {
      d.set(I(i), S(big));
      ++stored;
    } catch (const OutOfSpaceError&) {
      refused = true;
    }
  }
  ::unsetenv("SHOAL_MAX_BYTES");
  EXPECT_TRUE(refused);
  EXPECT_GT(stored, 4);
  EXPECT_EQ(d.size(), static_cast<uint64_t>(stored));
  d.check();  // nothing half done, no block leaked
  for (int64_t i = 0; i < stored; ++i) ASSERT_EQ(d.get(I(i)), std::optional<Item>(S(big))) << i;
  d.set(I(stored), S("small"));  // the limit lifted, it grows again
  d.check();
}

TEST(Dict, FreedValuesAreReused) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  for (int64_t i = 0; i < 100; ++i) d.set(I(i), S(std::string(1000, 'a')));
  const uint64_t reserved = d.heap().stats().reserved_bytes;
  for (int round = 0; round < 50; ++round) {
    for (int64_t i = 0; i < 100; ++i) d.set(I(i), S(std::string(1000 + round, 'b')));
  }
  EXPECT_EQ(d.heap().stats().reserved_bytes, reserved);
  d.check();
}

TEST(Dict, StrKeysHashAsInAFrozenDictSoAFrozenKeyIsFound) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  frozen::Builder b;
  const auto k1 = b.str("alpha");
  const auto k2 = b.integer(12);
  const auto k3 = b.bytes(std::as_bytes(std::span<const char>("raw", 3)));
  const auto v = b.none();
  const std::vector<uint64_t> keys = {k1, k2, k3}, values = {v, v, v};
  frozen::Frozen f = b.finish(b.dict(keys, values));
  const frozen::Value root = f.root();
  for (uint64_t i = 0; i < root.size(); ++i) {
    const frozen::Value k = root.key_at(i);
    Item key;
    switch (k.type()) {
      case frozen::Type::kStr: key = S(std::string(k.as_str())); break;
      case frozen::Type::kInt: key = I(k.as_int()); break;
      default: {
        auto s = k.as_bytes();
        key = B(std::string(reinterpret_cast<const char*>(s.data()), s.size()));
      }
    }
    d.set(key, I(static_cast<int64_t>(i)));
  }
  // The hashes the dict stored are the frozen table's, entry for entry (same insertion order).
  d.check();
  const auto* h = reinterpret_cast<const layout::DictHeader*>(
      d.heap().at(d.heap().root().load(), sizeof(layout::DictHeader)));
  const uint64_t table = h->table.load();
  const auto* t = reinterpret_cast<const layout::DictTable*>(d.heap().at(table, 64));
  const auto* entries = reinterpret_cast<const layout::DictEntry*>(
      d.heap().at(table, layout::dict_table_bytes(t->log2_slots)) +
      layout::dict_entries_offset(t->log2_slots));
  for (uint64_t i = 0; i < root.size(); ++i) EXPECT_EQ(entries[i].hash.load(), root.hash_at(i)) << i;
  EXPECT_EQ(*d.get(S("alpha")), I(0));
}

TEST(Dict, AttachSeesTheSameDictAndRefusesAPlainHeap) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  d.set(S("a"), I(1));
  Dict same = Dict::attach(d.handle());
  EXPECT_EQ(*same.get(S("a")), I(1));
  same.set(S("b"), I(2));
  EXPECT_EQ(*d.get(S("b")), I(2));
  // Another layout version is refused, not misread.
  auto* h = reinterpret_cast<layout::DictHeader*>(
      d.heap().at(d.heap().root().load(), sizeof(layout::DictHeader)));
  h->version = layout::kDictVersion + 1;
  EXPECT_THROW(Dict::attach(d.handle()), IncompatibleSegmentError);
  h->version = layout::kDictVersion;
  Heap plain = Heap::create();
  EXPECT_THROW(Dict::attach(plain.handle()), IncompatibleSegmentError);
  plain.root().store(plain.allocate(256));
  EXPECT_THROW(Dict::attach(plain.handle()), Error);
}

// A dict made by a version-1 build (no pop_hint, no reference or tuple items) is refused when
// attached, with a message that says what to do, not misread by this build.
TEST(Dict, AVersionOneHeaderIsRefusedWithWhatToDo) {
  static_assert(layout::kDictVersion == 2, "a new version: extend this test to the older ones");
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  d.set(S("a"), I(1));
  auto* h = reinterpret_cast<layout::DictHeader*>(
      d.heap().at(d.heap().root().load(), sizeof(layout::DictHeader)));
  h->version = 1;
  try {
    (void)Dict::attach(d.handle());
    ADD_FAILURE() << "a version-1 dict was attached";
  } catch (const IncompatibleSegmentError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("dict: layout version 1, this build reads 2"), std::string::npos) << what;
    EXPECT_NE(what.find("must run the same shoal version"), std::string::npos) << what;
    EXPECT_NE(what.find("create a new dict"), std::string::npos) << what;
  }
  h->version = layout::kDictVersion;
  EXPECT_EQ(*Dict::attach(d.handle()).get(S("a")), I(1));
}

TEST(Dict, TheLockIsRecursiveAndWritesTakeItRecursively) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  EXPECT_EQ(d.lock_depth(), 0u);
  EXPECT_EQ(d.lock(), SyncStatus::kOk);
  EXPECT_EQ(d.lock(), SyncStatus::kOk);
  EXPECT_EQ(d.lock_depth(), 2u);
  d.set(I(1), I(1));  // inside the caller's lock
  {
    Dict::Guard g(d);
    EXPECT_EQ(d.lock_depth(), 3u);
  }
  d.unlock();
  d.unlock();
  EXPECT_FALSE(d.held_by_this_thread());
  EXPECT_THROW(d.unlock(), InvalidArgumentError);
  // Another thread waits while this one holds it; reads do not.
  d.lock();
  std::atomic<int> state{0};
  std::thread t([&] {
    EXPECT_EQ(d.get(I(1)), std::optional<Item>(I(1)));
    EXPECT_EQ(d.try_lock(), SyncStatus::kTimeout);
    state = 1;
    d.set(I(2), I(2));  // blocks until the main thread unlocks
    state = 2;
  });
  ASSERT_TRUE(test::wait_until([&] { return state.load() == 1; }));
  EXPECT_EQ(state.load(), 1);
  d.unlock();
  t.join();
  EXPECT_EQ(state.load(), 2);
  d.check();
}

TEST(Dict, CursorYieldsEachKeyOnceWhileTheSameProcessResizes) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  for (int64_t i = 0; i < 100; ++i) d.set(I(i), I(i));
  Dict::Cursor c = d.cursor();
  Item k;
  std::map<int64_t, int> seen;
  int step = 0;
  while (c.next(&k, nullptr)) {
    ++seen[std::get<int64_t>(k)];
    if (++step == 10) {
      for (int64_t i = 0; i < 5; ++i) d.erase(I(i));       // already seen
      for (int64_t i = 100; i < 400; ++i) d.set(I(i), I(i));  // a resize; not seen (new)
    }
    if (step == 50) {
      for (int64_t i = 100; i < 400; ++i) d.erase(I(i));  // shrinks
    }
  }
  for (const auto& [key, n] : seen) EXPECT_EQ(n, 1) << key;
  EXPECT_EQ(seen.size(), 100u);  // 0..99: all present when the cursor was made, none twice
  d.check();
}

TEST(Dict, RandomOperationsMatchAStdMapModel) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create(Dict::Options{64 * 1024});
  std::mt19937_64 rng(2026);
  std::map<int64_t, std::string> model;
  std::vector<int64_t> order;  // insertion order of the model
  for (int op = 0; op < 20000; ++op) {
    const int64_t k = static_cast<int64_t>(rng() % 500);
    const int what = static_cast<int>(rng() % 10);
    if (what < 6) {
      const std::string v(rng() % 300, static_cast<char>('a' + rng() % 26));
      const bool fresh = d.set(I(k), S(v));
      EXPECT_EQ(fresh, model.count(k) == 0);
      if (fresh) order.push_back(k);
      model[k] = v;
    } else if (what < 9) {
      const std::optional<Item> got = d.pop(I(k));
      EXPECT_EQ(got.has_value(), model.count(k) == 1);
      if (got) {
        EXPECT_EQ(*got, S(model[k]));
        model.erase(k);
        order.erase(std::find(order.begin(), order.end(), k));
      }
    } else if (rng() % 50 == 0) {
      d.clear();
      model.clear();
      order.clear();
    } else {
      const auto last = d.popitem();
      ASSERT_EQ(last.has_value(), !order.empty());
      if (last) {
        EXPECT_EQ(last->first, I(order.back()));
        EXPECT_EQ(last->second, S(model[order.back()]));
        model.erase(order.back());
        order.pop_back();
      }
    }
    if (op % 2000 == 0) d.check();
  }
  std::vector<Item> want;
  for (int64_t k : order) want.push_back(I(k));
  expect_keys(d, want);
  for (const auto& [k, v] : model) EXPECT_EQ(*d.get(I(k)), S(v));
  d.check();
}


// ---- references to other objects, tuple/frozenset and big-int keys --------------------------

// True once the broker has freed the object a bare handle names (asked without attaching).
bool freed(const std::string& bare_handle) {
  return test::wait_until([&] { return test::objects_still_listed(bare_handle) == 0; });
}

TEST(DictRefs, AReferenceKeepsItsObjectAliveUntilTheLastEntryNamingItGoes) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  Segment t = Segment::create(4096);
  test::fill(t, 7);
  const std::string bare = t.handle(false);
  d.set(S("a"), Item{ObjectRef::to(t)});
  d.set(S("b"), Item{ObjectRef::to(t)});  // counted: two entries, two references
  t.close();                              // only the dict keeps it now
  {
    std::optional<Item> v = d.get(S("a"));
    ASSERT_TRUE(v && std::holds_alternative<ObjectRef>(*v));
    const ObjectRef& r = std::get<ObjectRef>(*v);
    ASSERT_TRUE(r.target.valid());
    EXPECT_TRUE(test::check(r.target, 7));
    EXPECT_EQ(r, std::get<ObjectRef>(*d.get(S("b"))));
  }
  EXPECT_EQ(d.check().node_blocks, 4u);
  // pop returns the object mapped: it outlives the entry in the popper's hands.
  std::optional<Item> popped = d.pop(S("a"));
  ASSERT_TRUE(popped && std::get<ObjectRef>(*popped).target.valid());
  EXPECT_TRUE(test::check(std::get<ObjectRef>(*popped).target, 7));
  popped.reset();
  EXPECT_EQ(test::objects_still_listed(bare), 1);  // "b" still holds it
  EXPECT_TRUE(test::check(std::get<ObjectRef>(*d.get(S("b"))).target, 7));
  d.set(S("b"), I(1));  // an overwrite drops the last reference
  EXPECT_TRUE(freed(bare));
  d.check();
}

TEST(DictRefs, ClearAndTheDictsOwnEndDropEveryReference) {
  test::ScopedRuntimeDir rd;
  std::string bare1, bare2;
  {
    Dict d = Dict::create();
    Segment t1 = Segment::create(4096), t2 = Segment::create(4096);
    bare1 = t1.handle(false);
    bare2 = t2.handle(false);
    for (int i = 0; i < 20; ++i) d.set(I(i), Item{ObjectRef::to(i % 2 ? t1 : t2)});
    t1.close();
    t2.close();
    d.clear();
    EXPECT_TRUE(freed(bare1) && freed(bare2));
    Segment t3 = Segment::create(4096);
    bare1 = t3.handle(false);
    d.set(S("x"), Item{ObjectRef::to(t3)});
    // A dict that holds itself: a cycle, allowed (the broker's cycle collection frees it).
    d.set(S("me"), Item{ObjectRef::to(d.heap().root_segment())});
    EXPECT_EQ(std::get<ObjectRef>(*d.get(S("me"))).object, d.heap().root_segment().id());
    d.erase(S("me"));
    d.check();
  }
  EXPECT_TRUE(freed(bare1));  // freed with the dict, whose references the broker drops
}

TEST(DictRefs, AReferenceIsNeverAKeyAndNeedsItsTarget) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  Segment t = Segment::create(4096);
  EXPECT_THROW(d.set(Item{ObjectRef::to(t)}, I(1)), InvalidArgumentError);
  ObjectRef unmapped = ObjectRef::to(t);
  unmapped.target = Segment();
  EXPECT_THROW(d.set(S("a"), Item{unmapped}), InvalidArgumentError);
  EXPECT_EQ(d.size(), 0u);
  EXPECT_EQ(d.check().heap.used_blocks, 2u);  // the refused node was freed
  // Read back through the Cursor, a reference is unmapped: attach_ref maps it.
  d.set(S("a"), Item{ObjectRef::to(t)});
  Dict::Cursor c = d.cursor();
  Item k, v;
  ASSERT_TRUE(c.next(&k, &v));
  EXPECT_FALSE(std::get<ObjectRef>(v).target.valid());
  EXPECT_EQ(d.attach_ref(std::get<ObjectRef>(v)).id(), t.id());
}

Item tuple_key(const std::function<uint64_t(frozen::Builder&)>& build) {
  frozen::Builder b;
  const uint64_t root = build(b);
  const std::vector<std::byte> bytes = b.finish_bytes(root);
  return Item{FrozenKey{std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())}};
}

TEST(DictRefs, TupleFrozensetAndBigIntKeysHashAndCompareAsInAFrozenDict) {
  test::ScopedRuntimeDir rd;
  Dict d = Dict::create();
  const Item t1 = tuple_key([](frozen::Builder& b) {
    const uint64_t items[] = {b.integer(1), b.str("a")};
    return b.tuple(items);
  });
  const Item t1f = tuple_key([](frozen::Builder& b) {  // (1.0, "a") == (1, "a")
    const uint64_t items[] = {b.floating(1.0), b.str("a")};
    return b.tuple(items);
  });
  const Item fs = tuple_key([](frozen::Builder& b) {
    const uint64_t items[] = {b.integer(2), b.integer(3)};
    return b.frozenset(items);
  });
  const Item fs2 = tuple_key([](frozen::Builder& b) {
    const uint64_t items[] = {b.integer(3), b.integer(2)};
    return b.frozenset(items);
  });
  EXPECT_TRUE(d.set(t1, S("tuple")));
  EXPECT_FALSE(d.set(t1f, S("tuple2")));  // an equal key: overwritten in place
  EXPECT_TRUE(d.set(fs, S("set")));
  EXPECT_EQ(*d.get(t1f), S("tuple2"));
  EXPECT_EQ(*d.get(fs2), S("set"));
  // An int beyond 64 bits: 2**70 as a key, equal to the float 2.0**70.
  std::string le(9, '\0');
  le[8] = 0x40;
  EXPECT_TRUE(d.set(Item{BigInt{le}}, S("big")));
  EXPECT_EQ(*d.get(Item{std::ldexp(1.0, 70)}), S("big"));
  EXPECT_EQ(std::get<BigInt>(d.keys().back()).le, le);
  // The stored hash is the frozen one: the same key is found in a FrozenDict built alike.
  frozen::Builder b;
  const uint64_t k[] = {b.tuple(std::vector<uint64_t>{b.integer(1), b.str("a")})};
  const uint64_t v[] = {b.str("v")};
  const std::vector<std::byte> img = b.finish_bytes(b.dict(k, v));
  Result<frozen::Image> im = frozen::Image::open(img.data(), img.size());
  ASSERT_TRUE(im);
  EXPECT_EQ(im.value().root().hash_at(0), containers::probe_of(t1, frozen::kDefaultHashSeed).hash);
  d.check();
  EXPECT_TRUE(d.erase(t1f) && d.erase(fs2));
  EXPECT_EQ(d.size(), 1u);
  d.check();
}

}  // namespace
}  // namespace shoal
