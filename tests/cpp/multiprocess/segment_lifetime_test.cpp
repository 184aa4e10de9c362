// Segments across real processes: fork, re-exec (a fresh process, as spawn), SIGKILL.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "layout/hold_ring_layout.hpp"
#include "platform/platform.hpp"
#include "session/client.hpp"
#include "session/wire.hpp"
#include "shoal/segment.hpp"
#include "shoal/session.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

using std::chrono::seconds;
using test::ChildProcess;
using test::HandlePipe;
using test::describe;
using test::check;
using test::fill;


// How many connections hold the object, from the broker's own count.
int refs_of(const Id128& session, const Id128& object) {
  std::string j = describe(session);
  size_t at = j.find("\"id\":\"" + object.hex() + "\"");
  if (at == std::string::npos) return 0;
  size_t r = j.find("\"refs\":", at);
  return std::atoi(j.c_str() + r + 7);
}

// A number the broker reports at the top level of its kList JSON ("holds", "hold_misses").
long long broker_counter(const Id128& session, const std::string& key) {
  std::string j = describe(session);
  size_t at = j.find("\"" + key + "\":");
  return at == std::string::npos ? -1 : std::atoll(j.c_str() + at + key.size() + 3);
}
bool broker_has(const Id128& session, const Id128& object) {
  return describe(session).find("\"id\":\"" + object.hex() + "\"") != std::string::npos;
}

// A fresh process that first joins the session its parent exported (SHOAL_SESSION), so it
// is connected to the broker before it attaches: the case where a handle's hint is used.
SHOAL_CHILD_CASE(connect_then_attach) {
  Segment mine = Segment::create(64);
  try {
    Segment s = Segment::attach(arg);
    if (s.read_only()) return 3;
    return check(s, 7) ? 0 : 1;
  } catch (const StaleHandleError&) {
    return 10;
  } catch (const SessionGoneError&) {
    return 11;
  } catch (const DecodeError&) {
    return 12;
  }
}

// As connect_then_attach, in a process where pidfd_getfd(2) fails with EPERM (as under Yama's
// ptrace_scope >= 1): the hint is then used through /proc/<pid>/fd/<n>.
SHOAL_CHILD_CASE(connect_then_attach_without_pidfd_getfd) {
#ifdef SYS_pidfd_getfd
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_getfd, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    return 2;
  }
#endif
  Segment mine = Segment::create(64);
  Segment s = Segment::attach(arg);
  return check(s, 7) ? 0 : 1;
}

SHOAL_CHILD_CASE(connect_then_attach_read_only) {
  Segment mine = Segment::create(64);
  Segment s = Segment::attach(arg);
  return s.read_only() && check(s, 7) ? 0 : 1;
}

// try_attach_now never waits: nothing before this process is connected (attaching would be a
// round trip), the mapping once connected (the hint), the cached mapping after that, also for
// the handle without its hint (the parent checks the holds).
SHOAL_CHILD_CASE(try_attach_now_connects_nothing) {
  const Handle h = Handle::decode(arg).take();
  if (Segment::try_attach_now(h).has_value()) return 1;  // not connected: it would wait
  Segment mine = Segment::create(64);                      // connects (a round trip)
  std::optional<Segment> s = Segment::try_attach_now(h);
  if (!s.has_value() || !check(*s, 7)) return 2;
  std::optional<Segment> again = Segment::try_attach_now(h);  // the cached mapping
  if (!again.has_value() || again->data() != s->data()) return 3;
  const Handle bare = Handle::decode(arg.substr(0, kHandleTextSize)).take();
  std::optional<Segment> cached = Segment::try_attach_now(bare);
  return cached.has_value() && cached->data() == s->data() ? 0 : 4;
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

// ---- fast attach: a pinned handle's hint (docs/design/segment.md, "Fast attach") -------------

// A forked child's body: connect to the session's broker, attach the handle received (by its
// hint), say whether its data and the header copy the fast attach read check out, then wait to
// be killed.
int connect_attach_and_wait(HandlePipe& in, HandlePipe& out) {
  Segment mine = Segment::create(64);  // connects this process to the session's broker
  Segment s = Segment::attach(in.receive());
  const std::span<const std::byte> head = s.head_copy();
  const bool head_ok = head.size() == detail::Mapping::kHeadCopy - layout::kSegmentHeaderSize &&
                       std::memcmp(head.data(), s.data(), head.size()) == 0;
  out.send(!check(s, 7) ? "bad data" : head_ok ? "attached" : "no header copy");
  ::pause();
  return 0;
}

TEST(SegmentFastAttach, IsCountedSoTheObjectOutlivesItsCreatorsReleaseAndGoesWithTheAttacher) {
  test::ScopedRuntimeDir rd;
  Segment warm = Segment::create(4096);  // starts the session, exports SHOAL_SESSION
  const Id128 session = warm.session();
  HandlePipe to_child, to_parent;
  // Forked before the object exists, so the child has no inherited mapping of it.
  ChildProcess child([&] { return connect_attach_and_wait(to_child, to_parent); });
  Segment x = Segment::create(1 << 20);
  fill(x, 7);
  const Id128 id = x.id();
  Handle h = x.raw_handle();
  ASSERT_TRUE(h.has_hint());
  EXPECT_EQ(static_cast<pid_t>(h.hint_pid), test::broker_pid(rd.path(), session.hex()));
  const long long holds = broker_counter(session, "holds");
  to_child.send(h.encode());
  ASSERT_EQ(to_parent.receive(), "attached");
  // Released at once: the child's kHold may reach the broker after this kRelease, and the pin
  // keeps the object until it does.
  x.close();
  EXPECT_TRUE(test::wait_until([&] {
    return broker_counter(session, "holds") == holds + 1 && refs_of(session, id) == 1;
  }));
  EXPECT_NE(describe(session).find("\"pins\":0"), std::string::npos) << "the pin was not used";
  EXPECT_EQ(broker_counter(session, "ring_holds"), 1) << "the hold did not come through the ring";
  child.kill(SIGKILL);
  EXPECT_EQ(child.wait(), 128 + SIGKILL);
  EXPECT_TRUE(test::wait_until([&] { return !broker_has(session, id); }));
  EXPECT_EQ(broker_counter(session, "hold_misses"), 0);
}

// ---- the hold ring (src/layout/hold_ring_layout.hpp) ------------------------------------------

TEST(SegmentHoldRing, AnAttacherKilledBeforeTheBrokerReadItsRingStillUsesThePin) {
  // The child's hold sits in its ring, unread (nothing else is sent), when it is killed. The
  // broker reads the ring as the connection closes: the pin is used and the object freed with
  // the creator's release at once, not when the pin would have expired (SHOAL_PIN_TTL, 120 s).
  test::ScopedRuntimeDir rd;
  Segment warm = Segment::create(4096);
  const Id128 session = warm.session();
  HandlePipe to_child, to_parent;
  ChildProcess child([&] { return connect_attach_and_wait(to_child, to_parent); });
  Segment x = Segment::create(1 << 20);
  fill(x, 7);
  const Id128 id = x.id();
  to_child.send(x.handle());
  ASSERT_EQ(to_parent.receive(), "attached");
  child.kill(SIGKILL);  // before anything of ours asks the broker (kList would drain the ring)
  EXPECT_EQ(child.wait(), 128 + SIGKILL);
  x.close();
  EXPECT_TRUE(test::wait_until([&] { return !broker_has(session, id); }, seconds(10)));
  EXPECT_EQ(broker_counter(session, "ring_holds"), 1);
  EXPECT_EQ(broker_counter(session, "hold_misses"), 0);
  EXPECT_EQ(broker_counter(session, "pins_expired"), 0);
}

TEST(SegmentHoldRing, AFullRingFallsBackToKHoldAndEveryHoldCounts) {
  test::ScopedRuntimeDir rd;
  Segment warm = Segment::create(4096);
  const Id128 session = warm.session();
  const int n = static_cast<int>(layout::kHoldRingCapacity) + 40;
  HandlePipe to_child, to_parent;
  // Forked before the objects exist, so it maps none of them yet.
  ChildProcess child([&] {
    Segment mine = Segment::create(64);
    std::vector<std::string> handles;
    for (int i = 0; i < n; ++i) handles.push_back(to_child.receive());
    std::vector<Segment> held;
    // Attached back to back: the broker hears nothing else from us, so the ring fills up.
    for (const std::string& h : handles) held.push_back(Segment::attach(h));
    bool ok = true;
    for (const Segment& s : held) ok = ok && check(s, 7);
    to_parent.send(ok ? "attached" : "bad data");
    ::pause();
    return 0;
  });
  std::vector<Segment> objects;
  for (int i = 0; i < n; ++i) {
    objects.push_back(Segment::create(4096));
    fill(objects.back(), 7);
    to_child.send(objects.back().handle());
  }
  ASSERT_EQ(to_parent.receive(), "attached");
  // The ring is drained by our kList, but the child's kHold messages past the ring are on its
  // own connection: on a busy machine the broker may not have read them all yet.
  EXPECT_TRUE(test::wait_until([&] { return broker_counter(session, "holds") == n; }))
      << broker_counter(session, "holds") << " holds of " << n;
  const long long ring = broker_counter(session, "ring_holds");
  EXPECT_GE(ring, static_cast<long long>(layout::kHoldRingCapacity));
  EXPECT_LT(ring, n) << "no kHold was sent: the ring never filled";
  for (const Segment& s : objects) EXPECT_EQ(refs_of(session, s.id()), 2);
  EXPECT_NE(describe(session).find("\"pins\":0"), std::string::npos);
  child.kill(SIGKILL);
  child.wait();
  EXPECT_TRUE(test::wait_until([&] { return refs_of(session, objects.back().id()) == 1; }));
}

// A process that scribbles over its own ring's head: the broker must not trust it (R4).
SHOAL_CHILD_CASE(break_own_ring_then_create) {
  (void)arg;
  Segment mine = Segment::create(64);  // connects, with a ring
  FILE* maps = std::fopen("/proc/self/maps", "r");
  if (maps == nullptr) return 2;
  char line[512];
  unsigned long start = 0;
  while (std::fgets(line, sizeof line, maps) != nullptr) {
    if (std::strstr(line, "memfd:shoal-holds") != nullptr) start = std::strtoul(line, nullptr, 16);
  }
  std::fclose(maps);
  if (start == 0) return 3;
  auto* ring = reinterpret_cast<layout::HoldRingHeader*>(start);
  ring->head.store(1000000, std::memory_order_release);
  // The broker reads the ring before this kRegister and hangs up; the client then reconnects
  // (SHOAL_SESSION names the same, living broker) or reports the session gone.
  try {
    Segment more = Segment::create(64);
  } catch (const Error&) {
  }
  return 0;
}

TEST(SegmentHoldRing, ABrokenRingDisconnectsItsClientAndNobodyElse) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 16);
  fill(s, 7);
  ChildProcess child("break_own_ring_then_create", "");
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(broker_counter(s.session(), "ring_errors"), 1);
  EXPECT_TRUE(check(s, 7));
  Segment again = Segment::attach(s.handle());  // the broker still serves everyone else
  EXPECT_TRUE(check(again, 7));
  EXPECT_TRUE(test::wait_until([&] { return refs_of(s.session(), s.id()) == 1; }));
}

// After a child that attached `s` and exited: the broker counted `n` holds, all from the ring
// (no kHold, no kAttach), every pin was used, and only the parent holds `s` now.
void expect_ring_holds_only(const Segment& s, long long n) {
  EXPECT_TRUE(test::wait_until([&] { return broker_counter(s.session(), "holds") == n; }));
  EXPECT_EQ(broker_counter(s.session(), "ring_holds"), n);
  EXPECT_NE(describe(s.session()).find("\"pins\":0"), std::string::npos);
  EXPECT_TRUE(test::wait_until([&] { return refs_of(s.session(), s.id()) == 1; }));
}

TEST(SegmentFastAttach, AProcessNotYetConnectedConnectsThenUsesTheHint) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 16);
  fill(s, 7);
  // Its first attach connects (kHello, the one round trip), then maps by the hint: the hold
  // comes through the ring of the new connection, not as a kAttach.
  ChildProcess fresh("attach_and_check", s.handle());
  EXPECT_EQ(fresh.wait(), 0);
  expect_ring_holds_only(s, 1);
  // Without a hint the first attach is a connection plus kAttach, as before.
  ChildProcess bare("attach_and_check", s.handle().substr(0, kHandleTextSize));
  EXPECT_EQ(bare.wait(), 0);
  EXPECT_EQ(broker_counter(s.session(), "holds"), 1);
  EXPECT_TRUE(test::wait_until([&] { return refs_of(s.session(), s.id()) == 1; }));
}

TEST(SegmentFastAttach, TryAttachNowMapsWithoutARoundTripOrDeclines) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 16);
  fill(s, 7);
  ChildProcess child("try_attach_now_connects_nothing", s.handle());
  EXPECT_EQ(child.wait(), 0);
  // Three holds, none by a round trip: the hint's, then the cached mapping's twice (a handle
  // with a pin tells the broker each time; holders are a set, so the child held it once). The
  // pin is used, and the child's hold went with it.
  expect_ring_holds_only(s, 3);
}

TEST(SegmentFastAttach, AHandleWithoutItsHintStillAttachesAndUsesItsPin) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 16);
  fill(s, 7);
  std::string h = s.handle();
  ASSERT_EQ(h.size(), kHandleHintedTextSize);
  ChildProcess child("connect_then_attach", h.substr(0, kHandleTextSize));
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(broker_counter(s.session(), "holds"), 0);
  EXPECT_NE(describe(s.session()).find("\"pins\":0"), std::string::npos);
  // A handle made without a pin carries no hint.
  EXPECT_EQ(s.handle(false).size(), kHandleTextSize);
}

TEST(SegmentFastAttach, AConnectedProcessUsesTheHintAndASealedSegmentStaysReadOnly) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 16);
  fill(s, 7);
  ChildProcess rw("connect_then_attach", s.handle());
  EXPECT_EQ(rw.wait(), 0);
  EXPECT_EQ(broker_counter(s.session(), "holds"), 1);
  const std::string made_writable = s.handle();  // says writable: made before the seal
  s.seal();
  ChildProcess ro("connect_then_attach_read_only", s.handle());
  EXPECT_EQ(ro.wait(), 0);
  EXPECT_EQ(broker_counter(s.session(), "holds"), 2);
  // The fast path maps what the handle says, and falls back to read-only when the seal
  // refuses a writable mapping.
  ChildProcess old("connect_then_attach_read_only", made_writable);
  EXPECT_EQ(old.wait(), 0);
  EXPECT_EQ(broker_counter(s.session(), "holds"), 3);
  EXPECT_NE(describe(s.session()).find("\"pins\":0"), std::string::npos);
}

TEST(SegmentFastAttach, WithoutPidfdGetfdTheHintIsUsedThroughProc) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 16);
  fill(s, 7);
  ChildProcess child("connect_then_attach_without_pidfd_getfd", s.handle());
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(broker_counter(s.session(), "holds"), 1);
}

TEST(SegmentFastAttach, ForgedHintsFallBackToTheRoundTrip) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(1 << 16);
  fill(s, 7);
  Segment other = Segment::create(1 << 16);  // same size, another id
  fill(other, 9);
  const Handle other_h = other.raw_handle();
  ASSERT_TRUE(other_h.has_hint());
  struct Forgery {
    const char* what;
    void (*apply)(Handle*, const Handle& other);
  };
  const Forgery forgeries[] = {
      {"no such descriptor", [](Handle* h, const Handle&) { h->hint_fd = 100000; }},
      {"another object of the same size", [](Handle* h, const Handle& o) { h->hint_fd = o.hint_fd; }},
      {"the broker's /dev/null", [](Handle* h, const Handle&) { h->hint_fd = 0; }},
      {"another pid", [](Handle* h, const Handle&) { h->hint_pid = static_cast<uint32_t>(::getpid()); }},
      {"no such pid", [](Handle* h, const Handle&) { h->hint_pid = 0x7FFFFFFF; }},
  };
  for (const Forgery& f : forgeries) {
    Handle h = s.raw_handle();  // a pin of its own
    f.apply(&h, other_h);
    ChildProcess child("connect_then_attach", h.encode());
    EXPECT_EQ(child.wait(), 0) << f.what;
  }
  EXPECT_EQ(broker_counter(s.session(), "holds"), 0);
  // Every pin was used by the round trip (other's is still pending).
  EXPECT_TRUE(test::wait_until([&] { return refs_of(s.session(), s.id()) == 1; }));
  EXPECT_NE(describe(s.session()).find("\"pins\":0"), std::string::npos);
}

TEST(SegmentFastAttach, AReusedDescriptorNumberIsCaughtByTheObjectId) {
  test::ScopedRuntimeDir rd;
  Segment keep = Segment::create(4096);  // keeps the session
  Segment a = Segment::create(4096);
  fill(a, 7);
  const Handle ha = a.raw_handle();
  ASSERT_TRUE(ha.has_hint());
  // Use the pin (this process's own attach is a cache hit: it sends kHold), then free A.
  { Segment again = Segment::attach(ha.encode()); }
  a.close();
  Segment b = Segment::create(4096);  // the broker's lowest free descriptor: A's old one
  fill(b, 7);  // even the same bytes: only the header's object id tells them apart
  ASSERT_EQ(b.raw_handle().hint_fd, ha.hint_fd) << "the broker did not reuse the number";
  ChildProcess late("connect_then_attach", ha.encode());
  EXPECT_EQ(late.wait(), 10);  // StaleHandleError, as without a hint
  EXPECT_TRUE(test::wait_until([&] { return refs_of(b.session(), b.id()) == 1; }));
  EXPECT_EQ(broker_counter(b.session(), "holds"), 1);  // only our own cached attach's
}

TEST(SegmentFastAttach, TheBrokerIgnoresAHoldOfAnObjectItNoLongerHas) {
  test::ScopedRuntimeDir rd;
  Segment s = Segment::create(4096);
  // A raw connection, as a fast attacher whose object was freed before its kHold arrived.
  platform::UniqueFd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = wire::socket_path(rd.path(), s.session());
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  layout::WireMsg hello = wire::make_msg(layout::Op::kHello), rep{};
  int no_fd = -1;
  ASSERT_TRUE(wire::send_msg(sock.get(), hello));
  ASSERT_TRUE(wire::recv_msg(sock.get(), &rep, &no_fd, nullptr, 0, 5000));
  EXPECT_NE(rep.flags & layout::kHelloCanHold, 0u);
  layout::WireMsg hold = wire::make_msg(layout::Op::kHold);
  Id128 gone = Id128::random();
  hold.object_hi = gone.hi;
  hold.object_lo = gone.lo;
  hold.pin = 12345;
  ASSERT_TRUE(wire::send_msg(sock.get(), hold));
  ASSERT_TRUE(wire::send_msg(sock.get(), hello));  // no reply to kHold: this is the next
  ASSERT_TRUE(wire::recv_msg(sock.get(), &rep, &no_fd, nullptr, 0, 5000));
  EXPECT_EQ(rep.op, static_cast<uint16_t>(layout::Op::kHello));
  EXPECT_EQ(broker_counter(s.session(), "holds"), 1);
  EXPECT_EQ(broker_counter(s.session(), "hold_misses"), 1);
  EXPECT_NE(describe(s.session()).find("\"total_bytes\":4160"), std::string::npos);
}

}  // namespace
}  // namespace shoal
