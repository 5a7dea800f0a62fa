// The SIMT emulator's scheduler: runs a grid's blocks one after another, the threads of a block as
// fibers (ucontext) on the launching OS thread. A fiber runs until it reaches a barrier or a warp
// collective; when no fiber can run, the scheduler completes whatever barrier or warp group has all
// its members, and if none has, the launch fails with a message naming the kernel, the block and
// where each thread waits. That makes a missing barrier show up as wrong results and a divergent
// one as an error, never a hang.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "qk/simt.h"
#include "qk/simt_emu_device.h"

constinit thread_local uint3 threadIdx{};
constinit thread_local uint3 blockIdx{};
constinit thread_local dim3 blockDim{};
constinit thread_local dim3 gridDim{};

namespace qk::emu {
namespace {

constexpr size_t kStackBytes = 64 * 1024;
constexpr size_t kSmemCanary = 64;
constexpr unsigned char kCanaryByte = 0xA5;

// Thrown inside a fiber (trap, a bad argument to a collective) and caught at the fiber's base.
struct kernel_fault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class state : uint8_t { runnable, at_block, at_warp, done };

struct fiber {
  ucontext_t ctx;
  uint3 idx;
  unsigned linear;
  state st;
  block_kind bkind;
  int pred;
  int bresult;
  warp_op* op;
  site where;
};

// Fiber stacks and contexts for up to 1024 threads, made once per OS thread and reused by every
// block; a guard page under each stack turns an overflow into a crash rather than corruption.
struct fiber_pool {
  unsigned char* region = nullptr;
  size_t slot = 0;
  std::vector<fiber> fibers;

  fiber_pool() : fibers(kMaxThreadsPerBlock) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    slot = kStackBytes + page;
    const size_t bytes = slot * kMaxThreadsPerBlock;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("SIMT emulator: cannot map fiber stacks");
    region = static_cast<unsigned char*>(p);
    for (int i = 0; i < kMaxThreadsPerBlock; ++i) {
      mprotect(region + i * slot, page, PROT_NONE);
      getcontext(&fibers[i].ctx);  // in place: the context points into itself
    }
  }
  ~fiber_pool() { munmap(region, slot * kMaxThreadsPerBlock); }
  fiber_pool(const fiber_pool&) = delete;
  fiber_pool& operator=(const fiber_pool&) = delete;
  unsigned char* stack(unsigned i) const { return region + i * slot + (slot - kStackBytes); }
};

struct block_run {
  const launch_desc* desc;
  fiber* fibers;
  unsigned n;
  ucontext_t sched;
  bool failed = false;
  std::string error;
  unsigned char* smem = nullptr;
};

thread_local block_run* t_run = nullptr;
thread_local fiber* t_self = nullptr;

struct order_setting {
  thread_order order = thread_order::forward;
  uint64_t seed = 1;
  bool from_env = false;
};
order_setting g_order;

void read_order_env() {
  if (g_order.from_env) return;
  g_order.from_env = true;
  const char* env = std::getenv("QK_SIMT_ORDER");
  if (env == nullptr) return;
  const std::string s(env);
  if (s.rfind("reverse", 0) == 0) g_order.order = thread_order::reverse;
  if (s.rfind("shuffle", 0) == 0) {
    g_order.order = thread_order::shuffle;
    const size_t colon = s.find(':');
    if (colon != std::string::npos) g_order.seed = std::strtoull(s.c_str() + colon + 1, nullptr, 10);
  }
}

std::string where_str(const site& w) {
  const char* f = w.file_name();
  const char* slash = std::strrchr(f, '/');
  return std::string(slash ? slash + 1 : f) + ":" + std::to_string(w.line()) + ":" + std::to_string(w.column());
}

bool same_site(const site& a, const site& b) {
  return a.line() == b.line() && a.column() == b.column() && std::strcmp(a.file_name(), b.file_name()) == 0;
}

const char* kind_name(warp_kind k) {
  switch (k) {
    case warp_kind::shfl_idx: return "__shfl_sync";
    case warp_kind::shfl_up: return "__shfl_up_sync";
    case warp_kind::shfl_down: return "__shfl_down_sync";
    case warp_kind::shfl_xor: return "__shfl_xor_sync";
    case warp_kind::ballot: return "__ballot_sync";
    case warp_kind::any: return "__any_sync";
    case warp_kind::all: return "__all_sync";
    case warp_kind::syncwarp: return "__syncwarp";
    case warp_kind::match_any: return "__match_any_sync";
    case warp_kind::activemask: return "__activemask";
    case warp_kind::ldmatrix_x1: return "ldmatrix.x1";
    case warp_kind::ldmatrix_x2: return "ldmatrix.x2";
    case warp_kind::ldmatrix_x4: return "ldmatrix.x4";
    case warp_kind::ldmatrix_x1_trans: return "ldmatrix.x1.trans";
    case warp_kind::ldmatrix_x2_trans: return "ldmatrix.x2.trans";
    case warp_kind::ldmatrix_x4_trans: return "ldmatrix.x4.trans";
    case warp_kind::mma_bf16: return "mma.sync.m16n8k16 bf16";
    case warp_kind::mma_f16: return "mma.sync.m16n8k16 f16";
  }
  return "?";
}

const char* block_kind_name(block_kind k) {
  switch (k) {
    case block_kind::sync: return "__syncthreads";
    case block_kind::count: return "__syncthreads_count";
    case block_kind::all: return "__syncthreads_and";
    case block_kind::any: return "__syncthreads_or";
  }
  return "?";
}

bool is_shfl(warp_kind k) { return k <= warp_kind::shfl_xor; }
bool is_ldmatrix(warp_kind k) { return k >= warp_kind::ldmatrix_x1 && k <= warp_kind::ldmatrix_x4_trans; }
bool is_mma(warp_kind k) { return k == warp_kind::mma_bf16 || k == warp_kind::mma_f16; }
bool whole_warp(warp_kind k) { return is_ldmatrix(k) || is_mma(k); }
bool same_family(warp_kind a, warp_kind b) { return a == b || (is_shfl(a) && is_shfl(b)); }

std::string thread_str(const fiber& f) {
  return "thread (" + std::to_string(f.idx.x) + "," + std::to_string(f.idx.y) + "," + std::to_string(f.idx.z) +
         ") [warp " + std::to_string(f.linear / 32) + " lane " + std::to_string(f.linear % 32) + "]";
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string waits_str(const fiber& f) {
  switch (f.st) {
    case state::at_block: return std::string("waits in ") + block_kind_name(f.bkind) + " at " + where_str(f.where);
    case state::at_warp:
      return std::string("waits in ") + kind_name(f.op->kind) + " (mask " + hex(f.op->mask) + ") at " +
             where_str(f.where);
    case state::done: return "has exited";
    case state::runnable: return "is runnable";
  }
  return "?";
}

fiber& self(const char* what) {
  if (t_self == nullptr) throw std::logic_error(std::string(what) + " called outside an emulated kernel");
  return *t_self;
}

void suspend(fiber& f) { swapcontext(&f.ctx, &t_run->sched); }

void fiber_main() {
  block_run* run = t_run;
  fiber* f = t_self;
  try {
    run->desc->invoke(run->desc->ctx);
  } catch (const std::exception& e) {
    run->failed = true;
    run->error = thread_str(*f) + ": " + e.what();
  } catch (...) {
    run->failed = true;
    run->error = thread_str(*f) + ": unknown exception";
  }
  f->st = state::done;
  swapcontext(&f->ctx, &run->sched);
  std::abort();  // a finished fiber is never resumed
}

void resume(block_run& run, fiber& f) {
  t_self = &f;
  threadIdx = f.idx;
  swapcontext(&run.sched, &f.ctx);
  t_self = nullptr;
}

constexpr uint64_t kPoison = ~0ull;  // a shuffle from a lane outside the mask: NaN, -1

uint32_t pack16(uint16_t lo, uint16_t hi) { return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16); }

float half_to_float(uint16_t h, bool bf16) {
  if (bf16) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  __half_raw raw;
  raw.x = h;
  return __half2float(__half(raw));
}

// A complete warp group: every lane of `group` waits in a collective of one family.
void complete_warp(block_run& run, fiber* lanes, unsigned group) {
  auto in = [&](int j) { return j >= 0 && j < 32 && ((group >> j) & 1u); };
  const warp_kind kind = [&] {
    for (int j = 0; j < 32; ++j)
      if (in(j)) return lanes[j].op->kind;
    return warp_kind::syncwarp;
  }();

  if (is_shfl(kind)) {
    for (int l = 0; l < 32; ++l) {
      if (!in(l)) continue;
      warp_op& op = *lanes[l].op;
      const int seg = l & ~(op.width - 1);
      const int last = seg + op.width - 1;
      int src = l;
      switch (op.kind) {
        case warp_kind::shfl_idx: src = seg + (op.param & (op.width - 1)); break;
        case warp_kind::shfl_up: src = l - op.param >= seg ? l - op.param : l; break;
        case warp_kind::shfl_down: src = l + op.param <= last ? l + op.param : l; break;
        case warp_kind::shfl_xor: src = (l ^ (op.param & 31)) <= last ? (l ^ (op.param & 31)) : l; break;
        default: break;
      }
      op.out = in(src) ? lanes[src].op->value : kPoison;
    }
    return;
  }

  switch (kind) {
    case warp_kind::ballot:
    case warp_kind::any:
    case warp_kind::all: {
      unsigned bits = 0;
      for (int j = 0; j < 32; ++j)
        if (in(j) && lanes[j].op->param) bits |= 1u << j;
      const uint64_t out = kind == warp_kind::ballot ? bits : kind == warp_kind::any ? (bits != 0) : (bits == group);
      for (int j = 0; j < 32; ++j)
        if (in(j)) lanes[j].op->out = out;
      return;
    }
    case warp_kind::match_any:
      for (int l = 0; l < 32; ++l) {
        if (!in(l)) continue;
        unsigned m = 0;
        for (int j = 0; j < 32; ++j)
          if (in(j) && lanes[j].op->value == lanes[l].op->value) m |= 1u << j;
        lanes[l].op->out = m;
      }
      return;
    case warp_kind::activemask:
      for (int j = 0; j < 32; ++j)
        if (in(j)) lanes[j].op->out = group;
      return;
    case warp_kind::syncwarp: return;
    default: break;
  }

  if (is_ldmatrix(kind)) {
    // Matrix i takes its 8 row addresses from lanes 8i..8i+7. Lane l holds, of each matrix, row l/4,
    // columns 2(l%4) and 2(l%4)+1; with .trans, column l/4, rows 2(l%4) and 2(l%4)+1.
    const bool trans = kind >= warp_kind::ldmatrix_x1_trans;
    const int count = 1 << ((static_cast<int>(kind) - static_cast<int>(trans ? warp_kind::ldmatrix_x1_trans
                                                                                   : warp_kind::ldmatrix_x1)));
    for (int j = 0; j < 8 * count; ++j) {
      const uintptr_t a = reinterpret_cast<uintptr_t>(lanes[j].op->addr);
      if (a == 0 || a % 16 != 0)
        throw kernel_fault(std::string(kind_name(kind)) + ": lane " + std::to_string(j) +
                           " gives a row address that is null or not 16-byte aligned, at " + where_str(lanes[j].where));
    }
    for (int l = 0; l < 32; ++l) {
      const int r = l / 4, c = 2 * (l % 4);
      for (int i = 0; i < count; ++i) {
        const fiber* rows = lanes + 8 * i;
        uint16_t lo, hi;
        if (!trans) {
          const auto* row = static_cast<const uint16_t*>(rows[r].op->addr);
          lo = row[c];
          hi = row[c + 1];
        } else {
          lo = static_cast<const uint16_t*>(rows[c].op->addr)[r];
          hi = static_cast<const uint16_t*>(rows[c + 1].op->addr)[r];
        }
        lanes[l].op->r[i] = pack16(lo, hi);
      }
    }
    return;
  }

  if (is_mma(kind)) {
    // m16n8k16, lane l = 4g + t. A (row-major 16x16): a0..a3 hold rows g, g+8, g, g+8 and columns
    // 2t, 2t+1 (+8 for a2, a3). B (16x8, "col"): b0 rows 2t, 2t+1 and b1 rows 2t+8, 2t+9, column g.
    // C and D: c0, c1 row g, c2, c3 row g+8, columns 2t, 2t+1. Lower 16 bits = lower column/row.
    const bool bf16 = kind == warp_kind::mma_bf16;
    float a[16][16], b[16][8];
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      const warp_op& op = *lanes[l].op;
      const int arow[4] = {g, g + 8, g, g + 8}, acol[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
      for (int i = 0; i < 4; ++i) {
        a[arow[i]][acol[i]] = half_to_float(static_cast<uint16_t>(op.a[i] & 0xffff), bf16);
        a[arow[i]][acol[i] + 1] = half_to_float(static_cast<uint16_t>(op.a[i] >> 16), bf16);
      }
      for (int i = 0; i < 2; ++i) {
        b[2 * t + 8 * i][g] = half_to_float(static_cast<uint16_t>(op.b[i] & 0xffff), bf16);
        b[2 * t + 8 * i + 1][g] = half_to_float(static_cast<uint16_t>(op.b[i] >> 16), bf16);
      }
    }
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      warp_op& op = *lanes[l].op;
      for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + (i % 2);
        float acc = 0.0f;
        for (int k = 0; k < 16; ++k) acc += a[row][k] * b[k][col];
        op.d[i] = op.c[i] + acc;
      }
    }
    return;
  }
  (void)run;
}

// Completes every group of warp `w` whose lanes have all arrived; true when one did.
bool release_warp(block_run& run, unsigned w) {
  bool progressed = false;
  const unsigned base = 32 * w;
  const unsigned count = std::min(32u, run.n - base);
  const unsigned exist = count == 32 ? ~0u : (1u << count) - 1;
  fiber* lanes = run.fibers + base;
  for (unsigned l = 0; l < count; ++l) {
    if (lanes[l].st != state::at_warp) continue;
    const warp_op& op = *lanes[l].op;
    if (op.kind == warp_kind::activemask) {
      // Complete once the rest of the warp cannot run on: the group is whoever is here.
      unsigned here = 0;
      bool settled = true;
      for (unsigned j = 0; j < count; ++j) {
        settled = settled && lanes[j].st != state::runnable;
        if (lanes[j].st == state::at_warp && lanes[j].op->kind == warp_kind::activemask) here |= 1u << j;
      }
      if (!settled) continue;
      complete_warp(run, lanes, here);
      for (unsigned j = 0; j < 32; ++j)
        if ((here >> j) & 1u) lanes[j].st = state::runnable;
      progressed = true;
      continue;
    }
    const unsigned group = whole_warp(op.kind) ? ~0u : op.mask & exist;
    if (whole_warp(op.kind) && exist != ~0u)
      throw kernel_fault(std::string(kind_name(op.kind)) + " in a partial warp of " + std::to_string(count) +
                         " threads, at " + where_str(lanes[l].where));
    bool ready = true;
    for (unsigned j = 0; j < 32 && ready; ++j) {
      if (!((group >> j) & 1u)) continue;
      const fiber& g = lanes[j];
      if (g.st == state::done)
        throw kernel_fault(thread_str(lanes[l]) + " waits in " + kind_name(op.kind) + " (mask " + hex(op.mask) +
                           ") at " + where_str(lanes[l].where) + ", but lane " + std::to_string(j) +
                           " of the mask has exited");
      ready = g.st == state::at_warp && same_family(g.op->kind, op.kind) &&
              (whole_warp(op.kind) || (g.op->mask & exist) == group);
    }
    if (!ready) continue;
    complete_warp(run, lanes, group);
    for (unsigned j = 0; j < 32; ++j)
      if ((group >> j) & 1u) lanes[j].st = state::runnable;
    progressed = true;
  }
  return progressed;
}

bool release_warps(block_run& run) {
  bool progressed = false;
  for (unsigned w = 0; w * 32 < run.n; ++w) progressed |= release_warp(run, w);
  return progressed;
}

// Completes the block barrier when every thread waits in it; true when it did.
bool release_block(block_run& run) {
  const fiber* first = nullptr;
  const fiber* exited = nullptr;
  unsigned waiting = 0;
  for (unsigned i = 0; i < run.n; ++i) {
    const fiber& f = run.fibers[i];
    if (f.st == state::runnable || f.st == state::at_warp) return false;
    if (f.st == state::done) {
      if (!exited) exited = &f;
      continue;
    }
    ++waiting;
    if (!first) {
      first = &f;
    } else if (!same_site(f.where, first->where) || f.bkind != first->bkind) {
      throw kernel_fault("divergent barrier: " + thread_str(*first) + " " + waits_str(*first) + ", " +
                         thread_str(f) + " " + waits_str(f));
    }
  }
  if (!first) return false;
  if (exited)
    throw kernel_fault(std::to_string(waiting) + " of " + std::to_string(run.n) + " threads wait in " +
                       block_kind_name(first->bkind) + " at " + where_str(first->where) + ", but " +
                       thread_str(*exited) + " has exited without reaching it");
  int count = 0;
  for (unsigned i = 0; i < run.n; ++i) count += run.fibers[i].pred != 0;
  int result = 0;
  switch (first->bkind) {
    case block_kind::sync: break;
    case block_kind::count: result = count; break;
    case block_kind::all: result = count == static_cast<int>(run.n); break;
    case block_kind::any: result = count != 0; break;
  }
  for (unsigned i = 0; i < run.n; ++i) {
    run.fibers[i].bresult = result;
    run.fibers[i].st = state::runnable;
  }
  return true;
}

std::string deadlock_message(const block_run& run) {
  std::string msg = "deadlock: no barrier or warp collective can complete;";
  int shown = 0;
  const fiber* last = nullptr;
  for (unsigned i = 0; i < run.n && shown < 6; ++i) {
    const fiber& f = run.fibers[i];
    // One line per run of threads in the same state, to keep the message short.
    if (last && last->st == f.st && (f.st == state::done || same_site(last->where, f.where))) continue;
    msg += " " + thread_str(f) + " " + waits_str(f) + ";";
    last = &f;
    ++shown;
  }
  return msg;
}

// Runs one block to completion; false (with run.error) when it fails. The scheduler always resumes
// the first runnable thread in the current order, and a warp whose collective completes goes on at
// once: the first warp runs ahead of the others up to the next block barrier, as far apart as warps
// can get on a GPU, so a barrier missing between warps gives wrong results.
bool run_block(block_run& run, fiber_pool& pool, std::mt19937_64& rng) {
  const dim3 b = run.desc->block;
  const unsigned n = run.n;
  for (unsigned i = 0; i < n; ++i) {
    fiber& f = run.fibers[i];
    f.idx = uint3{i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
    f.linear = i;
    f.st = state::runnable;
    f.pred = 0;
    f.bresult = 0;
    f.op = nullptr;
    f.ctx.uc_stack.ss_sp = pool.stack(i);
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  std::vector<unsigned> order(n), pos(n);
  auto set_order = [&] {
    for (unsigned i = 0; i < n; ++i) order[i] = i;
    if (g_order.order == thread_order::reverse) std::reverse(order.begin(), order.end());
    if (g_order.order == thread_order::shuffle) std::shuffle(order.begin(), order.end(), rng);
    for (unsigned p = 0; p < n; ++p) pos[order[p]] = p;
  };
  set_order();

  try {
    unsigned cursor = 0;
    for (;;) {
      unsigned p = n;
      for (unsigned k = 0; k < n; ++k) {
        const unsigned q = (cursor + k) % n;
        if (run.fibers[order[q]].st == state::runnable) {
          p = q;
          break;
        }
      }
      if (p < n) {
        fiber& f = run.fibers[order[p]];
        cursor = p;
        resume(run, f);
        if (run.failed) return false;
        if (f.st == state::runnable) {
          cursor = (p + 1) % n;  // yielded: let the others run first
        } else if (f.st == state::at_warp && release_warp(run, f.linear / 32)) {
          const unsigned base = f.linear & ~31u;
          for (unsigned j = base; j < std::min(base + 32, n); ++j)
            if (run.fibers[j].st == state::runnable) cursor = std::min(cursor, pos[j]);
        }
        continue;
      }
      bool all_done = true;
      for (unsigned i = 0; i < n && all_done; ++i) all_done = run.fibers[i].st == state::done;
      if (all_done) return true;
      if (release_warps(run)) {
        cursor = 0;
        continue;
      }
      if (release_block(run)) {
        if (g_order.order == thread_order::shuffle) set_order();
        cursor = 0;
        continue;
      }
      run.error = deadlock_message(run);
      return false;
    }
  } catch (const kernel_fault& e) {
    run.error = e.what();
    return false;
  }
}

std::string dims(const dim3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

}  // namespace

void set_thread_order(thread_order order, uint64_t seed) {
  g_order.from_env = true;
  g_order.order = order;
  g_order.seed = seed;
}

thread_order get_thread_order() {
  read_order_env();
  return g_order.order;
}

int block_barrier(block_kind kind, int pred, const site& where) {
  fiber& f = self(block_kind_name(kind));
  f.bkind = kind;
  f.pred = pred;
  f.where = where;
  f.st = state::at_block;
  suspend(f);
  return f.bresult;
}

void warp_collective(warp_op& op, const site& where) {
  fiber& f = self(kind_name(op.kind));
  const unsigned lane = f.linear % 32;
  if (!whole_warp(op.kind)) {
    if (!((op.mask >> lane) & 1u))
      throw kernel_fault(std::string(kind_name(op.kind)) + " with mask " + hex(op.mask) + " that leaves out the calling lane " +
                         std::to_string(lane) + ", at " + where_str(where));
    if (op.width < 1 || op.width > 32 || (op.width & (op.width - 1)) != 0)
      throw kernel_fault(std::string(kind_name(op.kind)) + " with width " + std::to_string(op.width) +
                         " (a power of two up to 32), at " + where_str(where));
  }
  f.op = &op;
  f.where = where;
  f.st = state::at_warp;
  suspend(f);
}

void yield_thread() {
  fiber& f = self("__nanosleep");
  suspend(f);  // still runnable: the scheduler resumes it after the others had a turn
}

void trap(const char* what, const site& where) {
  throw kernel_fault(std::string(what) + " at " + where_str(where));
}

unsigned char* dynamic_smem() {
  self("dynamic shared memory");
  return t_run->smem;
}

void launch(const launch_desc& d) {
  read_order_env();
  const std::string kernel = std::string("kernel ") + d.name;
  if (t_run != nullptr) {
    set_launch_error(cudaErrorNotSupported, kernel + ": launched from inside a kernel (not emulated)");
    return;
  }
  const dim3 g = d.grid, b = d.block;
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0 || threads > kMaxThreadsPerBlock ||
      b.x > 1024 || b.y > 1024 || b.z > 64 || g.y > 65535 || g.z > 65535 || g.x > 0x7fffffffu) {
    set_launch_error(cudaErrorInvalidConfiguration,
                     kernel + ": invalid launch configuration, grid " + dims(g) + " block " + dims(b));
    return;
  }
  if (d.smem > max_dynamic_smem(d.func)) {
    set_launch_error(cudaErrorInvalidValue, kernel + ": " + std::to_string(d.smem) +
                                                " bytes of dynamic shared memory exceed the kernel's limit of " +
                                                std::to_string(max_dynamic_smem(d.func)) +
                                                " (cudaFuncSetAttribute raises it)");
    return;
  }
  if (!stream_is_valid(d.stream)) {
    set_launch_error(cudaErrorInvalidResourceHandle, kernel + ": invalid stream");
    return;
  }

  static thread_local fiber_pool pool;
  static thread_local std::vector<unsigned char> smem_store;
  const size_t smem_bytes = d.smem + kSmemCanary + 128;
  if (smem_store.size() < smem_bytes) smem_store.resize(smem_bytes);
  unsigned char* smem = smem_store.data();
  smem += (128 - reinterpret_cast<uintptr_t>(smem) % 128) % 128;

  block_run run{};
  run.desc = &d;
  run.fibers = pool.fibers.data();
  run.n = static_cast<unsigned>(threads);
  run.smem = smem;
  std::mt19937_64 rng(g_order.seed);

  gridDim = g;
  blockDim = b;
  t_run = &run;
  for (unsigned z = 0; z < g.z; ++z) {
    for (unsigned y = 0; y < g.y; ++y) {
      for (unsigned x = 0; x < g.x; ++x) {
        blockIdx = uint3{x, y, z};
        // Unwritten dynamic shared memory reads as NaN; a write past its end trips the canary.
        std::memset(smem, 0xFF, d.smem);
        std::memset(smem + d.smem, kCanaryByte, kSmemCanary);
        bool ok = run_block(run, pool, rng);
        if (ok) {
          for (size_t i = 0; i < kSmemCanary && ok; ++i) ok = smem[d.smem + i] == kCanaryByte;
          if (!ok)
            run.error = "wrote past the end of its " + std::to_string(d.smem) + " bytes of dynamic shared memory";
        }
        if (!ok) {
          t_run = nullptr;
          set_launch_error(cudaErrorLaunchFailure, kernel + ", block " + dims(dim3(x, y, z)) + ": " + run.error);
          return;
        }
      }
    }
  }
  t_run = nullptr;
}

}  // namespace qk::emu
