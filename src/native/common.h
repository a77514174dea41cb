// What the addon's source files share: Node-shaped system errors and argument checks (defined in tun.cc),
// and each file's export registration.
#pragma once

#include <napi.h>

#include <stddef.h>

namespace facade {

// A JS Error carrying errno name and syscall, the shape Node's own system errors have, so the
// TypeScript side can turn it into a coded FacadeError.
Napi::Error SystemError(Napi::Env env, int err, const char* syscall);
void ThrowSystemError(Napi::Env env, int err, const char* syscall);
// info[i] as a non-negative fd; throws a TypeError/RangeError and returns false otherwise.
bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* fd);

// steering.cc: steeringAttach, steeringSet, steeringDelete, steeringLookup.
void InitSteering(Napi::Env env, Napi::Object exports);

}  // namespace facade
