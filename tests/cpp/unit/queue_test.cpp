// shoal::Queue in one process: FIFO order, wrap-around, full and empty, timeouts, the bounds,
// batches, the decoder on hand-built bytes and corrupt headers refused. No duration is asserted.
#include "shoal/queue.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "channels/queue_core.hpp"
#include "layout/queue_layout.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

using layout::QueueHeader;
using layout::QueueRecord;

// A message that names its sequence number and has a length that varies with it.
std::string message(uint64_t i, size_t len) {
  std::string s(len, '\0');
  for (size_t k = 0; k < len; ++k) s[k] = static_cast<char>((i * 131 + k * 7) & 0xff);
  if (len >= 8) std::memcpy(s.data(), &i, 8);
  return s;
}

QueueHeader* header_of(const Queue& q) {
  return q.heap().as<QueueHeader>(q.heap().root().load());
}

TEST(Queue, PutThenGetIsFifoWithContentsIntact) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create();
  for (uint64_t i = 0; i < 100; ++i) ASSERT_EQ(q.put(message(i, i % 37)), QueueStatus::kOk);
  EXPECT_EQ(q.size(), 100u);
  for (uint64_t i = 0; i < 100; ++i) {
    std::string m;
    ASSERT_EQ(q.get(m), QueueStatus::kOk);
    EXPECT_EQ(m, message(i, i % 37)) << i;
  }
  EXPECT_TRUE(q.empty());
  const QueueStats s = q.check();
  EXPECT_EQ(s.puts, 100u);
  EXPECT_EQ(s.gets, 100u);
}

TEST(Queue, RecordsWrapAroundASmallRingManyTimes) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 256});
  std::mt19937_64 rng(7);
  uint64_t next_put = 0, next_get = 0;
  std::vector<size_t> lens;
  for (int round = 0; round < 5000; ++round) {
    const size_t len = rng() % 120;
    if (rng() % 2 == 0) {
      if (q.try_put(message(next_put, len)) == QueueStatus::kOk) {
        lens.push_back(len);
        ++next_put;
      }
    } else {
      std::string m;
      if (q.try_get(m) == QueueStatus::kOk) {
        ASSERT_EQ(m, message(next_get, lens[next_get])) << next_get;
        ++next_get;
      }
    }
    if (round % 500 == 0) q.check();
  }
  EXPECT_GT(next_get, 1000u);  // the ring went round many times
  q.check();
}

TEST(Queue, TryPutOnFullIsFullAndTryGetOnEmptyIsEmpty) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 64});
  std::string m;
  EXPECT_EQ(q.try_get(m), QueueStatus::kEmpty);
  EXPECT_EQ(m, "");
  // 64 bytes: records of 8 + 8 = 16 bytes, four of them.
  for (int i = 0; i < 4; ++i) ASSERT_EQ(q.try_put("12345678"), QueueStatus::kOk);
  EXPECT_TRUE(q.full(8));
  EXPECT_EQ(q.try_put("x"), QueueStatus::kFull);
  EXPECT_EQ(q.try_put(""), QueueStatus::kFull);
  ASSERT_EQ(q.try_get(m), QueueStatus::kOk);
  EXPECT_EQ(q.try_put("x"), QueueStatus::kOk);
  q.check();
}

TEST(Queue, TimedPutAndGetReturnFullAndEmptyAfterTheirDeadline) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 64, .max_messages = 1});
  std::string m;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(q.get_for(m, 0.05), QueueStatus::kEmpty);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
  ASSERT_EQ(q.put("a"), QueueStatus::kOk);
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(q.put_for("b", 0.05), QueueStatus::kFull);
  EXPECT_GE(std::chrono::steady_clock::now() - t1, std::chrono::milliseconds(50));
  q.check();
}

TEST(Queue, MaxMessagesBoundsTheCount) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 4096, .max_messages = 3});
  for (int i = 0; i < 3; ++i) ASSERT_EQ(q.try_put("m"), QueueStatus::kOk);
  EXPECT_EQ(q.try_put("m"), QueueStatus::kFull);
  EXPECT_TRUE(q.full());
  std::string m;
  ASSERT_EQ(q.try_get(m), QueueStatus::kOk);
  EXPECT_EQ(q.try_put("m"), QueueStatus::kOk);
  q.check();
}

TEST(Queue, MaxBytesBoundsThePayloadAndRefusesWhatCanNeverFit) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 4096, .max_bytes = 100});
  EXPECT_EQ(q.max_message_bytes(), 100u);
  ASSERT_EQ(q.try_put(std::string(60, 'a')), QueueStatus::kOk);
  EXPECT_EQ(q.try_put(std::string(41, 'b')), QueueStatus::kFull);
  ASSERT_EQ(q.try_put(std::string(40, 'b')), QueueStatus::kOk);
  EXPECT_THROW((void)q.try_put(std::string(101, 'c')), InvalidArgumentError);
  q.check();
}

TEST(Queue, MessagesLargerThanAQuarterRingGoOutOfBandAndComeBackIntact) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 128});
  EXPECT_GT(q.max_message_bytes(), uint64_t{1} << 35);
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  // Inline up to a span of 32 (24 bytes: a quarter ring); beyond, a 24-byte record names a
  // heap block.
  const std::vector<size_t> lens = {24, 25, 121, 1 << 20, 0, 3 << 20, 7};
  std::vector<std::string> sent;
  for (size_t i = 0; i < lens.size(); ++i) sent.push_back(message(i, lens[i]));
  for (const std::string& m : sent) {
    if (q.try_put(m) != QueueStatus::kOk) {  // the ring holds five records of 24 bytes
      std::string got;
      ASSERT_EQ(q.get(got), QueueStatus::kOk);
      EXPECT_EQ(got, sent[q.stats().gets - 1]);
      ASSERT_EQ(q.try_put(m), QueueStatus::kOk);
    }
    const QueueStats c = q.check();
    EXPECT_EQ(c.stray_blocks, 0u);
  }
  EXPECT_EQ(q.check().out_of_band, 4u);  // 25 and 121 bytes, 1 MiB, 3 MiB
  std::vector<std::string> rest;
  ASSERT_EQ(q.get_many(rest, 100), QueueStatus::kOk);
  for (size_t i = 0; i < rest.size(); ++i) {
    EXPECT_EQ(rest[i], sent[sent.size() - rest.size() + i]) << i;
  }
  const QueueStats s = q.check();
  EXPECT_EQ(s.size, 0u);
  EXPECT_EQ(s.out_of_band, 0u);
  EXPECT_EQ(s.stray_blocks, 0u);
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks);  // every block freed by its get
  EXPECT_THROW(Queue::create({.ring_bytes = 8}), InvalidArgumentError);
}

TEST(Queue, AnOutOfBandPutThatTimesOutFreesItsBlock) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 64, .max_messages = 1});
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  ASSERT_EQ(q.try_put("a"), QueueStatus::kOk);
  EXPECT_EQ(q.put_for(std::string(100000, 'b'), 0.01), QueueStatus::kFull);
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks);
  std::vector<std::string_view> mixed = {"c", std::string_view("0123456789abcdef0123456789")};
  std::string m;
  ASSERT_EQ(q.try_get(m), QueueStatus::kOk);
  EXPECT_THROW((void)q.put_many(mixed), InvalidArgumentError);  // 2 > max_messages
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks);
  EXPECT_EQ(q.check().stray_blocks, 0u);
}

TEST(Queue, MaxBytesCountsOutOfBandMessages) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 256, .max_bytes = 10000});
  ASSERT_EQ(q.try_put(std::string(6000, 'a')), QueueStatus::kOk);
  EXPECT_EQ(q.try_put(std::string(4001, 'b')), QueueStatus::kFull);
  ASSERT_EQ(q.try_put(std::string(4000, 'b')), QueueStatus::kOk);
  EXPECT_EQ(q.stats().bytes, 10000u);
  EXPECT_EQ(q.check().out_of_band, 2u);
}

TEST(Queue, EmptyMessagesAreMessages) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 64});
  ASSERT_EQ(q.try_put(""), QueueStatus::kOk);
  EXPECT_EQ(q.size(), 1u);
  std::string m = "old";
  ASSERT_EQ(q.try_get(m), QueueStatus::kOk);
  EXPECT_EQ(m, "");
  EXPECT_EQ(q.try_get(m), QueueStatus::kEmpty);
}

TEST(Queue, PutManyIsAllOrNothingAndGetManyTakesUpToItsBounds) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 200});
  std::vector<std::string_view> five = {"a", "bb", "ccc", "dddd", "eeeee"};
  ASSERT_EQ(q.put_many(five), QueueStatus::kOk);  // 5 * 16 = 80 bytes
  ASSERT_EQ(q.put_many(five), QueueStatus::kOk);  // 160
  ASSERT_EQ(q.put_many(five, Deadline{0}), QueueStatus::kFull);  // 80 > 200 - 160
  EXPECT_EQ(q.size(), 10u);
  std::vector<std::string_view> too_many(17, "x");
  EXPECT_THROW((void)q.put_many(too_many), InvalidArgumentError);  // 17 * 16 > 200
  std::vector<std::string> out;
  ASSERT_EQ(q.get_many(out, 3), QueueStatus::kOk);
  EXPECT_EQ(out, (std::vector<std::string>{"a", "bb", "ccc"}));
  // max_bytes: "dddd" (4) + "eeeee" (5) > 8: one only; the first is always taken.
  ASSERT_EQ(q.get_many(out, 100, Deadline::never(), false, 8), QueueStatus::kOk);
  EXPECT_EQ(out.size(), 4u);
  EXPECT_EQ(out.back(), "dddd");
  ASSERT_EQ(q.get_many(out, 100, Deadline::never(), false, 1), QueueStatus::kOk);
  EXPECT_EQ(out.back(), "eeeee");
  out.clear();
  ASSERT_EQ(q.get_many(out, 100), QueueStatus::kOk);
  EXPECT_EQ(out.size(), 5u);
  EXPECT_EQ(q.get_many(out, 100, Deadline{0}), QueueStatus::kEmpty);
  EXPECT_EQ(out.size(), 5u);
  q.check();
}

TEST(Queue, AnotherMappingOfTheHandleSeesTheSameQueue) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create();
  Queue same = Queue::attach(q.handle());
  ASSERT_EQ(q.put("hello"), QueueStatus::kOk);
  std::string m;
  ASSERT_EQ(same.get(m), QueueStatus::kOk);
  EXPECT_EQ(m, "hello");
  EXPECT_EQ(same.ring_bytes(), q.ring_bytes());
}

TEST(Queue, ABlockedGetWakesWhenAnotherThreadPuts) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 64});
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    ASSERT_EQ(q.put("late"), QueueStatus::kOk);
  });
  std::string m;
  EXPECT_EQ(q.get_for(m, 30.0), QueueStatus::kOk);
  EXPECT_EQ(m, "late");
  t.join();
  // And a blocked put wakes when a get makes room.
  for (int i = 0; i < 4; ++i) ASSERT_EQ(q.try_put("12345678"), QueueStatus::kOk);
  std::thread t2([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    std::string x;
    ASSERT_EQ(q.get(x), QueueStatus::kOk);
  });
  EXPECT_EQ(q.put_for("12345678", 30.0), QueueStatus::kOk);
  t2.join();
  q.check();
}

TEST(Queue, AnInterruptibleWaitReturnsInterruptedOnASignal) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 64});
  std::string m;
  {
    test::SignalStorm storm(::pthread_self());
    EXPECT_EQ(q.get(m, Deadline::after(30.0), true), QueueStatus::kInterrupted);
    // Not interruptible: signals do not end the wait before its deadline.
    EXPECT_EQ(q.get(m, Deadline::after(0.05), false), QueueStatus::kEmpty);
  }
  q.check();
}

TEST(Queue, AHeapThatHoldsNoQueueIsRefused) {
  test::ScopedRuntimeDir rd;
  Heap h = Heap::create();
  EXPECT_THROW(Queue::attach(h.handle()), IncompatibleSegmentError);
  const HeapRef r = h.allocate(sizeof(QueueHeader));
  std::memset(h.at(r, sizeof(QueueHeader)), 0, sizeof(QueueHeader));
  h.root().store(r);
  EXPECT_THROW(Queue::attach(h.handle()), IncompatibleSegmentError);  // magic 0
}

TEST(Queue, ACorruptHeaderIsRefusedCleanly) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 1024});
  QueueHeader* h = header_of(q);
  h->version = layout::kQueueVersion + 1;
  EXPECT_THROW(Queue::attach(q.heap()), IncompatibleSegmentError);
  h->version = layout::kQueueVersion;
  h->ring_bytes = 1 << 20;  // larger than its block
  EXPECT_THROW(Queue::attach(q.heap()), CorruptSegmentError);
  h->ring_bytes = 1001;  // not a multiple of 8
  EXPECT_THROW(Queue::attach(q.heap()), CorruptSegmentError);
  h->ring_bytes = 1024;
  h->header_bytes = 64;
  EXPECT_THROW(Queue::attach(q.heap()), CorruptSegmentError);
  h->header_bytes = sizeof(QueueHeader);
  EXPECT_NO_THROW(Queue::attach(q.heap()));
}

TEST(Queue, ACorruptRecordIsCorruptSegmentErrorNotACrash) {
  test::ScopedRuntimeDir rd;
  Queue q = Queue::create({.ring_bytes = 1024});
  ASSERT_EQ(q.put("hello"), QueueStatus::kOk);
  QueueHeader* h = header_of(q);
  auto* ring = reinterpret_cast<std::byte*>(h) + sizeof(QueueHeader);
  QueueRecord rec;
  std::memcpy(&rec, ring, sizeof rec);
  rec.length = 5000;  // past the tail
  std::memcpy(ring, &rec, sizeof rec);
  std::string m;
  EXPECT_THROW((void)q.get(m), CorruptSegmentError);
  EXPECT_THROW(q.check(), CorruptSegmentError);
  rec.length = 5;
  rec.tag = 0;
  std::memcpy(ring, &rec, sizeof rec);
  EXPECT_THROW((void)q.get(m), CorruptSegmentError);
  rec.tag = layout::record_tag(layout::kRecordBytes);
  std::memcpy(ring, &rec, sizeof rec);
  ASSERT_EQ(q.get(m), QueueStatus::kOk);  // the lock was released on each throw
  EXPECT_EQ(m, "hello");
}

// The decoder on hand-built bytes (the fuzz target's functions).
TEST(Queue, EncodingsTravelWithTheirMessagesAndUnknownOnesAreRefused) {
  Queue q = Queue::create({.ring_bytes = 4096});
  const std::string_view msgs[] = {"raw", "pickled", std::string_view("")};
  const uint8_t encs[] = {layout::kEncodingBytes, layout::kEncodingPickle,
                          layout::kEncodingPickleBuffers};
  ASSERT_EQ(q.put_encoded(msgs, encs), QueueStatus::kOk);
  ASSERT_EQ(q.put("plain"), QueueStatus::kOk);  // put: raw bytes
  std::vector<QueueMessage> out;
  ASSERT_EQ(q.get_messages(out, 10), QueueStatus::kOk);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].data, "raw");
  EXPECT_EQ(out[0].encoding, layout::kEncodingBytes);
  EXPECT_EQ(out[1].data, "pickled");
  EXPECT_EQ(out[1].encoding, layout::kEncodingPickle);
  EXPECT_EQ(out[2].length, 0u);
  EXPECT_EQ(out[2].encoding, layout::kEncodingPickleBuffers);
  EXPECT_EQ(out[3].data, "plain");
  EXPECT_EQ(out[3].encoding, layout::kEncodingBytes);
  // get_messages replaces out's contents; nothing when empty.
  EXPECT_EQ(q.get_messages(out, 10, Deadline{0}), QueueStatus::kEmpty);
  EXPECT_TRUE(out.empty());
  const uint8_t bad[] = {layout::kEncodingCount};
  const std::string_view one[] = {"x"};
  EXPECT_THROW(q.put_encoded(one, bad), InvalidArgumentError);
  const uint8_t two[] = {0, 0};
  EXPECT_THROW(q.put_encoded(one, two), InvalidArgumentError);
  // A C++ consumer of a Python-encoded message gets its bytes (get) or also its encoding.
  ASSERT_EQ(q.put_encoded(one, std::span<const uint8_t>(encs + 1, 1)), QueueStatus::kOk);
  std::string m;
  ASSERT_EQ(q.get(m), QueueStatus::kOk);
  EXPECT_EQ(m, "x");
  q.check();
}

TEST(Queue, PutPartsSendsTheirConcatenationInlineOrOutOfBand) {
  Queue q = Queue::create({.ring_bytes = 1024});
  const std::string a = message(1, 100), b = message(2, 5000), c;
  for (size_t n : {size_t{1}, size_t{3}}) {  // 100 bytes inline; 5100 out of band
    const std::string_view parts[] = {a, n == 3 ? std::string_view(b) : std::string_view(c), c};
    ASSERT_EQ(q.put_parts(parts, layout::kEncodingPickleBuffers), QueueStatus::kOk);
    std::vector<QueueMessage> out;
    ASSERT_EQ(q.get_messages(out, 1), QueueStatus::kOk);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].data, n == 3 ? a + b : a);
    EXPECT_EQ(out[0].encoding, layout::kEncodingPickleBuffers);
  }
  const std::string_view none[] = {c};
  ASSERT_EQ(q.put_parts(none, 0), QueueStatus::kOk);  // an empty message
  std::string m = "x";
  ASSERT_EQ(q.get(m), QueueStatus::kOk);
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(q.check().stray_blocks, 0u);
}

TEST(Queue, AHandedOutBlockIsTheCallersUntilItReleasesIt) {
  Queue q = Queue::create({.ring_bytes = 256});
  const uint64_t base_bytes = q.heap().stats().live_bytes;
  const std::string big = message(7, 100000), small = message(8, 20);
  ASSERT_EQ(q.put(big), QueueStatus::kOk);
  ASSERT_EQ(q.put(small), QueueStatus::kOk);
  std::vector<QueueMessage> out;
  ASSERT_EQ(q.get_messages(out, 2, Deadline::never(), false, 0, true), QueueStatus::kOk);
  ASSERT_EQ(out.size(), 2u);
  ASSERT_NE(out[0].block, 0u);  // out of band: handed out, not copied
  EXPECT_TRUE(out[0].data.empty());
  EXPECT_EQ(out[0].length, big.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(q.heap().at(out[0].block, big.size())),
                        big.size()),
            big);
  EXPECT_EQ(out[1].block, 0u);  // inline: copied as ever
  EXPECT_EQ(out[1].data, small);
  // The hand-out table names it (Q9): handed out to a live process, not a stray block, and
  // not reclaimed while this process lives.
  const QueueStats c = q.check();
  EXPECT_EQ(c.handed_out, 1u);
  EXPECT_EQ(c.stray_blocks, 0u);
  EXPECT_EQ(q.reclaim_handouts(), 0u);
  EXPECT_GT(q.heap().stats().live_bytes, base_bytes + big.size());
  q.release(out[0].block);
  EXPECT_EQ(q.check().stray_blocks, 0u);
  EXPECT_EQ(q.stats().handed_out, 0u);
  EXPECT_EQ(q.heap().stats().live_bytes, base_bytes);
  EXPECT_EQ(q.size(), 0u);
  // Released already: refused, nothing freed a second time.
  EXPECT_THROW(q.release(out[0].block), InvalidArgumentError);
  EXPECT_THROW(q.release(12345), InvalidArgumentError);
  EXPECT_EQ(q.check().stray_blocks, 0u);
}

// A full hand-out table (every slot a live process's) does not hand out: the message is copied
// as a small one is, and its block freed at once. A slot released is used again.
TEST(Queue, AHandOutWithTheTableFullCopiesTheMessageInstead) {
  Queue q = Queue::create({.ring_bytes = 256});
  const uint64_t base_bytes = q.heap().stats().live_bytes;
  constexpr uint32_t kSlots = layout::kQueueHandoutSlots;
  std::vector<HeapRef> held;
  std::vector<QueueMessage> out;
  for (uint32_t i = 0; i < kSlots + 2; ++i) {
    const std::string m = message(i, 200);  // > a quarter of the ring: out of band
    ASSERT_EQ(q.put(m), QueueStatus::kOk);
    ASSERT_EQ(q.get_messages(out, 1, Deadline::never(), false, 0, true), QueueStatus::kOk);
    ASSERT_EQ(out.size(), 1u);
    if (i < kSlots) {
      ASSERT_NE(out[0].block, 0u) << i;
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(q.heap().at(out[0].block, 200)), 200),
                m);
      held.push_back(out[0].block);
    } else {
      EXPECT_EQ(out[0].block, 0u) << i;  // copied: no slot was free
      EXPECT_EQ(out[0].data, m);
    }
  }
  QueueStats s = q.check();
  EXPECT_EQ(s.handed_out, kSlots);
  EXPECT_EQ(s.handouts_copied, 2u);
  EXPECT_EQ(s.stray_blocks, 0u);
  q.release(held[17]);
  ASSERT_EQ(q.put(message(1000, 200)), QueueStatus::kOk);
  ASSERT_EQ(q.get_messages(out, 1, Deadline::never(), false, 0, true), QueueStatus::kOk);
  ASSERT_NE(out[0].block, 0u);  // the freed slot
  held[17] = out[0].block;
  EXPECT_EQ(q.stats().handouts_copied, 2u);
  // Sharing for a fork with the table full: no slot for the child, so this process's own claim
  // becomes kept: released by nobody (release refuses), kept until the queue is freed.
  EXPECT_EQ(q.share_handout(held[3]), kSlots);
  EXPECT_THROW(q.release(held[3]), InvalidArgumentError);
  s = q.check();
  EXPECT_EQ(s.handed_out, kSlots);
  EXPECT_EQ(s.handouts_kept, 1u);
  EXPECT_EQ(s.stray_blocks, 0u);
  for (size_t i = 0; i < held.size(); ++i) {
    if (i != 3) q.release(held[i]);
  }
  s = q.check();
  EXPECT_EQ(s.handed_out, 1u);
  EXPECT_EQ(s.stray_blocks, 0u);
  EXPECT_GE(q.heap().stats().live_bytes, base_bytes + 200);  // the kept block, still there
}

// share_handout and adopt_handout in one process (the child's side runs in the multiprocess
// tests): a block not this process's is refused; adopt takes only a kept slot naming the block;
// a shared block is freed when the last of its claims is given up.
TEST(Queue, ASharedBlockIsFreedWithItsLastClaim) {
  Queue q = Queue::create({.ring_bytes = 256});
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  std::vector<QueueMessage> out;
  ASSERT_EQ(q.put(message(1, 200)), QueueStatus::kOk);
  ASSERT_EQ(q.get_messages(out, 1, Deadline::never(), false, 0, true), QueueStatus::kOk);
  const HeapRef b = out[0].block;
  ASSERT_NE(b, 0u);
  EXPECT_THROW(q.share_handout(b + 16), InvalidArgumentError);
  const uint32_t slot = q.share_handout(b);
  ASSERT_LT(slot, layout::kQueueHandoutSlots);
  EXPECT_EQ(q.stats().handouts_kept, 1u);
  EXPECT_FALSE(q.adopt_handout(slot, b + 16));
  EXPECT_FALSE(q.adopt_handout((slot + 1) % layout::kQueueHandoutSlots, b));
  EXPECT_FALSE(q.adopt_handout(layout::kQueueHandoutSlots, b));
  q.release(b);  // this process's claim: the kept one still names the block
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks + 1);
  EXPECT_THROW(q.release(b), InvalidArgumentError);  // released already
  EXPECT_EQ(q.reclaim_handouts(), 0u);  // a kept slot is never reclaimed
  ASSERT_TRUE(q.adopt_handout(slot, b));  // as the child would: the claim is this process's
  EXPECT_EQ(q.stats().handouts_kept, 0u);
  EXPECT_EQ(q.check().stray_blocks, 0u);
  q.release(b);  // the last claim: freed
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks);
  EXPECT_EQ(q.check().handed_out, 0u);
}

// The holder's identity is pid and start time: a slot that names this process's pid with
// another tag is a dead process whose pid was given to this one (its block is reclaimed); a
// slot that names this process is never reclaimed, nor one whose pid is 0 or a stranger's.
TEST(Queue, AHandOutSlotWhosePidWasReusedIsReclaimedAndALiveOnesIsNot) {
  Queue q = Queue::create({.ring_bytes = 256});
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  std::vector<QueueMessage> out;
  std::vector<HeapRef> blocks;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(q.put(message(i, 1000)), QueueStatus::kOk);
    ASSERT_EQ(q.get_messages(out, 1, Deadline::never(), false, 0, true), QueueStatus::kOk);
    ASSERT_NE(out[0].block, 0u);
    blocks.push_back(out[0].block);
  }
  QueueHeader* h = header_of(q);
  layout::QueueHandout* reused = nullptr;
  for (layout::QueueHandout& slot : h->handouts.slots) {
    if (slot.owner.load() != 0 && slot.block.load() == blocks[0]) reused = &slot;
  }
  ASSERT_NE(reused, nullptr);
  const uint64_t me = reused->owner.load();
  ASSERT_EQ(me >> 32, static_cast<uint64_t>(::getpid()));
  ASSERT_NE(static_cast<uint32_t>(me), 0u) << "this test needs /proc to read a start time";
  reused->owner.store(me ^ 1);  // the same pid, another start time: a process gone
  EXPECT_EQ(q.reclaim_handouts(), 1u);
  EXPECT_EQ(q.stats().handed_out, 1u);
  EXPECT_EQ(q.stats().handouts_reclaimed, 1u);
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks + 1);  // blocks[1] only
  EXPECT_THROW(q.release(blocks[0]), InvalidArgumentError);  // no longer this process's
  EXPECT_EQ(q.check().stray_blocks, 0u);
  q.release(blocks[1]);
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks);
}

// Q9 on hand-built tables: an owned slot with pid 0, a pid past the limit, block 0, or a block
// named twice by one owner word is refused; co-owners (other words, kept ones) may name one
// block; free slots' blocks mean nothing.
TEST(QueueDecoder, HandOutTablesAreChecked) {
  layout::QueueHandouts t{};
  auto set = [&](uint32_t i, uint64_t owner, uint64_t block) {
    t.slots[i].owner.store(owner);
    t.slots[i].block.store(block);
  };
  EXPECT_TRUE(channels::check_handouts(t).value().empty());
  set(3, uint64_t{42} << 32 | 7, 4096);
  set(4, 0, 4096);  // free: a stale block is no duplicate
  set(9, uint64_t{43} << 32, 8192);
  ASSERT_TRUE(channels::check_handouts(t).has_value());
  EXPECT_EQ(channels::check_handouts(t).value(), (std::vector<uint64_t>{4096, 8192}));
  set(10, uint64_t{44} << 32 | 1, 8192);  // a co-owner
  set(11, layout::kQueueHandoutKept | uint64_t{43} << 32, 8192);  // a kept slot
  EXPECT_EQ(channels::check_handouts(t).value(), (std::vector<uint64_t>{4096, 8192, 8192, 8192}));
  set(12, uint64_t{44} << 32 | 1, 8192);  // one owner word, one block, twice
  EXPECT_EQ(channels::check_handouts(t).status().code(), Errc::kCorrupt);
  set(12, 0, 0);
  set(11, layout::kQueueHandoutKept, 8192);  // kept, pid 0
  EXPECT_EQ(channels::check_handouts(t).status().code(), Errc::kCorrupt);
  set(11, 0, 0);
  set(10, uint64_t{44} << 32 | 1, 0);
  EXPECT_EQ(channels::check_handouts(t).status().code(), Errc::kCorrupt);
  set(10, 5, 16384);  // pid 0
  EXPECT_EQ(channels::check_handouts(t).status().code(), Errc::kCorrupt);
  set(10, layout::kQueueMaxPid << 32, 16384);
  EXPECT_EQ(channels::check_handouts(t).status().code(), Errc::kCorrupt);
  set(10, 0, 0);
  EXPECT_TRUE(channels::check_handouts(t).has_value());
}

TEST(Queue, AJoinableQueueCountsTasksUntilDone) {
  Queue q = Queue::create({.ring_bytes = 4096, .joinable = true});
  ASSERT_TRUE(q.joinable());
  EXPECT_FALSE(Queue::create().joinable());
  EXPECT_THROW(Queue::create().task_done(), InvalidArgumentError);
  EXPECT_EQ(q.join(Deadline{0}), QueueStatus::kOk);
  EXPECT_FALSE(q.task_done());  // nothing to mark done
  for (int i = 0; i < 3; ++i) ASSERT_EQ(q.put("t"), QueueStatus::kOk);
  EXPECT_EQ(q.unfinished(), 3u);
  std::string m;
  ASSERT_EQ(q.get(m), QueueStatus::kOk);
  std::vector<std::string> two;
  ASSERT_EQ(q.get_many(two, 2), QueueStatus::kOk);
  EXPECT_EQ(q.unfinished(), 3u);  // taken, not done
  EXPECT_EQ(q.join(Deadline::after(0.01)), QueueStatus::kTimeout);
  EXPECT_TRUE(q.task_done());
  EXPECT_TRUE(q.task_done());
  EXPECT_EQ(q.unfinished(), 1u);
  EXPECT_TRUE(q.task_done());
  EXPECT_EQ(q.join(Deadline{0}), QueueStatus::kOk);
  EXPECT_FALSE(q.task_done());
  // Another mapping sees the same table.
  Queue same = Queue::attach(q.handle());
  ASSERT_TRUE(same.joinable());
  ASSERT_EQ(q.put("u"), QueueStatus::kOk);
  EXPECT_EQ(same.unfinished(), 1u);
  q.check();
}

TEST(Queue, AJoinWaitingInAThreadReturnsWhenTheLastTaskIsDone) {
  Queue q = Queue::create({.ring_bytes = 4096, .joinable = true});
  ASSERT_EQ(q.put("t"), QueueStatus::kOk);
  std::string m;
  ASSERT_EQ(q.get(m), QueueStatus::kOk);
  std::thread joiner([&] { EXPECT_EQ(q.join(Deadline::after(60.0)), QueueStatus::kOk); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(q.task_done());
  joiner.join();
}

TEST(QueueDecoder, WalksRecordsAcrossTheEndAndRejectsBadOnes) {
  std::vector<std::byte> ring(64);
  auto put = [&](uint64_t pos, uint32_t len, uint32_t tag) {
    QueueRecord r{len, tag};
    channels::ring_write(ring.data(), ring.size(), pos, &r, sizeof r);
  };
  const uint32_t ok = layout::record_tag(layout::kRecordBytes);
  // A record at 48 of 20 bytes (span 32) wraps to 16; then one of 0 bytes at 16 (span 8).
  put(48, 20, ok);
  put(64 + 16, 0, ok);
  Result<channels::RingWalk> w = channels::walk_ring(ring.data(), 64, 48, 48 + 40);
  ASSERT_TRUE(w.has_value()) << w.status().message();
  EXPECT_EQ(w.value().count, 2u);
  EXPECT_EQ(w.value().bytes, 20u);
  // Tail inside a record, tail before head, a span over the ring, unaligned positions.
  EXPECT_FALSE(channels::walk_ring(ring.data(), 64, 48, 48 + 16).has_value());
  EXPECT_FALSE(channels::walk_ring(ring.data(), 64, 48, 40).has_value());
  EXPECT_FALSE(channels::walk_ring(ring.data(), 64, 0, 72).has_value());
  EXPECT_FALSE(channels::walk_ring(ring.data(), 64, 4, 12).has_value());
  put(48, 20, ok + (uint32_t{layout::kEncodingPickleBuffers} << layout::kRecordEncodingShift));
  EXPECT_TRUE(channels::walk_ring(ring.data(), 64, 48, 48 + 40).has_value());  // an encoding
  put(48, 20, ok + (uint32_t{layout::kEncodingCount} << layout::kRecordEncodingShift));
  EXPECT_FALSE(channels::walk_ring(ring.data(), 64, 48, 48 + 40).has_value());  // unknown one
  put(48, 20, ok + 0x80);  // an unknown flag
  EXPECT_FALSE(channels::walk_ring(ring.data(), 64, 48, 48 + 40).has_value());
  put(48, 20, layout::record_tag(layout::kRecordOutOfBand));  // out of band: 16 bytes only
  EXPECT_FALSE(channels::walk_ring(ring.data(), 64, 48, 48 + 40).has_value());
  put(48, 57, ok);  // longer than any record of this ring
  EXPECT_FALSE(channels::walk_ring(ring.data(), 64, 48, 48 + 64).has_value());
  EXPECT_TRUE(channels::walk_ring(ring.data(), 64, 1000, 1000).has_value());  // empty
}

TEST(QueueDecoder, AnOutOfBandRecordWrappingBetweenItsWordsDecodes) {
  std::vector<std::byte> ring(64);
  const layout::QueueRecord r{16, layout::record_tag(layout::kRecordOutOfBand)};
  channels::ring_write(ring.data(), 64, 48, &r, sizeof r);
  layout::OutOfBandRef o{0x10040, 123456};
  channels::ring_write(ring.data(), 64, 56, &o, sizeof o);  // ref at 56, length at 0
  Result<channels::RecordView> v = channels::read_record(ring.data(), 64, 48, 72);
  ASSERT_TRUE(v.has_value()) << v.status().message();
  EXPECT_EQ(v.value().ref, 0x10040u);
  EXPECT_EQ(v.value().message, 123456u);
  EXPECT_EQ(v.value().span(), 24u);
  Result<channels::RingWalk> w = channels::walk_ring(ring.data(), 64, 48, 72);
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w.value().bytes, 123456u);
  EXPECT_EQ(w.value().out_of_band, 1u);
  o.ref = 0;  // a null block
  channels::ring_write(ring.data(), 64, 56, &o, sizeof o);
  EXPECT_FALSE(channels::read_record(ring.data(), 64, 48, 72).has_value());
  o = {0x10040, layout::kQueueMaxOutOfBand + 1};  // longer than any block
  channels::ring_write(ring.data(), 64, 56, &o, sizeof o);
  EXPECT_FALSE(channels::read_record(ring.data(), 64, 48, 72).has_value());
}

TEST(QueueDecoder, HeaderConstantsAreChecked) {
  QueueHeader h{};
  h.magic = layout::kQueueMagic;
  h.version = layout::kQueueVersion;
  h.header_bytes = sizeof(QueueHeader);
  h.ring_bytes = 64;
  EXPECT_TRUE(channels::check_header_constants(h, sizeof(QueueHeader) + 64).is_ok());
  EXPECT_EQ(channels::check_header_constants(h, sizeof(QueueHeader) + 63).code(),
            Errc::kCorrupt);
  EXPECT_EQ(channels::check_header_constants(h, 10).code(), Errc::kCorrupt);
  h.ring_bytes = layout::kQueueMaxRing + 8;
  EXPECT_EQ(channels::check_header_constants(h, UINT64_MAX).code(), Errc::kCorrupt);
  h.ring_bytes = 64;
  h.magic ^= 1;
  EXPECT_EQ(channels::check_header_constants(h, UINT64_MAX).code(), Errc::kIncompatible);
}


// The fuzz target's seeds (fuzz/corpus/queue) pass the header checks of this build's layout: a
// layout bump that leaves them behind makes the fuzzer refuse them at the first check, and a
// fuzz run then starts from nothing. Each seed's ring walks (what the fuzzer goes on to read).
// Reads the files next to this source (run from build/<preset>/tests/cpp, as ctest does).
TEST(QueueDecoder, EveryFuzzSeedIsAtThisLayoutVersionAndWalks) {
  std::string dir = __FILE__;
  dir = dir.substr(0, dir.rfind("tests/cpp/unit/")) + "fuzz/corpus/queue";
  int seeds = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    SCOPED_TRACE(entry.path().string());
    std::ifstream f(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    ASSERT_GE(bytes.size(), sizeof(QueueHeader));
    QueueHeader h;
    std::memcpy(static_cast<void*>(&h), bytes.data(), sizeof h);
    ASSERT_TRUE(channels::check_header_constants(h, bytes.size()).is_ok());
    EXPECT_TRUE(channels::check_ends(h.ends).has_value());
    EXPECT_TRUE(channels::check_handouts(h.handouts).has_value());
    const auto* ring = reinterpret_cast<const std::byte*>(bytes.data()) + sizeof(QueueHeader);
    EXPECT_TRUE(channels::walk_ring(ring, h.ring_bytes, h.head.load(), h.tail.load()).has_value());
    ++seeds;
  }
  EXPECT_GE(seeds, 6);
}

}  // namespace
}  // namespace shoal
