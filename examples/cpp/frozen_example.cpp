// examples/cpp/frozen_example.cpp — a frozen map built in C++ and read in place by any other
// process (C++ or Python: there it is a shoal.FrozenDict, `shoal.attach(handle)`).
//
//   ./frozen_example               freezes the map below into a sealed segment, prints
//                                  "handle H", waits for a line on stdin (or end of input), exits
//   ./frozen_example HANDLE        attaches and prints what it looks up, one "KEY VALUE" per line
//   ./frozen_example --self-test   freezes, runs itself as a reader of the handle, and checks
//                                  that the reader printed exactly what the creator sees (a test)
//
// The map (Python notation):
//   {"name": "shoal", "answer": 42, "ratio": 0.5, "primes": [2, 3, 5, 7], "big": 2**70,
//    "nested": {"k": [1, "two", 3.0, None, True]}, 7: "seven", 1.5: "one and a half"}
// ("big" is written from its two's complement bytes, as the Python encoder writes any int.)
//
// Reader output, exactly these 14 lines in this order (parsed by tests/python; keep it stable):
//   keys 8                         number of entries
//   name shoal                     str values as their UTF-8 text
//   answer 42                      ints in decimal (big ones too)
//   ratio 0.5                      floats with %.17g
//   primes 2,3,5,7                 list items joined by ","
//   big 1180591620717411303424
//   nested.k.0 1                   nested.k.I: item I of the list under "nested" -> "k"
//   nested.k.1 two
//   nested.k.2 3
//   nested.k.3 None
//   nested.k.4 True
//   seven 7->seven                 lookup by the int key 7
//   seven.float 7.0->seven         the same entry found with the float 7.0 (Python equality)
//   half 1.5->one and a half       lookup by the float key 1.5
//
// A C++ process finds the session a handle names through SHOAL_RUNTIME_DIR, as Python does;
// one that creates objects needs the broker executable: SHOAL_BROKER=/path/to/shoal-broker.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "shoal/frozen.hpp"

namespace {

using shoal::frozen::Builder;
using shoal::frozen::Frozen;
using shoal::frozen::Type;
using shoal::frozen::Value;

Frozen make() {
  Builder b;
  using Ref = Builder::Ref;
  const Ref primes[] = {b.integer(2), b.integer(3), b.integer(5), b.integer(7)};
  std::byte two_pow_70[9] = {};
  two_pow_70[8] = std::byte{0x40};  // 2**70, little-endian two's complement
  const Ref k_items[] = {b.integer(1), b.str("two"), b.floating(3.0), b.none(), b.boolean(true)};
  const Ref k_key[] = {b.str("k")};
  const Ref k_val[] = {b.list(k_items)};
  const Ref nested = b.dict(k_key, k_val);
  const Ref keys[] = {b.str("name"), b.str("answer"), b.str("ratio"), b.str("primes"),
                      b.str("big"), b.str("nested"), b.integer(7), b.floating(1.5)};
  const Ref vals[] = {b.str("shoal"), b.integer(42), b.floating(0.5), b.list(primes),
                      b.big_integer(two_pow_70), nested, b.str("seven"), b.str("one and a half")};
  return b.finish(b.dict(keys, vals));
}

std::string decimal(std::span<const std::byte> twos_complement) {
  std::vector<unsigned> mag;  // bytes of the magnitude
  for (std::byte x : twos_complement) mag.push_back(static_cast<unsigned>(x));
  const bool neg = !mag.empty() && (mag.back() & 0x80);
  if (neg) {
    unsigned carry = 1;
    for (auto& x : mag) {
      x = (~x & 0xFF) + carry;
      carry = x >> 8;
      x &= 0xFF;
    }
  }
  std::string digits;
  for (bool more = true; more;) {
    unsigned rem = 0;
    more = false;
    for (size_t i = mag.size(); i-- > 0;) {
      const unsigned cur = rem * 256 + mag[i];
      mag[i] = cur / 10;
      rem = cur % 10;
      more = more || mag[i] != 0;
    }
    digits.insert(digits.begin(), static_cast<char>('0' + rem));
  }
  return (neg ? "-" : "") + digits;
}

std::string text(const Value& v) {
  char buf[64];
  switch (v.type()) {
    case Type::kNone: return "None";
    case Type::kBool: return v.as_bool() ? "True" : "False";
    case Type::kInt: return std::to_string(v.as_int());
    case Type::kBigInt: return decimal(v.bigint_bytes());
    case Type::kFloat: std::snprintf(buf, sizeof buf, "%.17g", v.as_float()); return buf;
    case Type::kStr: return std::string(v.as_str());
    case Type::kList: {
      std::string s;
      for (uint64_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + text(v[i]);
      return s;
    }
    default: return "<" + std::string(shoal::frozen::type_name(v.type())) + ">";
  }
}

// The reader's lines (the format documented at the top).
std::string describe(const Frozen& f) {
  const Value m = f.root();
  std::string out = "keys " + std::to_string(m.size()) + "\n";
  for (const char* k : {"name", "answer", "ratio", "primes", "big"}) out += std::string(k) + " " + text(m.at(k)) + "\n";
  const Value list = m.at("nested").at("k");
  for (uint64_t i = 0; i < list.size(); ++i) {
    out += "nested.k." + std::to_string(i) + " " + text(list[i]) + "\n";
  }
  out += "seven 7->" + text(m.at(int64_t{7})) + "\n";
  out += "seven.float 7.0->" + text(m.at(7.0)) + "\n";
  out += "half 1.5->" + text(m.at(1.5)) + "\n";
  return out;
}

int self_test(const char* argv0) {
  Frozen f = make();
  const std::string handle = f.handle();
  std::printf("creator: handle %s\n", handle.c_str());
  std::fflush(stdout);
  int fds[2];
  if (::pipe(fds) != 0) return 1;
  const pid_t pid = ::fork();
  if (pid == 0) {  // a fresh process: no inherited mapping, only the handle
    ::dup2(fds[1], STDOUT_FILENO);
    ::execl("/proc/self/exe", argv0, handle.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string out;
  char buf[256];
  for (ssize_t r; (r = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(r));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const std::string expect = describe(f);
  std::printf("reader said:\n%s", out.c_str());
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && out == expect &&
                  out.find("answer 42\n") != std::string::npos &&
                  out.find("primes 2,3,5,7\n") != std::string::npos &&
                  out.find("big 1180591620717411303424\n") != std::string::npos;
  std::printf("%s\n", ok ? "ok: the reader saw the same map" : "MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 2 && std::string(argv[1]) == "--self-test") return self_test(argv[0]);
    if (argc == 2 && argv[1][0] != '-') {
      std::fputs(describe(Frozen::attach(argv[1])).c_str(), stdout);
      return 0;
    }
    if (argc != 1) {
      std::fprintf(stderr, "usage: %s [--self-test | HANDLE]\n", argv[0]);
      return 2;
    }
    Frozen f = make();
    std::printf("handle %s\n", f.handle().c_str());
    std::fflush(stdout);
    std::string line;
    std::getline(std::cin, line);  // the other side is done (a line, or end of input)
    return 0;
  } catch (const shoal::Error& e) {
    std::fprintf(stderr, "frozen_example: %s\n", e.what());
    return 1;
  }
}
