// cuda_emu.h: a host emulation of the CUDA features the shardsage kernels use, so that their
// logic (warp votes and shuffles, block scans, atomics, grid-stride loops) is checked on machines
// without a GPU, in CI. It checks logic, not performance or the device's floating-point library. Every CUDA thread of a block is a user-space fiber on one OS
// thread; blocks run one after another. A fiber runs until it waits at a barrier (__syncthreads,
// __syncwarp, or inside a warp collective), so a collective sees the values of all 32 lanes.
// The fiber switch is a few lines of x86-64 assembly.
// Warp collectives exchange values through per-warp slots between two warp barriers.
#pragma once
#if !defined(__x86_64__)
#error "the fiber switch of cuda_emu.h is written for x86-64"
#endif

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {
struct Barrier {
    unsigned expected = 0, count = 0, generation = 0;
};
struct Warp {
    Barrier bar;
    uint64_t slots[32];
};
struct Fiber {
    void* sp = nullptr;
    bool done = false;
};
constexpr size_t STACK_BYTES = 64 * 1024;
// Fiber stacks, allocated once and reused by every launch.
inline char* stack_of(unsigned t) {
    static std::vector<char*> stacks;
    while (stacks.size() <= t) stacks.push_back(new char[STACK_BYTES]);
    return stacks[t];
}
inline void* scheduler;
inline std::vector<Fiber>* fibers;
inline std::vector<Warp>* warps;
inline Barrier block_bar;
inline unsigned current;
inline const std::function<void()>* kernel;

// Saves the callee-saved registers on the current stack, stores the stack pointer in *save and
// continues on the stack `load` (System V x86-64).
extern "C" void emu_switch(void** save, void* load);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");
inline void yield() { emu_switch(&(*fibers)[current].sp, scheduler); }
inline void wait(Barrier& b) {
    const unsigned g = b.generation;
    if (++b.count == b.expected) {
        b.count = 0;
        ++b.generation;
        return;
    }
    while (b.generation == g) yield();
}
inline Warp& warp() { return (*warps)[current / 32]; }
inline unsigned lane() { return current % 32; }
[[noreturn]] inline void entry() {
    (*kernel)();
    (*fibers)[current].done = true;
    for (;;) yield();
}
// A fresh fiber's stack: six zeroed registers, then `entry` as the return address of emu_switch,
// then a fake return address for `entry` (so it starts with the ABI's alignment).
inline void* initial_stack(char* stack) {
    uintptr_t top = (uintptr_t)(stack + STACK_BYTES) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;
    *--sp = (void*)&entry;
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    return sp;
}
} // namespace emu

inline void launch(unsigned grid, unsigned block, const std::function<void()>& kernel) {
    if (block % 32 != 0) std::abort();
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    emu::kernel = &kernel;
    for (unsigned b = 0; b < grid; ++b) {
        std::vector<emu::Fiber> fibers(block);
        std::vector<emu::Warp> warps(block / 32);
        for (auto& w : warps) w.bar.expected = 32;
        emu::block_bar = {block, 0, 0};
        emu::fibers = &fibers;
        emu::warps = &warps;
        for (unsigned t = 0; t < block; ++t) fibers[t].sp = emu::initial_stack(emu::stack_of(t));
        for (bool running = true; running;) {
            running = false;
            for (unsigned t = 0; t < block; ++t) {
                if (fibers[t].done) continue;
                running = true;
                emu::current = t;
                threadIdx = {t, 0, 0};
                blockIdx = {b, 0, 0};
                emu::emu_switch(&emu::scheduler, fibers[t].sp);
            }
        }
    }
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
struct float4 {
    float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline float __int_as_float(int v) {
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
template <class T>
T __shfl_sync(unsigned, T v, int src) {
    uint64_t s = 0;
    std::memcpy(&s, &v, sizeof(T));
    emu::warp().slots[emu::lane()] = s;
    emu::wait(emu::warp().bar);
    uint64_t r = emu::warp().slots[src & 31];
    emu::wait(emu::warp().bar);
    T out;
    std::memcpy(&out, &r, sizeof(T));
    return out;
}
template <class T>
T __shfl_up_sync(unsigned m, T v, unsigned d) {
    const int src = (int)emu::lane() - (int)d;
    return __shfl_sync(m, v, src < 0 ? (int)emu::lane() : src);
}
template <class T>
T __shfl_xor_sync(unsigned m, T v, int d) {
    return __shfl_sync(m, v, (int)emu::lane() ^ d);
}
inline bool __any_sync(unsigned, bool p) {
    emu::warp().slots[emu::lane()] = p;
    emu::wait(emu::warp().bar);
    bool any = false;
    for (int i = 0; i < 32; ++i) any |= emu::warp().slots[i] != 0;
    emu::wait(emu::warp().bar);
    return any;
}
inline void __syncwarp() { emu::wait(emu::warp().bar); }
inline void __syncthreads() { emu::wait(emu::block_bar); }
// Fibers switch only at barriers, so the atomics need no synchronisation.
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long cmp,
                                    unsigned long long v) {
    const unsigned long long old = *a;
    if (old == cmp) *a = v;
    return old;
}
inline unsigned atomicAdd(unsigned* a, unsigned v) {
    const unsigned old = *a;
    *a = old + v;
    return old;
}
inline unsigned atomicMin(unsigned* a, unsigned v) {
    const unsigned old = *a;
    if (v < old) *a = v;
    return old;
}
