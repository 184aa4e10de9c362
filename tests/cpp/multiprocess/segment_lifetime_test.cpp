// Segments across real processes: fork, re-exec (a fresh process, as spawn), SIGKILL.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "client.hpp"
#include "shoal/segment.hpp"
#include "shoal/session.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

using std::chrono::seconds;
using test::ChildProcess;
using test::HandlePipe;

void fill(Segment& s, uint8_t seed) {
  auto* p = reinterpret_cast<uint8_t*>(s.data());
  for (uint64_t i = 0; i < s.size(); ++i) p[i] = static_cast<uint8_t>(i * 31 + seed);
}
bool check(const Segment& s, uint8_t seed) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  for (uint64_t i = 0; i < s.size(); ++i) {
    if (p[i] != static_cast<uint8_t>(i * 31 + seed)) return false;
  }
  return true;
}

// The broker's description of a session (JSON text).
std::string describe(const Id128& session) {
  auto r = detail::Client::instance().describe(session);
  return r ? r.value() : "";
}
// How many connections hold the object, from the broker's own count.
int refs_of(const Id128& session, const Id128& object) {
  std::string j = describe(session);
  size_t at = j.find("\"id\":\"" + object.hex() + "\"");
  if (at == std::string::npos) return 0;
  size_t r = j.find("\"refs\":", at);
  return std::atoi(j.c_str() + r + 7);
}

SHOAL_CHILD_CASE(attach_and_check) {
  Segment s = Segment::attach(arg);
  return check(s, 7) ? 0 : 1;
}

SHOAL_CHILD_CASE(attach_expect_error) {
  try {
    Segment::attach(arg);
  } catch (const StaleHandleError&) {
    return 10;
  } catch (const SessionGoneError&) {
    return 11;
  } catch (const DecodeError&) {
    return 12;
  }
  return 0;
}

TEST(SegmentLifetime, AFreshProcessAttachesByHandleAndReadsTheData) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 20);
  fill(s, 7);
  ChildProcess child("attach_and_check", s.handle());
  EXPECT_EQ(child.wait(), 0);
}

TEST(SegmentLifetime, CreatorKilledWhileReadersMapItReadersKeepReading) {
  test::ScopedRuntimeDir rd;
  HandlePipe pipe;
  ChildProcess creator([&] {
    Segment s = Segment::create(4 << 20);
    fill(s, 7);
    pipe.send(s.handle());
    ::pause();
    return 0;
  });
  std::string h = pipe.receive();
  ASSERT_FALSE(h.empty());
  Segment mine = Segment::attach(h);
  ChildProcess other("attach_and_check", mine.handle());
  creator.kill(SIGKILL);
  EXPECT_EQ(creator.wait(), 128 + SIGKILL);
  EXPECT_TRUE(check(mine, 7));
  EXPECT_EQ(other.wait(), 0);
  // The creator's reference went with it: only this process holds the object now.
  EXPECT_TRUE(test::wait_until([&] { return refs_of(mine.session(), mine.id()) == 1; }));
}

TEST(SegmentLifetime, AKilledHoldersReferencesAreDropped) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 16);
  fill(s, 7);
  HandlePipe ready;
  std::string h = s.handle();
  ChildProcess holder([&] {
    // A forked child: it inherits the mapping, re-registers it, then attaches nothing new.
    after_fork_child();
    ready.send("ok");
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.receive(), "ok");
  EXPECT_TRUE(test::wait_until([&] { return refs_of(s.session(), s.id()) == 2; }));
  holder.kill(SIGKILL);
  holder.wait();
  EXPECT_TRUE(test::wait_until([&] { return refs_of(s.session(), s.id()) == 1; }));
  ChildProcess reader("attach_and_check", h);  // the pin from handle() is still valid
  EXPECT_EQ(reader.wait(), 0);
}

TEST(SegmentLifetime, APinnedHandleOutlivesItsCreator) {
  test::ScopedRuntimeDir rd;
  HandlePipe pipe;
  ChildProcess creator([&] {
    Segment s = Segment::create(1 << 20);
    fill(s, 7);
    pipe.send(s.handle());  // pinned
    return 0;               // exits at once, releasing its reference
  });
  std::string h = pipe.receive();
  EXPECT_EQ(creator.wait(), 0);
  ChildProcess reader("attach_and_check", h);
  EXPECT_EQ(reader.wait(), 0);
  // The pin was used: a second attach with the same handle finds nothing.
  ChildProcess late("attach_expect_error", h);
  EXPECT_EQ(late.wait(), 10);
}

TEST(SegmentLifetime, AnUnpinnedHandleOfAReleasedObjectIsStale) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(4096);
  std::string h = s.handle(false);
  Segment keep_session_alive = Segment::create(4096);
  s.close();
  ChildProcess late("attach_expect_error", h);
  EXPECT_EQ(late.wait(), 10);
}

TEST(SegmentLifetime, AnExpiredPinFreesTheObject) {
  test::ScopedRuntimeDir rd;
  ::setenv("SHOAL_PIN_TTL", "1", 1);
  Segment keep = Segment::create(4096);
  Segment s = Segment::create(4096);
  std::string h = s.handle();
  Id128 session = s.session(), id = s.id();
  s.close();
  ::unsetenv("SHOAL_PIN_TTL");
  EXPECT_NE(describe(session).find(id.hex()), std::string::npos);
  EXPECT_TRUE(test::wait_until(
      [&] { return describe(session).find(id.hex()) == std::string::npos; }, seconds(30)));
  ChildProcess late("attach_expect_error", h);
  EXPECT_EQ(late.wait(), 10);
}

TEST(SegmentLifetime, BrokerKilledMappingsKeepWorkingNewAttachesFailCleanly) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 20);
  fill(s, 7);
  std::string h = s.handle();
  pid_t broker = test::broker_pid(rd.path(), s.session().hex());
  ASSERT_GT(broker, 0);
  ASSERT_EQ(::kill(broker, SIGKILL), 0);
  EXPECT_TRUE(test::wait_until([&] { return ::kill(broker, 0) != 0; }));
  EXPECT_TRUE(check(s, 7));
  ChildProcess fresh("attach_expect_error", h);
  EXPECT_EQ(fresh.wait(), 11);  // SessionGoneError: the socket is there, nobody serves it
  // The very next create goes to a new session (this process learns of the death only now),
  // and starting that session gc's the dead one's files; its handles are then simply stale.
  Segment t = Segment::create(4096);
  EXPECT_NE(t.session(), s.session());
  EXPECT_THROW(s.handle(), SessionGoneError);
  ChildProcess after_gc("attach_expect_error", h);
  EXPECT_EQ(after_gc.wait(), 10);
  for (const auto& e : rd.entries()) EXPECT_EQ(e.find(s.session().hex()), std::string::npos) << e;
}

TEST(SegmentLifetime, EverythingIsGoneWhenTheLastProcessLeaves) {
  test::ScopedRuntimeDir rd;
  HandlePipe pipe;
  ChildProcess creator([&] {
    Segment s = Segment::create(1 << 20);
    pipe.send(s.session().hex());
    return 0;
  });
  std::string sid = pipe.receive();
  EXPECT_EQ(creator.wait(), 0);
  // The broker exits by itself and removes its socket and lock.
  EXPECT_TRUE(test::wait_until([&] { return rd.entries().empty(); }, seconds(60)));
}

TEST(SegmentLifetime, SealedSegmentsAreReadOnlyForLateAttachers) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(4096);
  fill(s, 7);
  s.seal();
  EXPECT_TRUE(s.read_only());
  // A re-executed child maps it fresh, read-only (a forked one would reuse the inherited map).
  ChildProcess fresh("attach_and_check", s.handle());
  EXPECT_EQ(fresh.wait(), 0);
  EXPECT_TRUE(Handle::decode(s.handle(false)).value().flags & kHandleReadOnly);
}

TEST(SegmentLifetime, ListingThousandsOfObjectsKeepsTheConnectionHealthy) {
  test::ScopedRuntimeDir rd;
  std::vector<Segment> many;
  for (int i = 0; i < 3000; ++i) many.push_back(Segment::create(64));
  std::string j = describe(many[0].session());
  EXPECT_GT(j.size(), 3000u * 100) << "a multi-page kList reply was cut short";
  EXPECT_NE(j.find(many.back().id().hex()), std::string::npos);
  EXPECT_NO_THROW(many[0].handle());  // the connection (our references) survived the listing
}

TEST(SegmentLifetime, ListingASessionDoesNotKeepItsBrokerAlive) {
  test::ScopedRuntimeDir rd;
  HandlePipe to_parent, to_child;
  ChildProcess owner([&] {
    Segment s = Segment::create(4096);
    to_parent.send(s.session().hex());
    return to_child.receive(std::chrono::seconds(60)) == "go" ? 0 : 1;
  });
  ASSERT_FALSE(to_parent.receive().empty());
  auto sessions = list_sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_TRUE(sessions[0].alive);
  EXPECT_NE(sessions[0].describe_json.find("\"objects\":[{"), std::string::npos);
  to_child.send("go");
  EXPECT_EQ(owner.wait(), 0);
  EXPECT_TRUE(test::wait_until([&] { return rd.entries().empty(); }, seconds(60)));
}

TEST(SegmentLifetime, TheBrokerStartsWhenTheCallerClosedItsStandardStreams) {
  test::ScopedRuntimeDir rd;
  ChildProcess child([&] {
    ::close(0);
    ::close(1);
    ::close(2);
    Segment s = Segment::create(4096);
    Segment again = Segment::attach(s.handle());
    return again.size() == 4096 ? 0 : 1;
  });
  EXPECT_EQ(child.wait(), 0);
}

TEST(SegmentLifetime, AnAlteredHandleOfAMappedObjectIsRefused) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(4096);
  Handle h = s.raw_handle(false);
  h.size = 8192;  // re-encoded with a valid checksum: only the size check can catch it
  EXPECT_THROW(Segment::attach(h.encode()), StaleHandleError);
}

TEST(SegmentLifetime, MalformedHandlesRaiseDecodeError) {
  test::ScopedRuntimeDir rd;
  EXPECT_THROW(Segment::attach("shoal1:nonsense"), DecodeError);
  EXPECT_THROW(Segment::attach(std::string(200, 'x')), DecodeError);
  Handle forged;
  forged.session = Id128::random();
  forged.object = Id128::random();
  EXPECT_THROW(Segment::attach(forged.encode()), StaleHandleError);
}

}  // namespace
}  // namespace shoal
