// shoal::Queue across real processes: producers and consumers in several processes deliver
// every message exactly once; producers SIGKILLed at random instants of put never wedge the
// queue nor corrupt it; a consumer killed in get loses at most the message it was taking; a
// lock holder that dies between two steps of put or get is repaired by the next one.
#include "shoal/queue.hpp"
#include "shoal/session.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "layout/heap_layout.hpp"
#include "layout/queue_layout.hpp"
#include "sync/robust_mutex.hpp"
#include "test_support.hpp"

namespace shoal {
namespace {

using layout::QueueHeader;
using test::ChildProcess;
using test::ScopedRuntimeDir;

// A message of `len` bytes (len >= 8) that names (stream, seq) and whose every byte depends on
// them, so a torn, shifted or mixed message is detected.
// The bytes after the first 8 depend on the stream and the offset only, so a producer can
// rebuild a message by rewriting its first 8 bytes (and spend its time in put, not here).
std::string message(uint32_t stream, uint32_t seq, size_t len) {
  std::string s(len, '\0');
  std::memcpy(s.data(), &stream, 4);
  std::memcpy(s.data() + 4, &seq, 4);
  for (size_t k = 8; k < len; ++k) s[k] = static_cast<char>((stream * 31 + k * 7 + len) & 0xff);
  return s;
}
void set_seq(std::string& s, uint32_t seq) { std::memcpy(s.data() + 4, &seq, 4); }

bool parse(const std::string& s, uint32_t& stream, uint32_t& seq) {
  if (s.size() < 8) return false;
  std::memcpy(&stream, s.data(), 4);
  std::memcpy(&seq, s.data() + 4, 4);
  return s == message(stream, seq, s.size());
}

std::string u64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
uint64_t from_u64(const std::string& s) {
  uint64_t v = 0;
  std::memcpy(&v, s.data(), std::min<size_t>(8, s.size()));
  return v;
}

QueueHeader* header_of(const Queue& q) {
  return q.heap().as<QueueHeader>(q.heap().root().load());
}

TEST(QueueProcesses, ProducersAndConsumersInSeveralProcessesDeliverEachMessageExactlyOnce) {
  ScopedRuntimeDir dir;
  constexpr uint32_t kProducers = 3, kConsumers = 2, kPerProducer = 3000;
  Queue q = Queue::create({.ring_bytes = 4096});          // small: producers block often
  Queue results = Queue::create({.ring_bytes = 1 << 20});  // (stream, seq) of each delivery
  std::vector<std::unique_ptr<ChildProcess>> consumers, producers;
  for (uint32_t c = 0; c < kConsumers; ++c) {
    consumers.push_back(std::make_unique<ChildProcess>([&] {
      after_fork_child();
      std::map<uint32_t, int64_t> last;  // per producer: the order each consumer sees is FIFO
      std::vector<std::string> batch;
      for (;;) {
        batch.clear();
        if (q.get_many(batch, 16, Deadline::after(60.0)) != QueueStatus::kOk) return 2;
        for (size_t b = 0; b < batch.size(); ++b) {
          const std::string& m = batch[b];
          if (m == "stop") {
            // The producers are done, so what follows in the batch is the other consumers'
            // stops: hand them back.
            for (size_t rest = b + 1; rest < batch.size(); ++rest) (void)q.put(batch[rest]);
            return 0;
          }
          uint32_t stream = 0, seq = 0;
          if (!parse(m, stream, seq)) return 3;
          auto it = last.try_emplace(stream, -1).first;
          if (static_cast<int64_t>(seq) <= it->second) return 4;
          it->second = seq;
          if (results.put(m.substr(0, 8)) != QueueStatus::kOk) return 5;
        }
      }
    }));
  }
  for (uint32_t p = 0; p < kProducers; ++p) {
    producers.push_back(std::make_unique<ChildProcess>([&, p] {
      after_fork_child();
      std::mt19937 rng(p);
      for (uint32_t i = 0; i < kPerProducer;) {
        if (rng() % 4 == 0) {  // a batch now and then
          std::vector<std::string> ms;
          for (int k = 0; k < 3 && i < kPerProducer; ++k, ++i) {
            ms.push_back(message(p, i, 8 + rng() % 200));
          }
          std::vector<std::string_view> views(ms.begin(), ms.end());
          if (q.put_many(views) != QueueStatus::kOk) return 2;
        } else {
          if (q.put(message(p, i, 8 + rng() % 200)) != QueueStatus::kOk) return 2;
          ++i;
        }
      }
      return 0;
    }));
  }
  for (auto& p : producers) EXPECT_EQ(p->wait(std::chrono::seconds(120)), 0);
  for (uint32_t c = 0; c < kConsumers; ++c) ASSERT_EQ(q.put("stop"), QueueStatus::kOk);
  for (auto& c : consumers) EXPECT_EQ(c->wait(std::chrono::seconds(120)), 0);
  std::set<std::pair<uint32_t, uint32_t>> seen;
  std::string m;
  while (results.try_get(m) == QueueStatus::kOk) {
    uint32_t stream = 0, seq = 0;
    std::memcpy(&stream, m.data(), 4);
    std::memcpy(&seq, m.data() + 4, 4);
    EXPECT_TRUE(seen.emplace(stream, seq).second) << "twice: " << stream << "/" << seq;
  }
  EXPECT_EQ(seen.size(), size_t{kProducers} * kPerProducer);
  EXPECT_TRUE(q.empty());
  q.check();
  results.check();
  EXPECT_EQ(q.stats().recoveries, 0u);
}

TEST(QueueProcesses, ProducersKilledAtRandomInstantsNeverWedgeOrCorruptTheQueue) {
  ScopedRuntimeDir dir;
  const uint32_t seed = static_cast<uint32_t>(::getpid());
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  constexpr int kKills = 80;
  constexpr uint32_t kLive = 1000;  // the stream of the producer that is never killed
  Queue q = Queue::create({.ring_bytes = 1 << 18});
  Queue report = Queue::create({.ring_bytes = 4096});
  // One consumer checks every message and that each stream is gap-free and in order: a killed
  // producer's stream stops at some point, never skips or repeats one.
  ChildProcess consumer([&] {
    after_fork_child();
    std::map<uint32_t, int64_t> last;
    std::string m;
    for (;;) {
      if (q.get(m, Deadline::after(60.0)) != QueueStatus::kOk) return 2;
      if (m == "stop") break;
      uint32_t stream = 0, seq = 0;
      if (!parse(m, stream, seq)) return 3;
      auto it = last.try_emplace(stream, -1).first;
      if (static_cast<int64_t>(seq) != it->second + 1) return 4;
      it->second = seq;
    }
    const auto live = last.find(kLive);
    (void)report.put(u64(live == last.end() ? 0 : static_cast<uint64_t>(live->second + 1)));
    return 0;
  });
  constexpr uint32_t kLiveCount = 4000;
  ChildProcess live([&] {
    after_fork_child();
    for (uint32_t i = 0; i < kLiveCount; ++i) {
      if (q.put(message(kLive, i, 8 + (i * 37) % 1500), Deadline::after(60.0)) !=
          QueueStatus::kOk) {
        return 2;
      }
      if (i % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return 0;
  });
  for (int k = 0; k < kKills; ++k) {
    const uint32_t len_seed = rng();
    const uint64_t puts_before = q.stats().puts;
    ChildProcess victim([&, k, len_seed] {
      after_fork_child();
      std::mt19937 r(len_seed);
      std::vector<std::string> ms;  // built once: the victim spends its time inside put
      for (int j = 0; j < 8; ++j) {
        // One in four out of band (over a quarter of the ring): the kills also land in the
        // heap's allocation, the copy into the block and the commits.
        const size_t len = j % 4 == 0 ? 70000 + r() % 100000 : 8 + r() % 12000;
        ms.push_back(message(static_cast<uint32_t>(k), 0, len));
      }
      for (uint32_t i = 0;; ++i) {
        std::string& m = ms[i % ms.size()];
        set_seq(m, i);
        if (q.put(m) != QueueStatus::kOk) return 2;
      }
    });
    // Kill it once it is putting, at a random instant.
    ASSERT_TRUE(test::wait_until([&] { return q.stats().puts > puts_before + 2; }));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    victim.kill(SIGKILL);
    EXPECT_EQ(victim.wait(std::chrono::seconds(60)), 128 + SIGKILL);
  }
  EXPECT_EQ(live.wait(std::chrono::seconds(120)), 0);
  ASSERT_EQ(q.put("stop", Deadline::after(60.0)), QueueStatus::kOk);
  EXPECT_EQ(consumer.wait(std::chrono::seconds(120)), 0);
  std::string n;
  ASSERT_EQ(report.get(n, Deadline::after(30.0)), QueueStatus::kOk);
  EXPECT_EQ(from_u64(n), kLiveCount);
  const QueueStats s = q.check();
  EXPECT_EQ(s.size, 0u);
  EXPECT_EQ(s.stray_blocks, 0u);  // every block of a dead producer freed or reclaimed
  std::printf("queue: %d producers killed, %llu recoveries, %llu stray blocks\n", kKills,
              static_cast<unsigned long long>(s.recoveries),
              static_cast<unsigned long long>(s.stray_blocks));
  // Still usable by everyone.
  ASSERT_EQ(q.try_put("after"), QueueStatus::kOk);
  std::string m;
  ASSERT_EQ(q.try_get(m), QueueStatus::kOk);
  EXPECT_EQ(m, "after");
}

TEST(QueueProcesses, AConsumerKilledInGetLosesAtMostTheMessageItWasTaking) {
  ScopedRuntimeDir dir;
  const uint32_t seed = static_cast<uint32_t>(::getpid());
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  constexpr uint64_t kMessages = 20000;
  constexpr int kKills = 10;
  Queue q = Queue::create({.ring_bytes = 1 << 20});
  Queue got = Queue::create({.ring_bytes = 1 << 20});  // what the consumers took, in order
  for (uint64_t i = 0; i < kMessages; ++i) ASSERT_EQ(q.put(u64(i)), QueueStatus::kOk);
  for (int k = 0; k < kKills; ++k) {
    ChildProcess consumer([&] {
      after_fork_child();
      std::string m;
      while (q.get(m, Deadline::after(60.0)) == QueueStatus::kOk) {
        if (got.put(m) != QueueStatus::kOk) return 2;
      }
      return 0;
    });
    // Kill it once it is taking messages, at a random instant.
    const uint64_t before = got.stats().puts;
    ASSERT_TRUE(test::wait_until([&] { return got.stats().puts > before || q.empty(); }));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 5000));
    consumer.kill(SIGKILL);
    EXPECT_EQ(consumer.wait(std::chrono::seconds(60)), 128 + SIGKILL);
  }
  std::set<uint64_t> seen;
  std::string m;
  uint64_t taken_by_children = 0;
  while (got.try_get(m) == QueueStatus::kOk) {
    ++taken_by_children;
    EXPECT_TRUE(seen.insert(from_u64(m)).second) << from_u64(m);
  }
  while (q.try_get(m) == QueueStatus::kOk) EXPECT_TRUE(seen.insert(from_u64(m)).second);
  EXPECT_GT(taken_by_children, 0u);
  EXPECT_LE(kMessages - seen.size(), static_cast<uint64_t>(kKills));
  EXPECT_EQ(*seen.rbegin(), kMessages - 1);
  q.check();
  got.check();
}

TEST(QueueProcesses, TheTasksOfAKilledConsumerCountAsDoneSoJoinReturns) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 1 << 16, .joinable = true});
  for (int i = 0; i < 5; ++i) ASSERT_EQ(q.put(u64(i)), QueueStatus::kOk);
  // A consumer that takes two messages and hangs without marking them done.
  ChildProcess holder([&] {
    after_fork_child();
    std::string m;
    if (q.get(m) != QueueStatus::kOk || q.get(m) != QueueStatus::kOk) return 2;
    for (;;) ::pause();
  });
  ASSERT_TRUE(test::wait_until([&] { return q.size() == 3; }));
  EXPECT_EQ(q.unfinished(), 5u);
  EXPECT_EQ(q.join(Deadline::after(0.02)), QueueStatus::kTimeout);
  holder.kill(SIGKILL);
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
  EXPECT_EQ(q.unfinished(), 3u);  // its two: done
  std::string m;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(q.get(m), QueueStatus::kOk);
    EXPECT_TRUE(q.task_done());
  }
  EXPECT_EQ(q.join(Deadline::after(60.0)), QueueStatus::kOk);
  EXPECT_FALSE(q.task_done());
  q.check();
}

TEST(QueueProcesses, ConsumersKilledAtRandomInstantsOfGetNeverLeaveJoinWaiting) {
  ScopedRuntimeDir dir;
  const uint32_t seed = static_cast<uint32_t>(::getpid());
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  // Room for every round's messages even if no consumer took any (a put never waits here).
  Queue q = Queue::create({.ring_bytes = 1 << 18, .joinable = true});
  for (int k = 0; k < 10; ++k) {
    for (uint64_t i = 0; i < 300; ++i) {
      // One in ten out of band (a 256 KiB ring's quarter is 64 KiB).
      ASSERT_EQ(q.put(i % 10 == 0 ? std::string(70000, 'b') : u64(i)), QueueStatus::kOk);
    }
    ChildProcess consumer([&] {
      after_fork_child();
      std::string m;
      while (q.get(m, Deadline::after(60.0)) == QueueStatus::kOk) {
        if ((m.size() & 1) == 0) (void)q.task_done();  // some done, some not
      }
      return 0;
    });
    ASSERT_TRUE(test::wait_until([&] { return q.size() < 300; }));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    consumer.kill(SIGKILL);
    EXPECT_EQ(consumer.wait(), 128 + SIGKILL);
  }
  std::string m;
  while (q.try_get(m) == QueueStatus::kOk) EXPECT_TRUE(q.task_done());
  EXPECT_EQ(q.join(Deadline::after(60.0)), QueueStatus::kOk);
  const QueueStats s = q.check();
  EXPECT_EQ(s.stray_blocks, 0u);
}

// Ten consumers, one at a time, SIGKILLed at random instants while they take 2,000 messages
// (every other one 20 KB: out of band) and report each one's number on `got`. Copying
// (hand_out false): a consumer killed in get loses at most the message it was taking. Zero-copy
// (hand_out true): each takes blocks handed out, checks them, reports them and releases them, so
// a kill also lands while it holds a block or is in release. Either way nothing is delivered
// twice, at most one message per kill is lost, and once check() has run (recovery, then the
// reclaim of dead holders) every block is back: no stray block, no hand-out slot left, the
// heap's blocks what they were.
void kill_out_of_band_consumers_at_random(bool hand_out) {
  ScopedRuntimeDir dir;
  const uint32_t seed = static_cast<uint32_t>(::getpid());
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  constexpr uint64_t kMessages = 2000;
  constexpr int kKills = 10;
  Queue q = Queue::create({.ring_bytes = 1 << 16});
  Queue got = Queue::create({.ring_bytes = 1 << 20});
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  auto body = [](uint64_t i) {  // every other message 20 KB: out of band
    std::string m = u64(i);
    if (i % 2 == 1) m.resize(20000, static_cast<char>(i));
    return m;
  };
  for (uint64_t i = 0; i < kMessages; ++i) ASSERT_EQ(q.put(body(i)), QueueStatus::kOk);
  for (int k = 0; k < kKills; ++k) {
    ChildProcess consumer([&] {
      after_fork_child();
      std::vector<QueueMessage> out;
      while (q.get_messages(out, 1, Deadline::after(60.0), false, 0, hand_out) ==
             QueueStatus::kOk) {
        const QueueMessage& msg = out[0];
        const std::string m =
            msg.block == 0
                ? msg.data
                : std::string(reinterpret_cast<const char*>(q.heap().at(msg.block, msg.length)),
                              msg.length);
        const uint64_t i = from_u64(m);
        if (m != body(i)) return 3;
        if (got.put(u64(i)) != QueueStatus::kOk) return 2;
        if (msg.block != 0) q.release(msg.block);
      }
      return 0;
    });
    const uint64_t before = got.stats().puts;
    ASSERT_TRUE(test::wait_until([&] { return got.stats().puts > before || q.empty(); }));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    consumer.kill(SIGKILL);
    EXPECT_EQ(consumer.wait(std::chrono::seconds(60)), 128 + SIGKILL);
  }
  std::set<uint64_t> seen;
  std::string m;
  while (got.try_get(m) == QueueStatus::kOk) EXPECT_TRUE(seen.insert(from_u64(m)).second);
  while (q.try_get(m) == QueueStatus::kOk) {
    EXPECT_EQ(m, body(from_u64(m)));
    EXPECT_TRUE(seen.insert(from_u64(m)).second);
  }
  EXPECT_LE(kMessages - seen.size(), static_cast<uint64_t>(kKills));
  const QueueStats s = q.check();
  EXPECT_EQ(s.stray_blocks, 0u);
  EXPECT_EQ(s.handed_out, 0u);
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks);
  std::printf("queue: %d consumers killed (hand_out %d), %llu lost, %llu recoveries, %llu "
              "hand-outs reclaimed\n",
              kKills, hand_out ? 1 : 0, static_cast<unsigned long long>(kMessages - seen.size()),
              static_cast<unsigned long long>(s.recoveries),
              static_cast<unsigned long long>(s.handouts_reclaimed));
}

TEST(QueueProcesses, AConsumerKilledInGetOfOutOfBandMessagesLosesAtMostOneAndLeaksNothing) {
  kill_out_of_band_consumers_at_random(false);
}

TEST(QueueProcesses, ConsumersKilledWhileHoldingHandedOutBlocksLeakNothing) {
  kill_out_of_band_consumers_at_random(true);
}

// Deterministic, out of band: a producer dies after committing its block but before publishing
// (recovery frees the block, whether or not it stored kIntentCommitted), or while its block is
// still pending (the heap reclaims it); a consumer dies after its consume store, before freeing
// its blocks or after freeing one of two (recovery frees the other, and not the first twice).
TEST(QueueProcesses, OutOfBandBlocksOfAHolderThatDiesBetweenTwoStepsAreFreed) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 1024});
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  QueueHeader* h = header_of(q);
  auto* ring = reinterpret_cast<std::byte*>(h) + sizeof(QueueHeader);
  const std::string big(5000, 'z');
  enum Step { kCommitted, kCommitting, kCommittedStateNot, kConsumed, kOneOfTwoFreed };
  for (Step step : {kCommitted, kCommitting, kCommittedStateNot, kConsumed, kOneOfTwoFreed}) {
    if (step == kConsumed || step == kOneOfTwoFreed) {
      ASSERT_EQ(q.put(big), QueueStatus::kOk);
    }
    if (step == kOneOfTwoFreed) {
      ASSERT_EQ(q.put(big), QueueStatus::kOk);
    }
    ChildProcess child([&] {
      after_fork_child();
      Heap heap = q.heap();
      sync::RobustMutex lock(&h->lock);
      if (step == kConsumed || step == kOneOfTwoFreed) {
        if (!lock.lock().has_value()) return 2;
        const uint64_t head = h->head.load();
        const uint64_t end = head + (step == kConsumed ? 24 : 48);
        h->get_intent_head.store(head);
        h->get_intent_end.store(end);
        h->get_intent_state.store(layout::kIntentFreeing);
        h->head.store(end);
        if (step == kOneOfTwoFreed) {
          layout::OutOfBandRef o;
          std::memcpy(&o, ring + (head + 8) % 1024, 16);
          heap.free(o.ref);  // the first block freed, the second not
        }
      } else {
        const HeapRef ref = heap.allocate_pending(big.size());
        std::memcpy(heap.at(ref, big.size()), big.data(), big.size());
        if (!lock.lock().has_value()) return 2;
        const uint64_t tail = h->tail.load();
        const layout::QueueRecord r{16, layout::record_tag(layout::kRecordOutOfBand)};
        const layout::OutOfBandRef o{ref, big.size()};
        std::memcpy(ring + tail % 1024, &r, 8);
        std::memcpy(ring + (tail + 8) % 1024, &o, 16);
        h->put_intent_tail.store(tail + 24);
        h->put_intent_state.store(layout::kIntentCommitting);
        if (step == kCommitted || step == kCommittedStateNot) heap.commit(ref);
        if (step == kCommitted) h->put_intent_state.store(layout::kIntentCommitted);
      }
      ::kill(::getpid(), SIGKILL);
      return 3;
    });
    EXPECT_EQ(child.wait(), 128 + SIGKILL);
    const QueueStats s = q.check();  // recovery, then the heap's check reclaims pending blocks
    EXPECT_EQ(s.size, 0u) << step;
    EXPECT_EQ(s.stray_blocks, 0u) << step;
    EXPECT_EQ(q.heap().stats().live_blocks, base_blocks) << step;
  }
  EXPECT_EQ(q.stats().recoveries, 5u);
  ASSERT_EQ(q.put(big), QueueStatus::kOk);
  std::string m;
  ASSERT_EQ(q.get(m), QueueStatus::kOk);
  EXPECT_EQ(m, big);
}

// Deterministic: a child dies holding the lock between two steps of put (the record written,
// tail not stored; and tail stored, counts not updated) or of get (head stored, counts not).
TEST(QueueProcesses, AHolderThatDiesBetweenTwoStepsIsRepairedByTheNext) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 1024});
  ASSERT_EQ(q.put("first"), QueueStatus::kOk);
  QueueHeader* h = header_of(q);
  auto* ring = reinterpret_cast<std::byte*>(h) + sizeof(QueueHeader);
  enum Step { kRecordWritten, kTailStored, kHeadStored };
  for (Step step : {kRecordWritten, kTailStored, kHeadStored}) {
    ChildProcess child([&] {
      after_fork_child();
      sync::RobustMutex lock(&h->lock);
      if (!lock.lock().has_value()) return 2;
      const uint64_t tail = h->tail.load();
      if (step == kRecordWritten || step == kTailStored) {
        const layout::QueueRecord r{6, layout::record_tag(layout::kRecordBytes)};
        std::memcpy(ring + tail % 1024, &r, 8);
        std::memcpy(ring + (tail + 8) % 1024, "second", 6);
        if (step == kTailStored) h->tail.store(tail + 16);
      } else {
        h->head.store(h->head.load() + 16);  // takes "first" (a span of 16), counts stale
      }
      ::kill(::getpid(), SIGKILL);
      return 3;
    });
    EXPECT_EQ(child.wait(), 128 + SIGKILL);
    const QueueStats s = q.check();  // takes the lock: recovery runs first
    switch (step) {
      case kRecordWritten:
        EXPECT_EQ(s.size, 1u);  // the half-put message is not there
        break;
      case kTailStored:
        EXPECT_EQ(s.size, 2u);  // published: it is there, the counts repaired
        break;
      case kHeadStored:
        EXPECT_EQ(s.size, 1u);  // the dead consumer took "first"
        break;
    }
  }
  EXPECT_EQ(q.stats().recoveries, 3u);
  std::string m;
  ASSERT_EQ(q.try_get(m), QueueStatus::kOk);
  EXPECT_EQ(m, "second");
  EXPECT_EQ(q.try_get(m), QueueStatus::kEmpty);
  q.check();
}

TEST(QueueProcesses, ASleepingConsumerIsWokenByAProducerInAnotherProcess) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  Queue back = Queue::create({.ring_bytes = 4096});
  ChildProcess echo([&] {
    after_fork_child();
    std::string m;
    for (int i = 0; i < 200; ++i) {
      if (q.get(m, Deadline::after(60.0)) != QueueStatus::kOk) return 2;
      if (back.put(m) != QueueStatus::kOk) return 3;
    }
    return 0;
  });
  std::string m;
  for (int i = 0; i < 200; ++i) {
    if (i % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // sleepers
    ASSERT_EQ(q.put(u64(i)), QueueStatus::kOk);
    ASSERT_EQ(back.get(m, Deadline::after(60.0)), QueueStatus::kOk);
    EXPECT_EQ(from_u64(m), static_cast<uint64_t>(i));
  }
  EXPECT_EQ(echo.wait(), 0);
}

// Zero-copy receive: a consumer SIGKILLed while it holds a handed-out block (after its get
// returned) leaves a hand-out slot naming a dead process, and the block is freed by the next
// reclaim, while the queue lives: check(), an out-of-band put, or reclaim_handouts(). A live
// holder's block is never reclaimed, not even by a recovery after another process's death.
TEST(QueueProcesses, AConsumerKilledHoldingAHandedOutBlockHasItFreedByTheNextReclaim) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  Queue ready = Queue::create({.ring_bytes = 4096});
  const uint64_t base_bytes = q.heap().stats().live_bytes;
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  const std::string big = message(1, 1, 1 << 20);
  enum Trigger { kCheck, kPut, kReclaim };
  for (Trigger trigger : {kCheck, kPut, kReclaim}) {
    ASSERT_EQ(q.put(big), QueueStatus::kOk);
    ChildProcess holder([&] {
      after_fork_child();
      std::vector<QueueMessage> out;
      if (q.get_messages(out, 1, Deadline::after(60.0), false, 0, true) != QueueStatus::kOk ||
          out.size() != 1 || out[0].block == 0) {
        return 2;
      }
      const auto* p = reinterpret_cast<const char*>(q.heap().at(out[0].block, big.size()));
      if (std::string(p, big.size()) != big) return 3;
      if (ready.put("held") != QueueStatus::kOk) return 4;
      pause();  // holds the block until killed
      return 0;
    });
    std::string m;
    ASSERT_EQ(ready.get(m, Deadline::after(60.0)), QueueStatus::kOk);
    EXPECT_EQ(q.stats().handed_out, 1u) << trigger;
    EXPECT_GT(q.heap().stats().live_bytes, base_bytes + big.size()) << trigger;
    // Alive: neither a reclaim nor a recovery takes its block.
    EXPECT_EQ(q.reclaim_handouts(), 0u);
    ChildProcess dies_holding_the_lock([&] {
      after_fork_child();
      sync::RobustMutex lock(&header_of(q)->lock);
      if (!lock.lock().has_value()) return 2;
      ::kill(::getpid(), SIGKILL);
      return 3;
    });
    EXPECT_EQ(dies_holding_the_lock.wait(), 128 + SIGKILL);
    QueueStats s = q.check();  // recovers, reclaims the dead, checks Q9
    EXPECT_EQ(s.handed_out, 1u) << trigger;
    EXPECT_EQ(s.stray_blocks, 0u) << trigger;
    holder.kill(SIGKILL);
    EXPECT_EQ(holder.wait(), 128 + SIGKILL);
    EXPECT_EQ(q.stats().handed_out, 1u) << trigger;  // nothing has looked yet
    switch (trigger) {
      case kCheck:
        s = q.check();
        EXPECT_EQ(s.handed_out, 0u);
        EXPECT_EQ(s.stray_blocks, 0u);
        break;
      case kPut: {
        // An out-of-band put reclaims at most every 100 ms per queue; this test's own puts
        // stamped the clock just now, so forget that stamp rather than sleep.
        header_of(q)->handouts.scanned_ns.store(0);
        const std::string other = message(2, 2, 1 << 20);
        ASSERT_EQ(q.put(other), QueueStatus::kOk);
        EXPECT_EQ(q.stats().handed_out, 0u);
        ASSERT_EQ(q.get(m), QueueStatus::kOk);
        EXPECT_EQ(m, other);
        break;
      }
      case kReclaim:
        EXPECT_EQ(q.reclaim_handouts(), 1u);
        break;
    }
    EXPECT_EQ(q.heap().stats().live_bytes, base_bytes) << trigger;
    EXPECT_EQ(q.heap().stats().live_blocks, base_blocks) << trigger;
    EXPECT_EQ(q.check().stray_blocks, 0u) << trigger;
  }
  EXPECT_EQ(q.stats().handouts_reclaimed, 3u);
}

// Deterministic: a consumer dies holding the lock between two steps of a hand-out or of a
// release. Claimed, not consumed: the message is still in the queue and its claim is cleared
// (else a reclaim would free a block the ring names). Claimed and consumed: recovery frees the
// block with the get intent. Release cut after its free, before its clear: the memory may be
// someone's pending block already (a put allocated it meanwhile), and recovery clears the
// slot without freeing it a second time. Release cut before its free: a dead holder's slot.
TEST(QueueProcesses, AHandOutOrAReleaseCutBetweenTwoStepsIsRepairedWithoutADoubleFree) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 1024});
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  QueueHeader* h = header_of(q);
  auto* ring = reinterpret_cast<std::byte*>(h) + sizeof(QueueHeader);
  const std::string big = message(3, 3, 5000), next = message(4, 4, 5000);
  enum Step { kClaimed, kClaimedAndConsumed, kReleaseFreed, kReleaseNotFreed };
  for (Step step : {kClaimed, kClaimedAndConsumed, kReleaseFreed, kReleaseNotFreed}) {
    ASSERT_EQ(q.put(big), QueueStatus::kOk);
    ChildProcess child([&] {
      after_fork_child();
      Heap heap = q.heap();
      sync::RobustMutex lock(&h->lock);
      const uint64_t me = uint64_t{sync::self_pid()} << 32 | sync::self_tag();
      if (step == kClaimed || step == kClaimedAndConsumed) {
        if (!lock.lock().has_value()) return 2;
        const uint64_t head = h->head.load();
        layout::OutOfBandRef o;
        std::memcpy(&o, ring + (head + 8) % 1024, 16);
        h->get_intent_head.store(head);
        h->get_intent_end.store(head + 24);
        h->get_intent_state.store(layout::kIntentFreeing);
        h->handouts.slots[7].block.store(o.ref);
        h->handouts.slots[7].owner.store(me);
        if (step == kClaimedAndConsumed) h->head.store(head + 24);
      } else {
        std::vector<QueueMessage> out;
        if (q.get_messages(out, 1, Deadline::never(), false, 0, true) != QueueStatus::kOk ||
            out[0].block == 0) {
          return 4;
        }
        if (!lock.lock().has_value()) return 2;
        if (step == kReleaseFreed) heap.free(out[0].block);  // Queue::release's first step
      }
      ::kill(::getpid(), SIGKILL);
      return 3;
    });
    EXPECT_EQ(child.wait(), 128 + SIGKILL);
    EXPECT_EQ(q.stats().handed_out, 1u) << step;  // a slot names the dead child
    std::string m;
    if (step == kReleaseFreed) {
      HeapRef freed = 0;
      for (const layout::QueueHandout& slot : h->handouts.slots) {
        if (slot.owner.load() != 0) freed = slot.block.load();
      }
      // Allocated (pending) before the lock is taken: the heap hands the freed memory back
      // (first fit), the case this step is for; then the lock, recovery (the stale slot
      // cleared, this pending block not freed), the publish.
      ASSERT_EQ(q.put(next), QueueStatus::kOk);
      layout::OutOfBandRef o;
      std::memcpy(&o, ring + (h->tail.load() - 16) % 1024, 16);
      EXPECT_EQ(o.ref, freed);
    }
    const QueueStats s = q.check();
    EXPECT_EQ(s.handed_out, 0u) << step;
    EXPECT_EQ(s.stray_blocks, 0u) << step;
    switch (step) {
      case kClaimed:
        ASSERT_EQ(s.size, 1u);
        ASSERT_EQ(q.get(m), QueueStatus::kOk);
        EXPECT_EQ(m, big);  // the block was not freed under the message
        break;
      case kReleaseFreed:
        ASSERT_EQ(s.size, 1u);
        ASSERT_EQ(q.get(m), QueueStatus::kOk);
        EXPECT_EQ(m, next);
        break;
      default:
        EXPECT_EQ(s.size, 0u) << step;
    }
    EXPECT_EQ(q.heap().stats().live_blocks, base_blocks) << step;
    EXPECT_EQ(q.check().stray_blocks, 0u) << step;
  }
  EXPECT_EQ(q.stats().recoveries, 4u);
}

// Unread messages, out-of-band ones included (they grew the heap by extents), go with the queue
// when its last holder is SIGKILLed: the broker lists none of its objects afterwards.
// Fork: a holder of a handed-out block shares it (share_handout) and forks; the child adopts the
// kept slot (adopt_handout) and co-owns the block. The holder then releases it, or is SIGKILLed
// and reclaimed: the block stays allocated (puts and gets of big messages meanwhile cannot reuse
// its memory) and the child reads the bytes it was handed. The child then releases it (freed at
// once) or dies (freed by the next reclaim).
TEST(QueueProcesses, AForkedChildCoOwnsAHandedOutBlockUntilItReleasesOrDies) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  Queue ready = Queue::create({.ring_bytes = 4096});
  Queue cmd = Queue::create({.ring_bytes = 4096});
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  const std::string big = message(5, 5, 1 << 20);
  enum Holder { kReleases, kKilled };
  enum Child { kChildReleases, kChildDies };
  for (Holder hv : {kReleases, kKilled}) {
    for (Child cv : {kChildReleases, kChildDies}) {
      SCOPED_TRACE(std::to_string(hv) + "/" + std::to_string(cv));
      ASSERT_EQ(q.put(big), QueueStatus::kOk);
      ChildProcess holder([&] {
        after_fork_child();
        std::vector<QueueMessage> out;
        if (q.get_messages(out, 1, Deadline::after(60.0), false, 0, true) != QueueStatus::kOk ||
            out[0].block == 0) {
          return 2;
        }
        const HeapRef b = out[0].block;
        const uint32_t slot = q.share_handout(b);
        if (slot >= layout::kQueueHandoutSlots) return 3;
        const pid_t pid = ::fork();
        if (pid < 0) return 4;
        if (pid == 0) {
          after_fork_child();
          int code = 10;
          if (q.adopt_handout(slot, b) && ready.put("adopted") == QueueStatus::kOk) {
            std::string c;
            code = 11;
            if (cmd.get(c, Deadline::after(60.0)) == QueueStatus::kOk) {
              const auto* p = reinterpret_cast<const char*>(q.heap().at(b, big.size()));
              code = std::string(p, big.size()) == big ? 0 : 12;
              if (code == 0 && c == "release") q.release(b);
              (void)ready.put(code == 0 ? "same" : "changed");
            }
          }
          ::_exit(code);
        }
        if (hv == kReleases) q.release(b);  // maybe before the child adopted: the slot is kept
        if (ready.put(u64(static_cast<uint64_t>(pid))) != QueueStatus::kOk) return 5;
        pause();
        return 0;
      });
      std::string m, adopted;
      ASSERT_EQ(ready.get(m, Deadline::after(60.0)), QueueStatus::kOk);
      ASSERT_EQ(ready.get(adopted, Deadline::after(60.0)), QueueStatus::kOk);
      if (m == "adopted") std::swap(m, adopted);  // the two reports, in either order
      ASSERT_EQ(adopted, "adopted");
      const pid_t child = static_cast<pid_t>(from_u64(m));
      holder.kill(SIGKILL);
      EXPECT_EQ(holder.wait(), 128 + SIGKILL);
      QueueStats s = q.check();  // the holder's slot reclaimed (unless released), not the block
      EXPECT_EQ(s.handed_out, 1u);
      EXPECT_EQ(s.handouts_kept, 0u);
      EXPECT_EQ(s.stray_blocks, 0u);
      EXPECT_EQ(q.heap().stats().live_blocks, base_blocks + 1);
      for (uint32_t i = 0; i < 3; ++i) {  // would reuse the block's memory had it been freed
        const std::string other = message(6, i, 1 << 20);
        header_of(q)->handouts.scanned_ns.store(0);  // each put reclaims
        ASSERT_EQ(q.put(other), QueueStatus::kOk);
        ASSERT_EQ(q.get(m), QueueStatus::kOk);
        EXPECT_EQ(m, other);
      }
      ASSERT_EQ(cmd.put(cv == kChildReleases ? "release" : "die"), QueueStatus::kOk);
      ASSERT_EQ(ready.get(m, Deadline::after(60.0)), QueueStatus::kOk);
      EXPECT_EQ(m, "same");  // the child's bytes never changed
      if (cv == kChildReleases) {
        EXPECT_EQ(q.stats().handed_out, 0u);  // freed by the child's release
      }
      // The child, reparented, exits (a zombie or reaped: gone either way); its slot, if any,
      // is reclaimed.
      EXPECT_TRUE(test::wait_until([&] { return sync::process_gone(child, 0); },
                                   std::chrono::seconds(60)));
      s = q.check();
      EXPECT_EQ(s.handed_out, 0u);
      EXPECT_EQ(s.stray_blocks, 0u);
      EXPECT_EQ(q.heap().stats().live_blocks, base_blocks);
    }
  }
}

// Deaths between the fork steps: a holder that shared a block and died before forking (or
// whose child died before adopting) leaves a kept slot: no reclaim frees the block (a child
// might still adopt it), so it stays allocated, accounted, until the queue is freed. Two dead
// co-owners: one reclaim clears both and frees the block once.
TEST(QueueProcesses, AKeptSlotOutlivesItsHolderAndDeadCoOwnersFreeTheirBlockOnce) {
  ScopedRuntimeDir dir;
  Queue q = Queue::create({.ring_bytes = 4096});
  const uint64_t base_blocks = q.heap().stats().live_blocks;
  const std::string big = message(7, 7, 1 << 20);
  ASSERT_EQ(q.put(big), QueueStatus::kOk);
  ChildProcess sharer([&] {
    after_fork_child();
    std::vector<QueueMessage> out;
    if (q.get_messages(out, 1, Deadline::after(60.0), false, 0, true) != QueueStatus::kOk ||
        out[0].block == 0) {
      return 2;
    }
    if (q.share_handout(out[0].block) >= layout::kQueueHandoutSlots) return 3;
    ::kill(::getpid(), SIGKILL);  // before its fork
    return 4;
  });
  EXPECT_EQ(sharer.wait(), 128 + SIGKILL);
  QueueStats s = q.check();
  EXPECT_EQ(s.handed_out, 1u);  // its own slot reclaimed, the kept one stays
  EXPECT_EQ(s.handouts_kept, 1u);
  EXPECT_EQ(s.stray_blocks, 0u);
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks + 1);
  EXPECT_EQ(q.reclaim_handouts(), 0u);

  // Two dead co-owners of one block (hand-written: what a holder and its adopted child leave).
  ASSERT_EQ(q.put(big), QueueStatus::kOk);
  uint64_t dead[2];
  for (uint64_t& d : dead) {
    ChildProcess c([] { return 0; });
    d = uint64_t(static_cast<uint32_t>(c.pid())) << 32;  // tag 0: judged by pid alone
    EXPECT_EQ(c.wait(), 0);
  }
  std::vector<QueueMessage> out;
  ASSERT_EQ(q.get_messages(out, 1, Deadline::never(), false, 0, true), QueueStatus::kOk);
  const HeapRef b = out[0].block;
  ASSERT_NE(b, 0u);
  QueueHeader* h = header_of(q);
  for (layout::QueueHandout& slot : h->handouts.slots) {  // this process's claim becomes dead[0]'s
    if (slot.owner.load() == (uint64_t{sync::self_pid()} << 32 | sync::self_tag())) {
      slot.owner.store(dead[0]);
    }
  }
  h->handouts.slots[200].block.store(b);
  h->handouts.slots[200].owner.store(dead[1]);
  EXPECT_EQ(q.stats().handed_out, 3u);
  EXPECT_EQ(q.reclaim_handouts(), 2u);
  s = q.check();
  EXPECT_EQ(s.handed_out, 1u);  // the kept slot
  EXPECT_EQ(s.stray_blocks, 0u);
  EXPECT_EQ(q.heap().stats().live_blocks, base_blocks + 1);
}

TEST(QueueProcesses, NothingIsLeftWhenTheLastHolderIsKilledWithUnreadMessages) {
  ScopedRuntimeDir dir;
  test::HandlePipe pipe;
  ChildProcess child([&] {
    after_fork_child();
    Queue q = Queue::create({.ring_bytes = 4096});
    for (int i = 0; i < 4; ++i) {
      if (q.put(std::string(3 << 20, static_cast<char>('a' + i))) != QueueStatus::kOk) return 2;
      if (q.put("small") != QueueStatus::kOk) return 2;
    }
    pipe.send(test::heap_object_handles(q.heap()));
    pause();
    return 0;
  });
  test::expect_freed_after_kill(child, pipe.receive());
}

}  // namespace
}  // namespace shoal
