// facade_tun: the kernel side of facade's TUN device. Mechanism only: open a TUN fd, read packets in
// batches when the fd is readable, write batches, close. Names, defaults, backpressure policy and error
// wording live in src/net/tun.ts.
//
// Reads are driven by a uv_poll handle on the non-blocking fd, on the main thread: a wake-up drains up
// to `maxPackets` packets (or until EAGAIN, or until the caller's buffer has no room for one more
// largest-possible packet) into one caller-owned buffer and calls JS once with the count. No thread
// pool, no per-packet JS call, no per-packet allocation.

#include <napi.h>
#include <uv.h>

#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <string>

namespace facade {
namespace {

// Size of struct virtio_net_hdr (without num_buffers), which IFF_VNET_HDR puts before every packet.
constexpr int kVnetHdrSize = 10;

// libuv names the portable errnos; a TUN also returns Linux-only ones (EBADFD once its device is gone).
const char* ErrnoName(int err) {
  switch (err) {
    case EBADFD:
      return "EBADFD";
    case ENOTTY:
      return "ENOTTY";
    case ENOMEM:
      return "ENOMEM";
    default:
      return uv_err_name(-err);
  }
}

}  // namespace

Napi::Error SystemError(Napi::Env env, int err, const char* syscall) {
  std::string message = std::string(syscall) + ": " + strerror(err);
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("errno", Napi::String::New(env, ErrnoName(err)));
  error.Set("code", Napi::String::New(env, ErrnoName(err)));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

void ThrowSystemError(Napi::Env env, int err, const char* syscall) {
  SystemError(env, err, syscall).ThrowAsJavaScriptException();
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (!info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), "fd must be a number").ThrowAsJavaScriptException();
    return false;
  }
  *fd = info[i].As<Napi::Number>().Int32Value();
  if (*fd < 0) {
    Napi::RangeError::New(info.Env(), "fd must be >= 0").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

namespace {

// open(name: string, flags: {multiQueue?, vnetHdr?}) -> {fd, name}
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    Napi::TypeError::New(env, "name must be a string").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.size() >= IFNAMSIZ) {
    Napi::RangeError::New(env, "name is longer than 15 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  bool multiQueue = false;
  bool vnetHdr = false;
  if (info[1].IsObject()) {
    Napi::Object flags = info[1].As<Napi::Object>();
    multiQueue = flags.Get("multiQueue").ToBoolean().Value();
    vnetHdr = flags.Get("vnetHdr").ToBoolean().Value();
  }

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ThrowSystemError(env, errno, "open /dev/net/tun");
    return env.Undefined();
  }

  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (multiQueue) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  if (vnetHdr) ifr.ifr_flags |= IFF_VNET_HDR;
  // An empty name lets the kernel pick tun%d.
  memcpy(ifr.ifr_name, name.data(), name.size());

  const char* failed = nullptr;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    failed = "ioctl TUNSETIFF";
  } else if (vnetHdr) {
    int size = kVnetHdrSize;
    // With offloads on, the kernel hands over GSO super-packets (up to 64 KiB) with a virtio header
    // describing how to segment them, and accepts the same on write: one syscall per 64 KiB.
    unsigned int offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) {
      failed = "ioctl TUNSETVNETHDRSZ";
    } else if (ioctl(fd, TUNSETOFFLOAD, offloads) < 0) {
      failed = "ioctl TUNSETOFFLOAD";
    }
  }
  if (failed != nullptr) {
    int err = errno;
    close(fd);
    ThrowSystemError(env, err, failed);
    return env.Undefined();
  }

  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  result.Set("name", Napi::String::New(env, ifr.ifr_name));
  return result;
}

// close(fd)
Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  // Never retry close() on EINTR on Linux: the fd is released either way and may already be reused.
  if (close(fd) < 0 && errno == EBADF) ThrowSystemError(env, EBADF, "close");
  return env.Undefined();
}

// Writes one packet. Returns 1 written, 0 skipped (a per-packet error), -1 stop (EAGAIN), or -2 after
// throwing (the fd is unusable).
int WriteOne(Napi::Env env, int fd, const uint8_t* data, size_t length) {
  for (;;) {
    ssize_t n = write(fd, data, length);
    if (n >= 0) return 1;
    switch (errno) {
      case EINTR:
        continue;
      case EAGAIN:
        return -1;
      case EBADF:
      case EBADFD:  // the device was detached from this fd
        ThrowSystemError(env, errno, "write");
        return -2;
      default:
        // EINVAL (malformed packet or virtio header), EIO (link down), ENOMEM, ...: this packet is lost,
        // the next one may go through.
        return 0;
    }
  }
}

// writePackets(fd, packets: Uint8Array[], count) -> packets written
Napi::Value WritePackets(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  if (!info[1].IsArray() || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "writePackets(fd, packets: Uint8Array[], count: number)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array packets = info[1].As<Napi::Array>();
  uint32_t count = info[2].As<Napi::Number>().Uint32Value();
  if (count > packets.Length()) count = packets.Length();

  uint32_t written = 0;
  for (uint32_t i = 0; i < count; i++) {
    Napi::Value item = packets.Get(i);
    if (!item.IsTypedArray()) {
      Napi::TypeError::New(env, "packets must be Uint8Arrays").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Uint8Array packet = item.As<Napi::Uint8Array>();
    int r = WriteOne(env, fd, packet.Data(), packet.ByteLength());
    if (r == -2) return env.Undefined();
    if (r == -1) break;
    written += r;
  }
  return Napi::Number::New(env, written);
}

// Reader: polls a TUN fd and reads batches into a caller-owned buffer.
//
// new Reader(fd, buffer, offsets, lengths, headroom, maxPackets, maxRead, callback)
//   callback(count: number, error?: Error) is called once per wake-up that read something or failed.
// start() / stop() / close() / ref() / unref()
//
// Lifetime: the uv_poll_t is heap-allocated and freed in its close callback, never before libuv is done
// with it. While polling, the wrapper holds a strong reference to itself so it cannot be collected
// between wake-ups; the buffer, arrays and callback are held by references until close(). The fd is
// not owned: the caller closes it after close().
class Reader : public Napi::ObjectWrap<Reader> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Reader",
                       {
                           InstanceMethod("start", &Reader::Start),
                           InstanceMethod("stop", &Reader::Stop),
                           InstanceMethod("close", &Reader::CloseMethod),
                           InstanceMethod("ref", &Reader::RefMethod),
                           InstanceMethod("unref", &Reader::UnrefMethod),
                       });
  }

  explicit Reader(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<Reader>(info), async_context_(info.Env(), "facade:TunReader") {
    Napi::Env env = info.Env();
    if (!ArgFd(info, 0, &fd_)) return;
    if (!info[1].IsBuffer() || !info[2].IsTypedArray() || !info[3].IsTypedArray() ||
        !info[4].IsNumber() || !info[5].IsNumber() || !info[6].IsNumber() || !info[7].IsFunction()) {
      Napi::TypeError::New(env,
                           "new Reader(fd, buffer: Buffer, offsets: Uint32Array, lengths: Uint32Array, "
                           "headroom, maxPackets, maxRead, callback)")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Buffer<uint8_t> buffer = info[1].As<Napi::Buffer<uint8_t>>();
    Napi::TypedArray offsets = info[2].As<Napi::TypedArray>();
    Napi::TypedArray lengths = info[3].As<Napi::TypedArray>();
    if (offsets.TypedArrayType() != napi_uint32_array || lengths.TypedArrayType() != napi_uint32_array) {
      Napi::TypeError::New(env, "offsets and lengths must be Uint32Arrays").ThrowAsJavaScriptException();
      return;
    }
    headroom_ = info[4].As<Napi::Number>().Uint32Value();
    max_packets_ = info[5].As<Napi::Number>().Uint32Value();
    max_read_ = info[6].As<Napi::Number>().Uint32Value();
    if (max_packets_ == 0 || max_read_ == 0) {
      Napi::RangeError::New(env, "maxPackets and maxRead must be > 0").ThrowAsJavaScriptException();
      return;
    }
    if (offsets.ElementLength() < max_packets_ || lengths.ElementLength() < max_packets_) {
      Napi::RangeError::New(env, "offsets and lengths need room for maxPackets entries")
          .ThrowAsJavaScriptException();
      return;
    }
    if (buffer.Length() < static_cast<size_t>(headroom_) + max_read_) {
      Napi::RangeError::New(env, "buffer is smaller than headroom + maxRead").ThrowAsJavaScriptException();
      return;
    }
    buffer_ = Napi::Persistent(buffer.As<Napi::Object>());
    offsets_ = Napi::Persistent(offsets.As<Napi::Object>());
    lengths_ = Napi::Persistent(lengths.As<Napi::Object>());
    callback_ = Napi::Persistent(info[7].As<Napi::Function>());

    handle_ = new uv_poll_t;
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    int status = uv_poll_init(loop, handle_, fd_);
    if (status != 0) {
      // Never initialised, so libuv knows nothing of it: plain delete, no uv_close.
      delete handle_;
      handle_ = nullptr;
      ThrowSystemError(env, -status, "uv_poll_init");
      return;
    }
    handle_->data = this;
  }

  ~Reader() override { CloseHandle(); }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (handle_ == nullptr) {
      Napi::Error::New(env, "reader is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!polling_) {
      int status = uv_poll_start(handle_, UV_READABLE, OnReadable);
      if (status != 0) {
        ThrowSystemError(env, -status, "uv_poll_start");
        return env.Undefined();
      }
      polling_ = true;
      Ref();
    }
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPolling();
    return info.Env().Undefined();
  }

  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    CloseHandle();
    buffer_.Reset();
    offsets_.Reset();
    lengths_.Reset();
    callback_.Reset();
    return info.Env().Undefined();
  }

  Napi::Value RefMethod(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value UnrefMethod(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  void StopPolling() {
    if (!polling_) return;
    polling_ = false;
    // uv_poll_stop also removes the fd from epoll at once, so the caller may close the fd right after.
    uv_poll_stop(handle_);
    Unref();
  }

  void CloseHandle() {
    if (handle_ == nullptr) return;
    StopPolling();
    // Detach first: a wake-up already queued for this handle must not reach a freed Reader.
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_),
             [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
    handle_ = nullptr;
  }

  static void OnReadable(uv_poll_t* handle, int status, int /* events */) {
    Reader* reader = static_cast<Reader*>(handle->data);
    if (reader == nullptr) return;
    reader->Drain(status);
  }

  void Drain(int status) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    uint8_t* data = buffer_.Value().As<Napi::Buffer<uint8_t>>().Data();
    size_t size = buffer_.Value().As<Napi::Buffer<uint8_t>>().Length();
    uint32_t* offsets = offsets_.Value().As<Napi::Uint32Array>().Data();
    uint32_t* lengths = lengths_.Value().As<Napi::Uint32Array>().Data();

    uint32_t count = 0;
    int error = 0;
    const char* syscall = nullptr;
    size_t end = 0;
    while (error == 0 && count < max_packets_) {
      size_t start = end + headroom_;
      // Stop while a largest-possible packet still fits: a short buffer would truncate it silently.
      if (start + max_read_ > size) break;
      ssize_t n = read(fd_, data + start, max_read_);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        error = errno;
        syscall = "read";
        break;
      }
      if (n == 0) break;
      offsets[count] = static_cast<uint32_t>(start);
      lengths[count] = static_cast<uint32_t>(n);
      count++;
      end = start + static_cast<size_t>(n);
    }
    // libuv reports EPOLLERR as UV_EBADF and has already stopped the handle. The read above has then
    // failed with the real reason (EBADFD: the device was deleted), which says more; keep that one.
    if (status < 0 && error == 0) {
      error = -status;
      syscall = "uv_poll";
    }
    if (count == 0 && error == 0) return;  // spurious wake-up
    if (error != 0) StopPolling();  // a broken fd stays readable; do not spin on it

    Napi::Object self = Value();
    Napi::Function callback = callback_.Value();
    napi_value args[2] = {Napi::Number::New(env, count), env.Undefined()};
    if (error != 0) args[1] = SystemError(env, error, syscall).Value();
    // MakeCallback (not Call) so process.nextTick callbacks and promise jobs queued by the handler run
    // before we return to libuv, as for any Node I/O callback.
    callback.MakeCallback(self, error != 0 ? 2 : 1, args, async_context_);
    if (env.IsExceptionPending()) {
      // A throwing handler is an uncaught exception of the process, as in an 'data' listener.
      Napi::Error err = env.GetAndClearPendingException();
      napi_fatal_exception(env, err.Value());
    }
  }

  int fd_ = -1;
  uint32_t headroom_ = 0;
  uint32_t max_packets_ = 0;
  uint32_t max_read_ = 0;
  bool polling_ = false;
  uv_poll_t* handle_ = nullptr;
  Napi::ObjectReference buffer_;
  Napi::ObjectReference offsets_;
  Napi::ObjectReference lengths_;
  Napi::FunctionReference callback_;
  Napi::AsyncContext async_context_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("writePackets", Napi::Function::New(env, WritePackets, "writePackets"));
  exports.Set("Reader", Reader::Init(env));
  exports.Set("VNET_HDR_SIZE", Napi::Number::New(env, kVnetHdrSize));
  InitSteering(env, exports);
  return exports;
}

}  // namespace
}  // namespace facade

namespace {
Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return facade::Init(env, exports);
}
}  // namespace

NODE_API_MODULE(facade_tun, InitModule)
