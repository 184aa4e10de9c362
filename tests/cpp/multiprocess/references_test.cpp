// References between objects (Segment::add_reference / drop_reference), across real processes:
// an object keeps what it refers to alive, a group goes with its last outside reference
// (SIGKILL included), cycles are collected. The broker's kList JSON is the witness; durations
// are never asserted (test::wait_until polls with a generous deadline).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "session/client.hpp"
#include "shoal/segment.hpp"
#include "shoal/session.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

using std::chrono::seconds;
using test::ChildProcess;
using test::HandlePipe;
using test::describe;


// Where the object's own entry starts in the JSON (refs_out entries name ids too, followed by
// "count" instead of "kind"), or npos once the broker has freed it.
size_t entry_of(const std::string& j, const Id128& object) {
  return j.find("{\"id\":\"" + object.hex() + "\",\"kind\"");
}
bool broker_has(const Id128& session, const Id128& object) {
  return entry_of(describe(session), object) != std::string::npos;
}
// A number of the object's entry ("referrers", "refs"); -1 if the object is gone.
long long field_of(const Id128& session, const Id128& object, const std::string& key) {
  const std::string j = describe(session);
  const size_t at = entry_of(j, object);
  if (at == std::string::npos) return -1;
  const size_t k = j.find("\"" + key + "\":", at);
  return k == std::string::npos ? -1 : std::atoll(j.c_str() + k + key.size() + 3);
}
long long counter(const Id128& session, const std::string& key) {
  const std::string j = describe(session);
  const size_t at = j.find("\"" + key + "\":");
  return at == std::string::npos ? -1 : std::atoll(j.c_str() + at + key.size() + 3);
}
// How many objects the broker lists.
size_t objects_in(const Id128& session) {
  const std::string j = describe(session);
  size_t n = 0;
  for (size_t at = j.find(",\"kind\":"); at != std::string::npos; at = j.find(",\"kind\":", at + 1)) {
    ++n;
  }
  return n;
}

SHOAL_CHILD_CASE(attach_referenced) {
  try {
    Segment s = Segment::attach(arg);
    return s.data()[0] == std::byte{42} ? 0 : 1;
  } catch (const StaleHandleError&) {
    return 10;
  }
}

TEST(References, AReferencedObjectOutlivesItsHoldersAndGoesWithItsReferrer) {
  test::ScopedRuntimeDir rd;
  Segment keep = Segment::create(64);  // keeps the session (and its broker) up throughout
  Segment a = Segment::create(4096);
  Segment b = Segment::create(4096);
  b.data()[0] = std::byte{42};
  const Id128 session = a.session(), aid = a.id(), bid = b.id();
  a.add_reference(b);
  const std::string j = describe(session);
  EXPECT_NE(j.find("\"refs_out\":[{\"id\":\"" + bid.hex() + "\",\"count\":1}]"), std::string::npos)
      << j;
  EXPECT_EQ(field_of(session, bid, "referrers"), 1);
  EXPECT_EQ(field_of(session, aid, "referrers"), 0);
  EXPECT_EQ(counter(session, "edges"), 1);

  const std::string hb = b.handle(false);  // unpinned: only the reference keeps b now
  b.close();
  EXPECT_TRUE(broker_has(session, bid));
  EXPECT_EQ(field_of(session, bid, "refs"), 0);  // no process holds it
  ChildProcess reader("attach_referenced", hb);
  EXPECT_EQ(reader.wait(), 0);
  EXPECT_TRUE(broker_has(session, bid));  // the reader's exit took its hold, not the object

  a.close();  // the last outside reference of the group {a, b}
  EXPECT_TRUE(test::wait_until(
      [&] { return !broker_has(session, aid) && !broker_has(session, bid); }));
  EXPECT_EQ(counter(session, "edges"), 0);
  EXPECT_EQ(counter(session, "total_bytes"), 64 + 64);  // keep's data and header only
  ChildProcess late("attach_referenced", hb);
  EXPECT_EQ(late.wait(), 10);
}

TEST(References, AChainOfTenThousandObjectsIsFreedInOneGo) {
  test::ScopedRuntimeDir rd;
  Segment keep = Segment::create(64);
  constexpr int kChain = 10000;
  Segment head = Segment::create(64);
  const Id128 session = head.session();
  Segment prev = head;
  for (int i = 1; i < kChain; ++i) {
    Segment next = Segment::create(64);
    prev.add_reference(next);
    prev = next;  // the previous link is now held only by its referrer (the head by us)
  }
  prev.close();
  EXPECT_EQ(objects_in(session), static_cast<size_t>(kChain) + 1);
  EXPECT_EQ(counter(session, "edges"), kChain - 1);
  head.close();  // one release: the broker walks the chain without recursion
  EXPECT_TRUE(test::wait_until([&] { return objects_in(session) == 1; }, seconds(60)));
  EXPECT_EQ(counter(session, "edges"), 0);
  EXPECT_EQ(counter(session, "total_bytes"), 64 + 64);
  EXPECT_EQ(counter(session, "collected"), 0);  // counting did it, not the sweep
  EXPECT_NO_THROW(keep.handle());               // the broker is alive and well
}

TEST(References, ACycleHeldByAKilledChildIsFreed) {
  test::ScopedRuntimeDir rd;
  Segment keep = Segment::create(64);
  const Id128 session = keep.session();
  HandlePipe pipe;
  ChildProcess child([&] {
    // Forked: it drops our connection and makes its own to the same session.
    Segment a = Segment::create(1 << 20);
    Segment b = Segment::create(1 << 20);
    Segment self = Segment::create(4096);
    a.add_reference(b);
    b.add_reference(a);
    self.add_reference(self);  // a cycle of one
    pipe.send(a.id().hex() + b.id().hex() + self.id().hex());
    ::pause();
    return 0;
  });
  const std::string ids = pipe.receive();
  ASSERT_EQ(ids.size(), 96u);
  const Id128 a = Id128::from_hex(ids.substr(0, 32)).value();
  const Id128 b = Id128::from_hex(ids.substr(32, 32)).value();
  const Id128 self = Id128::from_hex(ids.substr(64)).value();
  EXPECT_EQ(field_of(session, a, "referrers"), 1);
  EXPECT_EQ(field_of(session, b, "referrers"), 1);
  EXPECT_EQ(field_of(session, self, "referrers"), 1);
  child.kill(SIGKILL);
  EXPECT_EQ(child.wait(), 128 + SIGKILL);
  EXPECT_TRUE(test::wait_until([&] {
    return !broker_has(session, a) && !broker_has(session, b) && !broker_has(session, self);
  }));
  EXPECT_EQ(counter(session, "collected"), 3);
  EXPECT_EQ(counter(session, "edges"), 0);
  EXPECT_EQ(counter(session, "total_bytes"), 64 + 64);
}

TEST(References, AnUnheldCycleInALiveProcessGoesAtCollect) {
  test::ScopedRuntimeDir rd;
  Segment keep = Segment::create(64);
  Segment a = Segment::create(4096);
  Segment b = Segment::create(4096);
  const Id128 session = a.session(), aid = a.id(), bid = b.id();
  a.add_reference(b);
  b.add_reference(a);
  a.close();
  b.close();
  // Counting cannot free a cycle; no process has exited since, so it is still there.
  EXPECT_TRUE(broker_has(session, aid));
  EXPECT_TRUE(broker_has(session, bid));
  EXPECT_EQ(collect_cycles(session), 2u);
  EXPECT_FALSE(broker_has(session, aid));
  EXPECT_FALSE(broker_has(session, bid));
  EXPECT_EQ(collect_cycles(session), 0u);
  EXPECT_TRUE(broker_has(session, keep.id()));  // held objects are roots
}

TEST(References, AnObjectOfOneProcessRefersToAnObjectOfAnother) {
  test::ScopedRuntimeDir rd;
  Segment a = Segment::create(4096);  // also exports SHOAL_SESSION: the child joins it
  const Id128 session = a.session();
  HandlePipe pipe;
  HandlePipe go;
  ChildProcess child([&] {
    Segment b = Segment::create(4096);
    b.data()[0] = std::byte{42};
    pipe.send(b.handle());
    (void)go.receive();  // the parent has made its reference
    return 0;            // exits: its hold on b goes
  });
  Segment b = Segment::attach(pipe.receive());
  ASSERT_EQ(b.session(), session);
  const Id128 bid = b.id();
  const std::string hb = b.handle(false);
  a.add_reference(b);
  b.close();
  go.send("go");
  EXPECT_EQ(child.wait(), 0);
  // No process holds b; a (ours) refers to it.
  EXPECT_TRUE(test::wait_until([&] { return field_of(session, bid, "refs") == 0; }));
  EXPECT_EQ(field_of(session, bid, "referrers"), 1);
  Segment again = Segment::attach(hb);
  EXPECT_EQ(again.data()[0], std::byte{42});
  again.close();
  a.drop_reference(bid);  // b goes at once: nothing else keeps it
  EXPECT_TRUE(test::wait_until([&] { return !broker_has(session, bid); }));
  EXPECT_TRUE(broker_has(session, a.id()));
}

TEST(References, ReferencesAreCounted) {
  test::ScopedRuntimeDir rd;
  Segment a = Segment::create(4096);
  Segment b = Segment::create(4096);
  const Id128 session = a.session(), bid = b.id();
  a.add_reference(b);
  a.add_reference(b);
  EXPECT_NE(describe(session).find("{\"id\":\"" + bid.hex() + "\",\"count\":2}"),
            std::string::npos);
  EXPECT_EQ(field_of(session, bid, "referrers"), 1);  // one referrer, two counts
  b.close();
  a.drop_reference(bid);  // describe() below goes over the same connection: it is read after
  EXPECT_TRUE(broker_has(session, bid));
  a.drop_reference(Id128{1, 2});  // never added: nothing happens
  a.drop_reference(bid);
  EXPECT_TRUE(test::wait_until([&] { return !broker_has(session, bid); }));
  a.drop_reference(bid);  // more drops than adds: nothing happens
  EXPECT_TRUE(broker_has(session, a.id()));
  EXPECT_EQ(counter(session, "edges"), 0);
}

TEST(References, AFreedTargetOrAnUnheldSourceIsStale) {
  test::ScopedRuntimeDir rd;
  Segment keep = Segment::create(64);
  Segment gone = Segment::create(4096);
  HandlePipe go;
  HandlePipe ok;
  ChildProcess child([&] {
    // Forked without after_fork_child(): the child maps `gone` and `keep` but holds neither.
    (void)go.receive();  // the parent has released `gone`: the broker freed it
    Segment mine = Segment::create(64);
    int rc = 0;
    try {
      mine.add_reference(gone);
      rc = 1;
    } catch (const StaleHandleError& e) {
      if (std::string(e.what()).find("no longer exists") == std::string::npos) rc = 2;
    }
    try {
      keep.add_reference(mine);  // a source this process does not hold
      rc = rc != 0 ? rc : 3;
    } catch (const StaleHandleError& e) {
      if (std::string(e.what()).find("does not hold") == std::string::npos) rc = rc != 0 ? rc : 4;
    }
    ok.send("done");
    return rc;
  });
  gone.close();
  go.send("go");
  EXPECT_EQ(ok.receive(), "done");
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(counter(keep.session(), "edges"), 0);
}

TEST(References, ClosedSegmentsAreRefusedUpFront) {
  test::ScopedRuntimeDir rd;
  Segment a = Segment::create(64);
  Segment closed;
  EXPECT_THROW(a.add_reference(closed), InvalidArgumentError);
  EXPECT_THROW(closed.add_reference(a), InvalidArgumentError);
}

}  // namespace
}  // namespace shoal
