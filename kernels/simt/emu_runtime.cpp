// The emulated device: the CUDA runtime API functions qtrain uses, with the real signatures from
// the real headers, so that emulated binaries never link libcudart. Device memory is host memory;
// every call is synchronous, so streams and events only validate their handles (an event records
// the host time, which makes cudaEventElapsedTime meaningful). Pointers are tracked so that a copy
// in the wrong direction, a double free or a prefetch of non-managed memory fails as it would on
// a GPU. One emulated device, sm_80-like.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "qk/simt.h"
#include "qk/simt_emu_device.h"

namespace qk::emu {
namespace {

enum class mem_kind { device, managed, pinned };

struct allocation {
  size_t size;
  mem_kind kind;
};

struct stream_obj {
  unsigned flags;
};

struct event_obj {
  unsigned flags;
  bool recorded = false;
  std::chrono::steady_clock::time_point when;
};

struct device_state {
  std::mutex mu;
  std::map<uintptr_t, allocation> allocs;  // by start address
  size_t device_bytes = 0;
  std::set<const void*> streams;
  std::set<const void*> events;
  std::unordered_map<const void*, size_t> max_smem;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
};

device_state& dev() {
  static device_state d;
  return d;
}

// 24 GiB, a consumer card; QK_SIMT_DEVICE_MEMORY_MIB overrides it (out-of-memory tests).
size_t total_memory() {
  static const size_t total = [] {
    const char* env = std::getenv("QK_SIMT_DEVICE_MEMORY_MIB");
    return (env ? std::strtoull(env, nullptr, 10) : 24ull * 1024) << 20;
  }();
  return total;
}

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local cudaError_t t_detail_error = cudaSuccess;
thread_local std::string t_detail;
thread_local int t_device = 0;

cudaError_t fail(cudaError_t e) {
  t_last_error = e;
  return e;
}

constexpr size_t kAlign = 256;  // cudaMalloc's alignment

cudaError_t allocate(void** p, size_t size, mem_kind kind) {
  if (p == nullptr) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  if (size == 0) return cudaSuccess;
  device_state& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  const bool counted = kind != mem_kind::pinned;
  if (counted && d.device_bytes + size > total_memory()) return fail(cudaErrorMemoryAllocation);
  void* q = std::aligned_alloc(kAlign, (size + kAlign - 1) / kAlign * kAlign);
  if (q == nullptr) return fail(cudaErrorMemoryAllocation);
  d.allocs[reinterpret_cast<uintptr_t>(q)] = allocation{size, kind};
  if (counted) d.device_bytes += size;
  *p = q;
  return cudaSuccess;
}

cudaError_t release(void* p, bool pinned) {
  if (p == nullptr) return cudaSuccess;
  device_state& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  const auto it = d.allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == d.allocs.end() || (it->second.kind == mem_kind::pinned) != pinned) return fail(cudaErrorInvalidValue);
  if (it->second.kind != mem_kind::pinned) d.device_bytes -= it->second.size;
  d.allocs.erase(it);
  std::free(p);
  return cudaSuccess;
}

// The allocation holding [p, p + n), if any.
std::optional<allocation> find(const void* p, size_t n) {
  device_state& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = d.allocs.upper_bound(a);
  if (it == d.allocs.begin()) return std::nullopt;
  --it;
  if (a + n > it->first + it->second.size) return std::nullopt;
  return it->second;
}

// What a kernel may touch: device, managed and pinned (mapped) memory, not pageable host memory.
bool device_accessible(const void* p, size_t n) { return find(p, n).has_value(); }

cudaError_t copy(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  if (!stream_is_valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (count == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return fail(cudaErrorInvalidValue);
  switch (kind) {
    case cudaMemcpyHostToHost:
    case cudaMemcpyDefault: break;
    case cudaMemcpyHostToDevice:
      if (!device_accessible(dst, count)) return fail(cudaErrorInvalidValue);
      break;
    case cudaMemcpyDeviceToHost:
      if (!device_accessible(src, count)) return fail(cudaErrorInvalidValue);
      break;
    case cudaMemcpyDeviceToDevice:
      if (!device_accessible(dst, count) || !device_accessible(src, count)) return fail(cudaErrorInvalidValue);
      break;
    default: return fail(cudaErrorInvalidMemcpyDirection);
  }
  std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t set(void* p, int value, size_t count, cudaStream_t stream) {
  if (!stream_is_valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (count == 0) return cudaSuccess;
  if (!device_accessible(p, count)) return fail(cudaErrorInvalidValue);
  std::memset(p, value, count);
  return cudaSuccess;
}

bool event_valid(cudaEvent_t e) {
  device_state& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.events.count(e) != 0;
}

struct error_info {
  cudaError_t code;
  const char* name;
  const char* text;
};
constexpr error_info kErrors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument"},
    {cudaErrorInvalidSymbol, "cudaErrorInvalidSymbol", "invalid device symbol"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection", "invalid copy direction for memcpy"},
    {cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction", "invalid device function"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered"},
    {cudaErrorLaunchOutOfResources, "cudaErrorLaunchOutOfResources", "too many resources requested for launch"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorNotPermitted, "cudaErrorNotPermitted", "operation not permitted"},
    {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};

const error_info* lookup(cudaError_t e) {
  for (const auto& info : kErrors)
    if (info.code == e) return &info;
  return nullptr;
}

}  // namespace

void set_launch_error(cudaError_t err, std::string detail) {
  t_last_error = err;
  t_detail_error = err;
  const error_info* info = lookup(err);
  t_detail = std::string(info ? info->text : "error") + ": " + detail;
}

bool stream_is_valid(cudaStream_t stream) {
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) return true;
  device_state& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.streams.count(stream) != 0;
}

size_t max_dynamic_smem(const void* func) {
  device_state& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  const auto it = d.max_smem.find(func);
  return it == d.max_smem.end() ? kDefaultDynamicSmem : it->second;
}

}  // namespace qk::emu

using qk::emu::dev;
using qk::emu::fail;

// ---- Errors --------------------------------------------------------------------------------------
cudaError_t cudaGetLastError() {
  const cudaError_t e = qk::emu::t_last_error;
  qk::emu::t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return qk::emu::t_last_error; }
const char* cudaGetErrorName(cudaError_t error) {
  const auto* info = qk::emu::lookup(error);
  return info ? info->name : "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t error) {
  // The last failed launch's message names the kernel; QK_CHECK_LAUNCH() puts it in its exception.
  if (error != cudaSuccess && error == qk::emu::t_detail_error) return qk::emu::t_detail.c_str();
  const auto* info = qk::emu::lookup(error);
  return info ? info->text : "unrecognized error code";
}

// ---- Device --------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue);
  *device = qk::emu::t_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  qk::emu::t_device = device;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaDeviceReset() { return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int* v) {
  if (v == nullptr) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  if (v == nullptr) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::strncpy(prop->name, "qtrain SIMT emulator (sm_80)", sizeof prop->name - 1);
  prop->totalGlobalMem = qk::emu::total_memory();
  prop->sharedMemPerBlock = qk::emu::kDefaultDynamicSmem;
  prop->sharedMemPerBlockOptin = qk::emu::kMaxDynamicSmemOptin;
  prop->sharedMemPerMultiprocessor = 164 * 1024;
  prop->regsPerBlock = 65536;
  prop->regsPerMultiprocessor = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = qk::emu::kMaxThreadsPerBlock;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->totalConstMem = 65536;
  prop->major = 8;
  prop->minor = 0;
  prop->multiProcessorCount = 4;
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->maxBlocksPerMultiProcessor = 32;
  prop->l2CacheSize = 4 << 20;
  prop->memoryBusWidth = 384;
  prop->managedMemory = 1;
  prop->concurrentManagedAccess = 1;
  prop->unifiedAddressing = 1;
  prop->canMapHostMemory = 1;
  prop->asyncEngineCount = 1;
  prop->concurrentKernels = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(p.sharedMemPerBlock); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(p.sharedMemPerBlockOptin); break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = static_cast<int>(p.sharedMemPerMultiprocessor); break;
    case cudaDevAttrMaxRegistersPerBlock: *value = p.regsPerBlock; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrManagedMemory: *value = 1; break;
    case cudaDevAttrConcurrentManagedAccess: *value = 1; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = p.memoryBusWidth; break;
    default: return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  if (free == nullptr || total == nullptr) return fail(cudaErrorInvalidValue);
  auto& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  *total = qk::emu::total_memory();
  *free = *total - d.device_bytes;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (func == nullptr) return fail(cudaErrorInvalidDeviceFunction);
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize: {
      if (value < 0 || static_cast<size_t>(value) > qk::emu::kMaxDynamicSmemOptin) return fail(cudaErrorInvalidValue);
      auto& d = dev();
      std::lock_guard<std::mutex> lock(d.mu);
      d.max_smem[func] = static_cast<size_t>(value);
      return cudaSuccess;
    }
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      return value >= -1 && value <= 100 ? cudaSuccess : fail(cudaErrorInvalidValue);
    default: return fail(cudaErrorInvalidValue);
  }
}

// ---- Memory --------------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, size_t size) { return qk::emu::allocate(p, size, qk::emu::mem_kind::device); }
cudaError_t cudaMallocAsync(void** p, size_t size, cudaStream_t stream) {
  if (!qk::emu::stream_is_valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  return cudaMalloc(p, size);
}
cudaError_t cudaMallocManaged(void** p, size_t size, unsigned int flags) {
  if (flags != cudaMemAttachGlobal && flags != cudaMemAttachHost) return fail(cudaErrorInvalidValue);
  return qk::emu::allocate(p, size, qk::emu::mem_kind::managed);
}
cudaError_t cudaMallocHost(void** p, size_t size) { return qk::emu::allocate(p, size, qk::emu::mem_kind::pinned); }
cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int) {
  return qk::emu::allocate(p, size, qk::emu::mem_kind::pinned);
}
cudaError_t cudaFree(void* p) { return qk::emu::release(p, false); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream) {
  if (!qk::emu::stream_is_valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  return cudaFree(p);
}
cudaError_t cudaFreeHost(void* p) { return qk::emu::release(p, true); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return qk::emu::copy(dst, src, count, kind, nullptr);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  return qk::emu::copy(dst, src, count, kind, stream);
}
cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count, size_t offset,
                               cudaMemcpyKind kind) {
  if (symbol == nullptr) return fail(cudaErrorInvalidSymbol);
  if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToDevice && kind != cudaMemcpyDefault)
    return fail(cudaErrorInvalidMemcpyDirection);
  if (count) std::memcpy(static_cast<char*>(const_cast<void*>(symbol)) + offset, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t count) { return qk::emu::set(p, value, count, nullptr); }
cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t stream) {
  return qk::emu::set(p, value, count, stream);
}
cudaError_t cudaMemPrefetchAsync(const void* p, size_t count, cudaMemLocation, unsigned int, cudaStream_t stream) {
  if (!qk::emu::stream_is_valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  const auto a = qk::emu::find(p, count);
  if (!a || a->kind != qk::emu::mem_kind::managed) return fail(cudaErrorInvalidValue);
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* p) {
  if (attr == nullptr) return fail(cudaErrorInvalidValue);
  std::memset(attr, 0, sizeof *attr);
  const auto a = qk::emu::find(p, 1);
  attr->device = 0;
  if (!a) {
    attr->type = cudaMemoryTypeUnregistered;
    attr->hostPointer = const_cast<void*>(p);
    return cudaSuccess;
  }
  attr->type = a->kind == qk::emu::mem_kind::device    ? cudaMemoryTypeDevice
               : a->kind == qk::emu::mem_kind::managed ? cudaMemoryTypeManaged
                                                       : cudaMemoryTypeHost;
  attr->devicePointer = const_cast<void*>(p);
  attr->hostPointer = a->kind == qk::emu::mem_kind::device ? nullptr : const_cast<void*>(p);
  return cudaSuccess;
}

// ---- Streams and events --------------------------------------------------------------------------
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (s == nullptr) return fail(cudaErrorInvalidValue);
  auto* obj = new qk::emu::stream_obj{flags};
  *s = reinterpret_cast<cudaStream_t>(obj);
  auto& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  d.streams.insert(obj);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  auto& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  if (d.streams.erase(s) == 0) return fail(cudaErrorInvalidResourceHandle);
  delete reinterpret_cast<qk::emu::stream_obj*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  return qk::emu::stream_is_valid(s) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  return qk::emu::stream_is_valid(s) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  return qk::emu::stream_is_valid(s) && qk::emu::event_valid(e) ? cudaSuccess
                                                                  : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  if (e == nullptr) return fail(cudaErrorInvalidValue);
  auto* obj = new qk::emu::event_obj{flags, false, {}};
  *e = reinterpret_cast<cudaEvent_t>(obj);
  auto& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  d.events.insert(obj);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  auto& d = dev();
  std::lock_guard<std::mutex> lock(d.mu);
  if (d.events.erase(e) == 0) return fail(cudaErrorInvalidResourceHandle);
  delete reinterpret_cast<qk::emu::event_obj*>(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!qk::emu::event_valid(e) || !qk::emu::stream_is_valid(s)) return fail(cudaErrorInvalidResourceHandle);
  auto* obj = reinterpret_cast<qk::emu::event_obj*>(e);
  obj->recorded = true;
  obj->when = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  return qk::emu::event_valid(e) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  return qk::emu::event_valid(e) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr) return fail(cudaErrorInvalidValue);
  if (!qk::emu::event_valid(start) || !qk::emu::event_valid(end)) return fail(cudaErrorInvalidResourceHandle);
  const auto* a = reinterpret_cast<const qk::emu::event_obj*>(start);
  const auto* b = reinterpret_cast<const qk::emu::event_obj*>(end);
  if ((a->flags | b->flags) & cudaEventDisableTiming) return fail(cudaErrorInvalidResourceHandle);
  if (!a->recorded || !b->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(b->when - a->when).count();
  return cudaSuccess;
}
