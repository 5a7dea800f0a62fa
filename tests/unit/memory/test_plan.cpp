// The memory plan: each category pinned for Llama-2-7B and Llama-3.1-8B QLoRA (r 64 on all 7 linear
// kinds, micro batch 1, 2048 tokens, gradient checkpointing, paged_adamw_8bit) to the values of the
// formulas in plan.cpp, recomputed by hand (a separate Python transcription of the formulas; the step's
// categories follow the CUDA model's arena, which tests/runtime/test_plan_vs_arena.cpp measures); totals
// checked against published numbers; monotonicity; the largest-fit searches; input errors.
#include <gtest/gtest.h>

#include <string>

#include "csrc/core/error.h"
#include "runtime/memory/plan.h"

namespace qtrain::rt {
namespace {

PlanInput qlora(const std::string& preset) {
  PlanInput in;
  in.model = model_preset(preset);
  in.adapter = AdapterKind::QLoRA;
  in.lora_r = 64;
  in.micro_batch_size = 1;
  in.sequence_len = 2048;
  in.gradient_checkpointing = true;
  in.optimizer = OptimizerKind::PagedAdamW8bit;
  return in;
}

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

TEST(MemoryPlan, Llama2_7B_QLoRA_Batch1_Seq2048) {
  const MemoryPlan p = make_memory_plan(qlora("llama2-7b"));
  // 6.48 G linear weights: NF4 3 238 002 688 B + 102 770 624 B of double-quant constants.
  EXPECT_EQ(p.bytes_of(kPlanBaseWeights), 3340773312u);
  EXPECT_EQ(p.bytes_of(kPlanBf16Parts), 524820480u);  // embeddings + lm_head 32000 x 4096 + 65 norms
  EXPECT_EQ(p.trainable_params, 159907840);            // r 64 on 7 kinds x 32 layers
  EXPECT_EQ(p.bytes_of(kPlanLora), 959447040u);
  EXPECT_EQ(p.bytes_of(kPlanGrads), 639631360u);
  EXPECT_EQ(p.bytes_of(kPlanOptimizer), 324812800u);
  // The step's categories follow the CUDA model's arena (tests/runtime/test_plan_vs_arena.cpp
  // measures them): 32 layer inputs + final norm + batch; the residual gradient, one layer's gradient
  // scratch and the LoRA d XA; one layer's activation set and the forward scratch the layers share
  // (the fused q|k|v output, the o_proj and MLP outputs); the attention delta; 1024 x 32000 bf16 logits.
  EXPECT_EQ(p.bytes_of(kPlanActivations), 570458112u);
  EXPECT_EQ(p.bytes_of(kPlanActGrads), 337379328u);
  EXPECT_EQ(p.bytes_of(kPlanRecompute), 338706432u);
  EXPECT_EQ(p.bytes_of(kPlanAttention), 262144u);
  EXPECT_EQ(p.bytes_of(kPlanCrossEntropy), 65544192u);
  EXPECT_EQ(p.bytes_of(kPlanCublas), 33554432u);
  EXPECT_EQ(p.bytes_of(kPlanDequant), 0u);  // every 7B linear is a multiple of 64: the fused NF4 GEMM
  // The cross-entropy workspace (forward only) never coexists with the backward scratch.
  EXPECT_EQ(p.phase_overlap, 65544192u);
  EXPECT_EQ(p.peak, 7069845440u);
  // Plausibility. The QLoRA paper puts a 4-bit 7B base at "about 5 GB"; ours is 3.87 GB (NF4 3.24 GB,
  // constants 0.10 GB, bf16 embeddings and lm_head 0.52 GB): the paper's figure is a measured footprint,
  // which adds the CUDA context (0.3-0.5 GB, outside our plan) and the allocator's slack. So the base
  // must sit between 3.5 and 5 GB. LLaMA-Factory reports 7 GB (Unsloth) to 9 GB (HF) for Llama-2-7B
  // QLoRA at batch 4 x 1024 tokens; the same token count here must land in that range or just under.
  const double base_gb = static_cast<double>(p.bytes_of(kPlanBaseWeights) + p.bytes_of(kPlanBf16Parts)) / 1e9;
  EXPECT_GT(base_gb, 3.5);
  EXPECT_LT(base_gb, 5.0);
  PlanInput b4 = qlora("llama2-7b");
  b4.micro_batch_size = 4;
  b4.sequence_len = 1024;
  const double gb = static_cast<double>(make_memory_plan(b4).peak) / 1e9;
  EXPECT_GT(gb, 5.5);
  EXPECT_LT(gb, 9.5);
}

TEST(MemoryPlan, Llama31_8B_QLoRA_Batch1_Seq2048) {
  const MemoryPlan p = make_memory_plan(qlora("llama3-8b"));
  EXPECT_EQ(p.bytes_of(kPlanBaseWeights), 3600418752u);
  EXPECT_EQ(p.bytes_of(kPlanBf16Parts), 2101878784u);  // 128256 x 4096 twice: the big vocabulary
  EXPECT_EQ(p.trainable_params, 167772160);
  EXPECT_EQ(p.bytes_of(kPlanLora), 1006632960u);
  EXPECT_EQ(p.bytes_of(kPlanGrads), 671088640u);
  EXPECT_EQ(p.bytes_of(kPlanOptimizer), 340787200u);
  EXPECT_EQ(p.bytes_of(kPlanActivations), 570458112u);
  EXPECT_EQ(p.bytes_of(kPlanActGrads), 327942144u);
  EXPECT_EQ(p.bytes_of(kPlanRecompute), 329269248u);
  EXPECT_EQ(p.bytes_of(kPlanAttention), 262144u);
  EXPECT_EQ(p.bytes_of(kPlanCrossEntropy), 262676480u);
  EXPECT_EQ(p.bytes_of(kPlanCublas), 33554432u);
  EXPECT_EQ(p.bytes_of(kPlanDequant), 0u);
  EXPECT_EQ(p.phase_overlap, 262676480u);
  EXPECT_EQ(p.peak, 8982292416u);
  // torchtune: Llama-3.1-8B QLoRA (rank 8) at batch 2 x 2048 packed tokens peaks at 7.4 GiB on a
  // 4090. Our plan of that run should be near: within 6 to 10 GiB (their recipe's targets and
  // buffers differ in detail, and a measured peak includes allocator slack).
  PlanInput tt = qlora("llama3-8b");
  tt.lora_r = 8;
  tt.micro_batch_size = 2;
  const double gib = static_cast<double>(make_memory_plan(tt).peak) / kGiB;
  EXPECT_GT(gib, 6.0);
  EXPECT_LT(gib, 10.0);
}

// Without checkpointing every layer keeps its input and what its backward reads, per token: input
// 8192 B; h1, x2, h2 (3h), q and k after RoPE, v and the attention output (2q + 2kv), gate|up and the
// SwiGLU product (3I), X A of 7 kinds (7r), all bf16: 124 288 B; two rstd and a log-sum-exp per head
// (fp32): 136 B. One forward scratch that every layer shares: the fused q|k|v output and the o_proj
// and MLP outputs, 40 960 B (kept per layer before: 2 600 468 480 B more at 32 layers). Final norm and
// batch 16 400 B. No recompute set.
TEST(MemoryPlan, Llama2_7B_QLoRA_NoCheckpointing) {
  PlanInput in = qlora("llama2-7b");
  in.gradient_checkpointing = false;
  const MemoryPlan p = make_memory_plan(in);
  EXPECT_EQ(p.bytes_of(kPlanActivations), size_t{2048} * (32 * (8192 + 124288 + 136) + 40960 + 16400));
  EXPECT_EQ(p.bytes_of(kPlanActivations), 8808595456u);
  EXPECT_EQ(p.bytes_of(kPlanRecompute), 0u);
  // q_proj and v_proj only: X A of 2r per layer, not 7r.
  in.lora_target_modules = {"q_proj", "v_proj"};
  EXPECT_EQ(make_memory_plan(in).bytes_of(kPlanActivations), 8808595456u - 2048u * 32 * 5 * 64 * 2);
}

// Full fine-tuning of Llama-2-7B (adamw, checkpointing, 1 x 2048 tokens): bf16 weights as in LoRA
// mode, then an fp32 master and an fp32 gradient of all 6.74 G weights (every slot a multiple of 64
// elements, so no padding), adamw's 8 B/param. The step adds to QLoRA's the bias GEMMs' column of
// ones (2 B/token), the RMSNorm dw partials (512 x 4096 fp32) and the embedding gradient's plan
// (2048 + 2 x 2048 + 1 int32); its activation set has no LoRA X A. 18 B/param in all, the usual
// mixed-precision AdamW figure with fp32 gradients.
TEST(MemoryPlan, Llama2_7B_Full_AdamW_Batch1_Seq2048) {
  PlanInput in = qlora("llama2-7b");
  in.adapter = AdapterKind::Full;
  in.optimizer = OptimizerKind::AdamW;
  const MemoryPlan p = make_memory_plan(in);
  EXPECT_EQ(p.trainable_params, 6738415616);
  EXPECT_EQ(p.trainable_params, p.base_params);
  EXPECT_EQ(p.bytes_of(kPlanBaseWeights), 12952010752u);  // 6.48 G linear weights x 2 B
  EXPECT_EQ(p.bytes_of(kPlanBf16Parts), 524820480u);
  EXPECT_EQ(p.bytes_of(kPlanLora), 0u);
  EXPECT_EQ(p.bytes_of(kPlanMasters), 26953662464u);
  EXPECT_EQ(p.bytes_of(kPlanGrads), 26953662464u);
  EXPECT_EQ(p.bytes_of(kPlanOptimizer), 53907324928u);
  EXPECT_EQ(p.bytes_of(kPlanActivations), 570462208u);
  EXPECT_EQ(p.bytes_of(kPlanActGrads), 345006084u);
  EXPECT_EQ(p.bytes_of(kPlanRecompute), 336871424u);
  EXPECT_EQ(p.bytes_of(kPlanAttention), 262144u);
  EXPECT_EQ(p.bytes_of(kPlanCrossEntropy), 65544192u);
  EXPECT_EQ(p.bytes_of(kPlanDequant), 0u);
  EXPECT_EQ(p.phase_overlap, 65544192u);
  EXPECT_EQ(p.peak, 122577637380u);
  EXPECT_NE(format_plan(p, 0).find(kPlanMasters), std::string::npos);
  EXPECT_EQ(format_plan(p, 0).find(kPlanLora), std::string::npos);
}

// Full fine-tuning's masters and gradients are laid out in slots (full_weights.h), each starting on a
// 64-element boundary: the embedding, per layer the input norm, q|k|v, o, the q|k|v biases, the
// post-attention norm, gate|up and down, then the final norm and lm_head. Odd sizes pad: 49 632
// weights take 49 760 elements here (embedding 3552 -> 3584, norms 96 -> 128 three times).
TEST(MemoryPlan, FullFineTuningSlotsAlignTo64Elements) {
  PlanInput in;
  in.model = model_preset("tiny");
  io::ModelConfig& c = in.model;
  c.architecture = io::Architecture::Qwen2;  // q/k/v biases
  c.model_type = "qwen2";
  c.hidden_size = 96, c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 24;
  c.intermediate_size = 50, c.vocab_size = 37, c.num_hidden_layers = 1, c.tie_word_embeddings = false;
  in.adapter = AdapterKind::Full;
  const MemoryPlan p = make_memory_plan(in);
  EXPECT_EQ(p.trainable_params, 49632);
  EXPECT_EQ(p.bytes_of(kPlanMasters), 4u * 49760);
  EXPECT_EQ(p.bytes_of(kPlanGrads), 4u * 49760);
  EXPECT_EQ(p.bytes_of(kPlanBaseWeights) + p.bytes_of(kPlanBf16Parts), 2u * 49632);
}

TEST(MemoryPlan, MoreBatchLongerSequenceOrNoCheckpointingNeedMore) {
  for (const char* preset : {"llama2-7b", "llama3-8b", "tiny"}) {
    SCOPED_TRACE(preset);
    const PlanInput in = qlora(preset);
    const size_t base = make_memory_plan(in).peak;
    PlanInput b = in;
    b.micro_batch_size = 2;
    EXPECT_GT(make_memory_plan(b).peak, base);
    PlanInput s = in;
    s.sequence_len = 4096;
    EXPECT_GT(make_memory_plan(s).peak, base);
    PlanInput nc = in;
    nc.gradient_checkpointing = false;
    EXPECT_GT(make_memory_plan(nc).peak, base);
    const bool big = std::string(preset) != "tiny";  // tiny: 2 layers (all in flight), r 64 > hidden 64
    PlanInput off = in;
    off.offload = true;
    if (big) {
      EXPECT_LT(make_memory_plan(off).peak, base);
    } else {
      EXPECT_LE(make_memory_plan(off).peak, base);
    }
    PlanInput full32 = in;
    full32.optimizer = OptimizerKind::AdamW;
    EXPECT_GT(make_memory_plan(full32).peak, base);
    PlanInput lora = in;
    lora.adapter = AdapterKind::LoRA;
    EXPECT_GT(make_memory_plan(lora).peak, base);
    PlanInput full = in;
    full.adapter = AdapterKind::Full;
    if (big) {
      EXPECT_GT(make_memory_plan(full).peak, make_memory_plan(lora).peak);
    }
  }
}

TEST(MemoryPlan, LargestFitIsTheEdge) {
  const PlanInput in = qlora("llama2-7b");
  const size_t limit = size_t{24} << 30;
  const int64_t b = largest_micro_batch(in, limit);
  ASSERT_GT(b, 1);
  PlanInput x = in;
  x.micro_batch_size = b;
  EXPECT_LE(make_memory_plan(x).peak, limit);
  x.micro_batch_size = b + 1;
  EXPECT_GT(make_memory_plan(x).peak, limit);

  const int64_t s = largest_sequence_len(in, limit);
  ASSERT_GT(s, 2048);
  x = in;
  x.sequence_len = s;
  EXPECT_LE(make_memory_plan(x).peak, limit);
  x.sequence_len = s + 1;
  EXPECT_GT(make_memory_plan(x).peak, limit);
  // Nothing fits in 1 GiB: the base alone is larger.
  EXPECT_EQ(largest_micro_batch(in, size_t{1} << 30), 0);
  EXPECT_EQ(largest_sequence_len(in, size_t{1} << 30), 0);
}

TEST(MemoryPlan, TargetsAndErrors) {
  PlanInput in = qlora("llama2-7b");
  in.lora_target_modules = {"q_proj", "v_proj"};
  const MemoryPlan qv = make_memory_plan(in);
  EXPECT_EQ(qv.trainable_params, int64_t{32} * 64 * (2 * 4096 + 2 * 4096));
  // Only q|k|v has an adapter (X A of 2r = 128 per token, not all 7 kinds' 3r = 192 at the widest):
  // the LoRA d XA workspace is 2048 x 128 bf16, 262 144 B under the all-kinds plan's 337 379 328.
  EXPECT_EQ(qv.bytes_of(kPlanActGrads), 337117184u);
  // One layer's set carries X A for q and v only: 2048 x (7 - 2) x 64 bf16 less than all kinds'.
  EXPECT_EQ(qv.bytes_of(kPlanRecompute), 338706432u - 2048u * 5 * 64 * 2);
  EXPECT_EQ(parse_target_modules({"all-linear"}).size(), 7u);
  EXPECT_THROW(parse_target_modules({"q_proj", "lm_head"}), Error);
  EXPECT_THROW(parse_adapter("dora"), Error);
  EXPECT_EQ(parse_adapter(""), AdapterKind::Full);
  EXPECT_THROW(model_preset("llama-70b"), Error);
  in.micro_batch_size = 0;
  EXPECT_THROW(make_memory_plan(in), Error);
}

TEST(MemoryPlan, ByteSizes) {
  EXPECT_EQ(parse_byte_size("24GiB"), size_t{24} << 30);
  EXPECT_EQ(parse_byte_size("24 GB"), size_t{24000000000});
  EXPECT_EQ(parse_byte_size("500MiB"), size_t{500} << 20);
  EXPECT_EQ(parse_byte_size("1.5g"), size_t{3} << 29);
  EXPECT_EQ(parse_byte_size("4096"), size_t{4096});
  EXPECT_THROW(parse_byte_size("lots"), Error);
  EXPECT_THROW(parse_byte_size("24 parsecs"), Error);
  EXPECT_THROW(parse_byte_size("-1GiB"), Error);
}

}  // namespace
}  // namespace qtrain::rt
