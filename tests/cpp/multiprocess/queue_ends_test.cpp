// tests/cpp/multiprocess/queue_ends_test.cpp — the queue's end table (Q8, docs/design/queue.md
// "Ends"): end of stream after a close, an exit, a SIGKILL; holds in transit; a holder that
// died between two steps of an update; the decoder on a scribbled table.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "channels/queue_core.hpp"
#include "layout/queue_layout.hpp"
#include "shoal/queue.hpp"
#include "shoal/session.hpp"
#include "sync/robust_mutex.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

layout::QueueHeader* header_of(const Queue& q) {
  return q.heap().as<layout::QueueHeader>(q.heap().root().load());
}

using test::ChildProcess;
using test::ScopedRuntimeDir;

TEST(QueueEnds, APlainQueueNeverReportsAClosedEnd) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  EXPECT_FALSE(q.end_closed(QueueEnd::kProducer));
  EXPECT_FALSE(q.end_closed(QueueEnd::kConsumer));
  std::string m;
  EXPECT_EQ(q.recv(m, Deadline::after(0.01)), QueueStatus::kEmpty);
  EXPECT_EQ(q.send("x"), QueueStatus::kOk);
}

TEST(QueueEnds, CloseOfTheLastProducerIsEndOfStreamAfterWhatIsLeft) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  q.open_end(QueueEnd::kConsumer);
  q.open_end(QueueEnd::kProducer);
  q.open_end(QueueEnd::kProducer);  // twice: one process, two holds
  EXPECT_EQ(q.holders(QueueEnd::kProducer), 1u);
  ASSERT_EQ(q.send("last"), QueueStatus::kOk);
  q.close_end(QueueEnd::kProducer);
  EXPECT_FALSE(q.end_closed(QueueEnd::kProducer));
  q.close_end(QueueEnd::kProducer);
  q.close_end(QueueEnd::kProducer);  // one too many: nothing
  EXPECT_TRUE(q.end_closed(QueueEnd::kProducer));
  std::string m;
  ASSERT_EQ(q.recv(m), QueueStatus::kOk);
  EXPECT_EQ(m, "last");
  EXPECT_EQ(q.recv(m), QueueStatus::kClosed);
  EXPECT_EQ(q.get(m, Deadline::after(0.01)), QueueStatus::kEmpty);  // get: no kClosed
  q.close_end(QueueEnd::kConsumer);
  q.open_end(QueueEnd::kProducer);
  EXPECT_EQ(q.send("nobody reads"), QueueStatus::kClosed);
  q.check();
}

TEST(QueueEnds, ABlockedRecvIsWokenByTheLastCloseInAnotherProcess) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  Queue ready = Queue::create({.ring_bytes = 4096});
  ChildProcess writer([&] {
    after_fork_child();
    q.open_end(QueueEnd::kProducer);
    if (ready.put("open") != QueueStatus::kOk) return 2;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    q.close_end(QueueEnd::kProducer);
    std::this_thread::sleep_for(std::chrono::seconds(60));  // alive: only the close ends it
    return 0;
  });
  std::string m;
  ASSERT_EQ(ready.get(m, Deadline::after(60.0)), QueueStatus::kOk);
  q.open_end(QueueEnd::kConsumer);
  EXPECT_EQ(q.recv(m, Deadline::after(60.0)), QueueStatus::kClosed);
  writer.kill(SIGKILL);
  writer.wait();
}

TEST(QueueEnds, AProducerThatExitsOrIsKilledEndsTheStream) {
  for (int sig : {0, SIGKILL}) {
    ScopedRuntimeDir dir;
    Queue q = Queue::create({.ring_bytes = 4096});
    Queue ready = Queue::create({.ring_bytes = 4096});
    ChildProcess writer([&] {
      after_fork_child();
      q.open_end(QueueEnd::kProducer);
      (void)q.send("from the child");
      (void)ready.put("open");
      if (sig != 0) std::this_thread::sleep_for(std::chrono::seconds(60));
      return 0;  // exits holding its end: the exit closes it
    });
    std::string m;
    ASSERT_EQ(ready.get(m, Deadline::after(60.0)), QueueStatus::kOk);
    q.open_end(QueueEnd::kConsumer);
    ASSERT_EQ(q.recv(m, Deadline::after(60.0)), QueueStatus::kOk);
    EXPECT_EQ(m, "from the child");
    if (sig != 0) {
      EXPECT_EQ(q.recv(m, Deadline::after(0.05)), QueueStatus::kEmpty);  // alive: no EOF
      writer.kill(sig);
    }
    EXPECT_EQ(q.recv(m, Deadline::after(60.0)), QueueStatus::kClosed) << sig;
    writer.wait();
    EXPECT_EQ(q.holders(QueueEnd::kProducer), 0u);
    q.check();
  }
}

TEST(QueueEnds, AHoldInTransitKeepsTheEndOpenUntilClaimed) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  q.open_end(QueueEnd::kConsumer);
  q.open_end(QueueEnd::kProducer);
  const uint64_t token = q.lend_end(QueueEnd::kProducer);
  ASSERT_NE(token, 0u);
  EXPECT_EQ(q.lent_holds(QueueEnd::kProducer), 1u);
  q.close_end(QueueEnd::kProducer);  // the sender closes its copy before the receiver claims
  EXPECT_FALSE(q.end_closed(QueueEnd::kProducer));
  ChildProcess receiver([&] {
    after_fork_child();
    q.claim_lent(QueueEnd::kProducer, token);
    if (q.send("claimed") != QueueStatus::kOk) return 2;
    q.claim_lent(QueueEnd::kProducer, token);  // a second claim of one token: one more open
    q.close_end(QueueEnd::kProducer);
    q.close_end(QueueEnd::kProducer);
    return 0;
  });
  EXPECT_EQ(receiver.wait(), 0);
  std::string m;
  ASSERT_EQ(q.recv(m, Deadline::after(60.0)), QueueStatus::kOk);
  EXPECT_EQ(m, "claimed");
  EXPECT_EQ(q.recv(m, Deadline::after(60.0)), QueueStatus::kClosed);
  EXPECT_EQ(q.lent_holds(QueueEnd::kProducer), 0u);
}

// A holder that died between the two stores of an update leaves a slot with an owner and no
// counts (a claim's counts were written, a release's owner not cleared yet): reclaimed as dead.
// One that died between the counts and the owner of a claim leaves counts on a free slot:
// ignored. Both stay consistent with Q8.
TEST(QueueEnds, ASlotLeftBetweenTwoStepsIsReclaimed) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  layout::QueueHeader* h = header_of(q);
  q.open_end(QueueEnd::kConsumer);
  q.open_end(QueueEnd::kProducer);
  layout::QueueEndSlot& mine = h->ends.slots[layout::kEndProducer][0];
  ASSERT_NE(mine.owner.load(), 0u);
  // A dead process's half-released slot, and a half-claimed free slot.
  layout::QueueEndSlot& half = h->ends.slots[layout::kEndProducer][1];
  half.refs = 0;
  half.lent = 0;
  half.owner = uint64_t{1234} << 32 | 5;
  layout::QueueEndSlot& free_slot = h->ends.slots[layout::kEndProducer][2];
  free_slot.refs = 7;
  EXPECT_TRUE(channels::check_ends(h->ends).has_value());
  q.close_end(QueueEnd::kProducer);
  EXPECT_TRUE(q.end_closed(QueueEnd::kProducer));
  EXPECT_EQ(half.owner.load(), 0u);
  q.open_end(QueueEnd::kProducer);  // reuses a free slot, whatever counts it held
  EXPECT_EQ(q.holders(QueueEnd::kProducer), 1u);
  q.close_end(QueueEnd::kProducer);
  EXPECT_TRUE(q.end_closed(QueueEnd::kProducer));
  q.check();
}

TEST(QueueEnds, MoreHoldersThanSlotsAreNeverReportedClosed) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  layout::QueueHeader* h = header_of(q);
  q.open_end(QueueEnd::kProducer);
  // Fill every other slot with a live holder: this (live) process, over and over.
  for (uint32_t i = 1; i < layout::kQueueEndSlots; ++i) {
    h->ends.slots[layout::kEndProducer][i].refs = 1;
    h->ends.slots[layout::kEndProducer][i].owner =
        uint64_t{sync::self_pid()} << 32 | sync::self_tag();
  }
  ChildProcess extra([&] {
    after_fork_child();
    q.open_end(QueueEnd::kProducer);  // no slot left: counted in overflow
    return h->ends.overflow[layout::kEndProducer].load() == 1 ? 0 : 2;
  });
  EXPECT_EQ(extra.wait(), 0);
  for (uint32_t i = 0; i < layout::kQueueEndSlots; ++i) {
    h->ends.slots[layout::kEndProducer][i].owner = 0;
  }
  EXPECT_FALSE(q.end_closed(QueueEnd::kProducer));  // the overflow holder may be alive
}

TEST(QueueEnds, TheDecoderRefusesAScribbledTable) {
  layout::QueueEnds e;
  std::memset(static_cast<void*>(&e), 0, sizeof e);
  EXPECT_TRUE(channels::check_ends(e).has_value());
  e.opened[0] = 2;
  EXPECT_EQ(channels::check_ends(e).status().code(), Errc::kCorrupt);
  e.opened[0] = 0;
  e.slots[0][3].owner = uint64_t{1} << 32;
  e.slots[0][3].refs = 1;
  EXPECT_EQ(channels::check_ends(e).status().code(), Errc::kCorrupt);  // never opened
  e.opened[0] = 1;
  EXPECT_TRUE(channels::check_ends(e).has_value());
  EXPECT_EQ(channels::check_ends(e).value().slots[0], 1u);
  e.slots[1][0].owner = layout::kQueueMaxPid << 32;
  e.opened[1] = 1;
  EXPECT_EQ(channels::check_ends(e).status().code(), Errc::kCorrupt);  // pid out of range
}

}  // namespace
}  // namespace shoal
