// Queue steering for a multi-queue TUN: which worker's queue a packet from the kernel goes to.
//
// Mechanism only (src/net/steering.ts is the policy): a BPF hash map from destination address to queue
// index, and a small socket-filter program, attached with TUNSETSTEERINGEBPF, that looks the packet's
// destination up in it. The kernel's tun_ebpf_select_queue takes the program's return value modulo the
// number of queues; an address not in the map (or a packet too short to read) gives 0.
//
// Keys are 16 bytes: an IPv6 destination as it is, an IPv4 one as ::ffff:a.b.c.d. Values are u32 queue
// indexes. Creating the map and loading the program need CAP_BPF (root at start-up); updating the map
// later goes through its fd and needs no capability (Linux ≥ 6.5), so the server sets entries after it
// dropped root.
//
// The program is written out instruction by instruction (no clang, no libbpf at build time): 33 slots.

#include "common.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace facade {
namespace {

constexpr uint32_t kKeySize = 16;

long Bpf(int cmd, union bpf_attr* attr) {
  return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

constexpr bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  return bpf_insn{code, dst, src, off, imm};
}

// The steering program. R6 holds the skb (LD_ABS needs it there); the key is built on the stack at
// fp-16 .. fp-1 in network byte order (LD_ABS returns host order, so each word is swapped back).
int LoadProgram(int map_fd, char* log, uint32_t log_size) {
  constexpr uint8_t kLdAbsB = BPF_LD | BPF_ABS | BPF_B;
  constexpr uint8_t kLdAbsW = BPF_LD | BPF_ABS | BPF_W;
  constexpr uint8_t kToBe = BPF_ALU | BPF_END | BPF_TO_BE;
  const bpf_insn program[] = {
      Insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0),  // 0: r6 = skb
      Insn(kLdAbsB, 0, 0, 0, 0),                                       // 1: r0 = first byte
      Insn(BPF_ALU64 | BPF_RSH | BPF_K, BPF_REG_0, 0, 0, 4),           // 2: r0 = IP version
      Insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 7, 6),             // 3: v6 -> 11
      Insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_0, 0, 26, 4),            // 4: neither -> 31 (queue 0)
      // IPv4: key = ::ffff:<destination>
      Insn(BPF_ST | BPF_MEM | BPF_DW, BPF_REG_10, 0, -16, 0),           // 5: key[0..8) = 0
      Insn(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, -8, static_cast<int32_t>(0xffff0000u)),  // 6: 00 00 ff ff
      Insn(kLdAbsW, 0, 0, 0, 16),                                      // 7: r0 = destination
      Insn(kToBe, BPF_REG_0, 0, 0, 32),                                // 8
      Insn(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, -4, 0),   // 9: key[12..16)
      Insn(BPF_JMP | BPF_JA, 0, 0, 12, 0),                             // 10: -> 23 (lookup)
      // IPv6: key = destination (bytes 24..40)
      Insn(kLdAbsW, 0, 0, 0, 24),                                      // 11
      Insn(kToBe, BPF_REG_0, 0, 0, 32),                                // 12
      Insn(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, -16, 0),  // 13
      Insn(kLdAbsW, 0, 0, 0, 28),                                      // 14
      Insn(kToBe, BPF_REG_0, 0, 0, 32),                                // 15
      Insn(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, -12, 0),  // 16
      Insn(kLdAbsW, 0, 0, 0, 32),                                      // 17
      Insn(kToBe, BPF_REG_0, 0, 0, 32),                                // 18
      Insn(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, -8, 0),   // 19
      Insn(kLdAbsW, 0, 0, 0, 36),                                      // 20
      Insn(kToBe, BPF_REG_0, 0, 0, 32),                                // 21
      Insn(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, -4, 0),   // 22
      // lookup: r0 = map_lookup_elem(map, fp-16)
      Insn(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, map_fd),  // 23 (two slots)
      Insn(0, 0, 0, 0, 0),                                                        // 24
      Insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0),             // 25
      Insn(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -16),                    // 26
      Insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),                // 27
      Insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 2, 0),                        // 28: miss -> 31
      Insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_0, 0, 0),                // 29: r0 = queue
      Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),                                       // 30
      Insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0),                      // 31: queue 0
      Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),                                       // 32
  };
  static const char kLicense[] = "Dual MIT/GPL";
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insns = reinterpret_cast<uint64_t>(program);
  attr.insn_cnt = sizeof(program) / sizeof(program[0]);
  attr.license = reinterpret_cast<uint64_t>(kLicense);
  attr.log_buf = reinterpret_cast<uint64_t>(log);
  attr.log_size = log_size;
  attr.log_level = log_size > 0 ? 1 : 0;
  strncpy(attr.prog_name, "facade_steer", sizeof(attr.prog_name) - 1);
  return static_cast<int>(Bpf(BPF_PROG_LOAD, &attr));
}

bool KeyArg(const Napi::CallbackInfo& info, size_t i, const uint8_t** key) {
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      info[i].As<Napi::Uint8Array>().ElementLength() != kKeySize) {
    Napi::TypeError::New(info.Env(), "key must be a 16-byte Uint8Array").ThrowAsJavaScriptException();
    return false;
  }
  *key = info[i].As<Napi::Uint8Array>().Data();
  return true;
}

// steeringAttach(tunFd, maxEntries) -> mapFd: creates the map, loads the program, attaches it to the
// device behind tunFd. The program fd is closed: the device holds the program, the map fd holds the map.
Napi::Value Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "steeringAttach(tunFd, maxEntries)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int tun_fd = info[0].As<Napi::Number>().Int32Value();
  const uint32_t max_entries = info[1].As<Napi::Number>().Uint32Value();
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_type = BPF_MAP_TYPE_HASH;
  attr.key_size = kKeySize;
  attr.value_size = sizeof(uint32_t);
  attr.max_entries = max_entries;
  strncpy(attr.map_name, "facade_queues", sizeof(attr.map_name) - 1);
  const int map_fd = static_cast<int>(Bpf(BPF_MAP_CREATE, &attr));
  if (map_fd < 0) {
    ThrowSystemError(env, errno, "bpf BPF_MAP_CREATE");
    return env.Undefined();
  }
  static char log[16384];
  log[0] = '\0';
  const int prog_fd = LoadProgram(map_fd, log, sizeof(log));
  if (prog_fd < 0) {
    const int err = errno;
    close(map_fd);
    // The verifier's own words are what a kernel difference needs to be understood.
    Napi::Error error = SystemError(env, err, "bpf BPF_PROG_LOAD");
    error.Set("verifierLog", Napi::String::New(env, log));
    error.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (ioctl(tun_fd, TUNSETSTEERINGEBPF, &prog_fd) < 0) {
    const int err = errno;
    close(prog_fd);
    close(map_fd);
    ThrowSystemError(env, err, "ioctl TUNSETSTEERINGEBPF");
    return env.Undefined();
  }
  close(prog_fd);
  return Napi::Number::New(env, map_fd);
}

// steeringSet(mapFd, key, queue): packets to this address go to that queue.
Napi::Value Set(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int map_fd;
  const uint8_t* key;
  if (!ArgFd(info, 0, &map_fd) || !KeyArg(info, 1, &key)) return env.Undefined();
  if (info.Length() < 3 || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "queue must be a number").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t queue = info[2].As<Napi::Number>().Uint32Value();
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = static_cast<uint32_t>(map_fd);
  attr.key = reinterpret_cast<uint64_t>(key);
  attr.value = reinterpret_cast<uint64_t>(&queue);
  attr.flags = BPF_ANY;
  if (Bpf(BPF_MAP_UPDATE_ELEM, &attr) < 0) ThrowSystemError(env, errno, "bpf BPF_MAP_UPDATE_ELEM");
  return env.Undefined();
}

// steeringDelete(mapFd, key) -> whether the key was there.
Napi::Value Delete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int map_fd;
  const uint8_t* key;
  if (!ArgFd(info, 0, &map_fd) || !KeyArg(info, 1, &key)) return env.Undefined();
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = static_cast<uint32_t>(map_fd);
  attr.key = reinterpret_cast<uint64_t>(key);
  if (Bpf(BPF_MAP_DELETE_ELEM, &attr) < 0) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    ThrowSystemError(env, errno, "bpf BPF_MAP_DELETE_ELEM");
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
}

// steeringLookup(mapFd, key) -> queue or -1 (tests and `facade status` read what the kernel will do).
Napi::Value Lookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int map_fd;
  const uint8_t* key;
  if (!ArgFd(info, 0, &map_fd) || !KeyArg(info, 1, &key)) return env.Undefined();
  uint32_t queue = 0;
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = static_cast<uint32_t>(map_fd);
  attr.key = reinterpret_cast<uint64_t>(key);
  attr.value = reinterpret_cast<uint64_t>(&queue);
  if (Bpf(BPF_MAP_LOOKUP_ELEM, &attr) < 0) {
    if (errno == ENOENT) return Napi::Number::New(env, -1);
    ThrowSystemError(env, errno, "bpf BPF_MAP_LOOKUP_ELEM");
    return env.Undefined();
  }
  return Napi::Number::New(env, queue);
}

}  // namespace

void InitSteering(Napi::Env env, Napi::Object exports) {
  exports.Set("steeringAttach", Napi::Function::New(env, Attach, "steeringAttach"));
  exports.Set("steeringSet", Napi::Function::New(env, Set, "steeringSet"));
  exports.Set("steeringDelete", Napi::Function::New(env, Delete, "steeringDelete"));
  exports.Set("steeringLookup", Napi::Function::New(env, Lookup, "steeringLookup"));
}

}  // namespace facade
