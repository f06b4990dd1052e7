/* gptlab's C core: the API the Python bindings (module.c) use.
 *
 * Conventions (see ../shared/STYLE.md):
 * - every exported symbol starts with gl_; one file per concern;
 * - arrays are row-major float32 (int32 for token ids), shapes are given in each comment;
 * - outputs first, inputs const, sizes last; backward functions ACCUMULATE (+=) into their
 *   gradient outputs, so several heads and losses can add into the same buffers;
 * - nothing here allocates inside a training step, touches Python, or keeps global mutable
 *   state beyond the thread count; the caller owns the memory; OpenMP inside.
 */
#ifndef GPTLAB_H
#define GPTLAB_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define GL_EXPORT __attribute__((visibility("default")))
#else
#define GL_EXPORT
#endif

/* ==== threads (model.c) ================================================================ */

/* Number of OpenMP threads the kernels use (1 when built without OpenMP). */
void gl_set_num_threads(int n);
int gl_get_num_threads(void);

/* Below this many floats touched, a kernel's loop runs on one thread: waking a second thread
 * (tens of microseconds) costs more than it saves. Shared by every file's `omp parallel if`. */
#define GL_PAR_MIN 32768

/* A function compiled three times (AVX-512, AVX2, baseline x86-64), the CPU's best picked when
 * the library loads (GCC on x86-64 Linux; elsewhere, and in sanitizer builds, compiled once).
 * For plain C and vector-extension loops whose bits do not depend on the vector width. */
#if defined(__x86_64__) && defined(__gnu_linux__) && defined(__GNUC__) && !defined(__clang__) \
    && !defined(__SANITIZE_ADDRESS__)
#define GL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GL_CLONES
#endif

/* ==== gemm.c: matrix multiplication ===================================================== */

/* C = alpha * op(A) @ op(B) + beta * C, row-major.
 * op(A) is (M, K): A is (M, K) with row stride lda, or (K, M) when transA (A^T is used).
 * op(B) is (K, N): B is (K, N) with row stride ldb, or (N, K) when transB.
 * C is (M, N) with row stride ldc. beta = 0 overwrites C (C may hold garbage, even NaN).
 * The three products of training: x@W (0,0), dy@W^T (0,1), x^T@dy (1,0). */
void gl_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
/* C = op(A) op(B) + bias, bias (N) added to every row of C: a linear layer's forward. The bits
 * of filling C with bias and calling gl_sgemm with alpha = beta = 1, without that pass over C:
 * the blocked paths add the bias to each tile of the first KC slice as it is stored. */
void gl_sgemm_bias(int transA, int transB, int M, int N, int K, const float *A, int lda,
                   const float *B, int ldb, const float *bias, float *C, int ldc);

#if defined(__GNUC__)
/* Internal: a GCC/Clang vector of 8 floats, read and written through casts of float pointers
 * (aligned(4), may_alias: any float address), for loops the compilers would not vectorise on
 * their own; elementwise, so it computes what the scalar loop it replaces does. */
typedef float gl_v8f __attribute__((vector_size(32), aligned(4), may_alias));
/* ... and of 8 doubles, for sums of floats taken in double (one conversion of a gl_v8f). */
typedef double gl_v8d __attribute__((vector_size(64)));
#endif

/* Internal: `bytes` (0 counts as 1) of memory aligned to 64 bytes (a cache line, one AVX-512
 * vector: rows that start on a line are read and written without split accesses), released
 * with free(); NULL if memory runs out. From 2 MB on, aligned to 2 MB and backed by huge pages
 * where the system offers them (Linux's transparent huge pages). */
void *gl_alloc(size_t bytes);

/* Internal: the calling thread's scratch buffer number `slot`, at least `bytes` long and
 * 64-byte aligned, kept and grown across calls (no allocation in steady state); NULL if
 * memory runs out. Slots 0 and 1: gl_sgemm's packed operands; GL_SCRATCH_COLSUMS: the
 * partial column sums of gl_layernorm_backward and gl_matmul_backward (bias gradients). */
#define GL_SCRATCH_COLSUMS 2
#define GL_SCRATCH_SLOTS 3
void *gl_thread_scratch(int slot, size_t bytes);

/* The instruction set gl_sgemm runs with: "avx512", "avx2", or "portable". */
const char *gl_gemm_isa(void);
/* Force a path ("avx512", "avx2", "portable", or "auto"); returns 0, or -1 if the CPU or the
 * build lacks it (then nothing changes). Used by tests to check every path. */
int gl_gemm_set_isa(const char *name);
/* The precision of the blocked products: "float32", or "bfloat16" (A and B rounded to bfloat16
 * as they are packed, products summed in float32; C and the caller's arrays stay float32).
 * bfloat16 needs AVX512-BF16 and applies while the AVX-512 path is in force; products under
 * 32^3 multiply-adds and decode-step ones (M <= 8) stay float32. Returns 0, or -1 if the CPU
 * or the build lacks it (then nothing changes). */
const char *gl_gemm_precision(void);
int gl_gemm_set_precision(const char *name);
/* Which kernel the bfloat16 products run on: "amx" (AMX tiles: Intel Sapphire Rapids and
 * later, on Linux) where the CPU and the OS allow, else "avx512bf16" ("none" without either).
 * gl_gemm_set_bf16_kernel("amx" | "avx512bf16" | "auto") forces one for tests and benchmarks;
 * returns 0, or -1 if the CPU, the OS or the build lacks it (then nothing changes). */
const char *gl_gemm_bf16_kernel(void);
int gl_gemm_set_bf16_kernel(const char *name);

/* ==== layers.c: forward/backward pairs of the GPT-2 layers ============================== */

/* out[b,t,:] = wte[idx[b,t],:] + wpe[t,:].  idx: (B,T) int32; wte: (V,C); wpe: (maxT,C);
 * out: (B,T,C). Token ids must already be validated (0 <= id < V). */
void gl_embedding_forward(float *out, const int32_t *idx, const float *wte, const float *wpe,
                          int B, int T, int C);
/* dwte[idx[b,t],:] += dout[b,t,:]; dwpe[t,:] += sum_b dout[b,t,:]. dout: (B,T,C). */
void gl_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *idx,
                           int B, int T, int C);

/* LayerNorm over the last axis: out = (x - mean) / sqrt(var + 1e-5) * w + b.
 * x, out: (N, C); w, b: (C); mean, rstd: (N), saved for the backward pass. */
void gl_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C);
/* res = a + b, then out = layernorm(res) as gl_layernorm_forward (the same bits as the two
 * calls) in one pass: a block's residual sum and the layernorm after it. res may be a. */
void gl_residual_layernorm_forward(float *res, float *out, float *mean, float *rstd,
                                   const float *a, const float *b, const float *w,
                                   const float *bias, int N, int C);
/* Gradients of gl_layernorm_forward. dx: (N,C) accumulates; dw, db: (C) accumulate when
 * `accumulate`, else are written (no zeroing needed first). */
void gl_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                           const float *w, const float *mean, const float *rstd, int N, int C,
                           int accumulate);

/* Affine map (Conv1D layout, input first): out = x @ w + b.
 * x: (N, C); w: (C, OC); b: (OC) or NULL; out: (N, OC). */
void gl_matmul_forward(float *out, const float *x, const float *w, const float *b, int N, int C,
                       int OC);
/* dx += dout @ w^T; dw += x^T @ dout; db += sum_n dout (db may be NULL; dx may be NULL).
 * accumulate == 0: dw and db are written instead (dw = x^T @ dout, db = sum_n dout). */
void gl_matmul_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                        const float *w, int N, int C, int OC, int accumulate);

/* Causal multi-head self-attention.
 * qkv: (B, T, 3C), each row [q | k | v], head h in columns h*hs .. (h+1)*hs-1, hs = C/NH.
 * out: (B, T, C) = softmax(q k^T / sqrt(hs) + causal mask) v, heads side by side.
 * lse: (B, NH, T), the log-sum-exp of each softmax row, saved so the backward pass can
 * rebuild the probabilities without storing the (B, NH, T, T) matrix. */
void gl_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH);
/* Gradients of gl_attention_forward: dqkv (B,T,3C) accumulates; accumulate == 0: dqkv is
 * overwritten (not read). */
void gl_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                           const float *lse, int B, int T, int C, int NH, int accumulate);

/* GELU, tanh approximation: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). (N) each. */
void gl_gelu_forward(float *out, const float *x, size_t N);
/* dx += gelu'(x) * dout; accumulate == 0: dx = gelu'(x) * dout (dx is not read). */
void gl_gelu_backward(float *dx, const float *x, const float *dout, size_t N, int accumulate);

/* out = a + b, (N) each. */
void gl_residual_forward(float *out, const float *a, const float *b, size_t N);
/* da += dout; db += dout. */
void gl_residual_backward(float *da, float *db, const float *dout, size_t N);

/* Scalar head for reward and value models: out[n] = x[n,:] . w + b.
 * x: (N, C); w: (C); b: (1); out: (N). */
void gl_scalar_head_forward(float *out, const float *x, const float *w, const float *b, int N,
                            int C);
/* dx[n,:] += dout[n] w; dw += sum_n dout[n] x[n,:]; db += sum_n dout[n]. dx may be NULL. */
void gl_scalar_head_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                             const float *w, int N, int C);

/* ==== losses.c: every loss of the four stages ========================================== */
/* Masks are (N) float, a row counts when mask[n] != 0; NULL selects every row. A masked mean
 * divides by the number of selected rows; when there is none, forward returns NaN and backward
 * adds nothing. Backward functions take dloss, the gradient of the returned scalar. */

/* Cross-entropy of logits (N,V) against targets (N) int32 in [0,V), averaged over the rows where
 * mask != 0 (mask: (N) float 0/1, or NULL = every row). losses: (N) per-row loss (0 where masked),
 * may be NULL. Returns the mean loss, or NaN if the mask selects no row. Softmax computed row by
 * row, stable (max subtraction), never a full softmax copy. */
float gl_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                              const float *mask, int N, int V);
/* dlogits (N,V) += dloss * mask[n]/count * (softmax(logits[n]) - onehot(targets[n])).
 * dlogits may be the same pointer as logits: then the gradient overwrites the logits row by
 * row (used by the model to avoid a second (N,V) buffer). */
void gl_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                              const float *mask, float dloss, int N, int V);
/* Both at once, in place: returns the mean loss of gl_crossentropy_forward (and each row's in
 * losses, if not NULL) and overwrites logits with gl_crossentropy_backward's gradient for
 * dloss; the same bits as the two calls, one pass over the logits. */
float gl_crossentropy_forward_backward(float *losses, float *logits, const int32_t *targets,
                                       const float *mask, float dloss, int N, int V);

/* Log-probability of given tokens and entropy, at a temperature T > 0: with z = logits[n] / T,
 * logp[n] = log_softmax(z)[targets[n]] and entropy[n] = -sum_v p_v log p_v, p = softmax(z).
 * logits: (N,V); targets: (N) int32 in [0,V); logp: (N); entropy: (N) or NULL. */
void gl_logprobs_forward(float *logp, float *entropy, const float *logits,
                         const int32_t *targets, float temperature, int N, int V);
/* dlogits (N,V) += (dlogp[n] (onehot - p) - dentropy[n] p (log p + H[n])) / T.
 * dlogp: (N); dentropy: (N) or NULL. dlogits must not overlap logits. */
void gl_logprobs_backward(float *dlogits, const float *logits, const int32_t *targets,
                          const float *dlogp, const float *dentropy, float temperature, int N,
                          int V);

/* The instruction set of the softmax row kernels: "avx2" or "portable" (same results). */
const char *gl_losses_isa(void);
/* Force a path ("avx2", "portable", or "auto"); returns 0, or -1 if unavailable. For tests. */
int gl_losses_set_isa(const char *name);

typedef struct {
    float accuracy; /* fraction of all ranked pairs (i above j) with r_i > r_j */
    float margin;   /* mean over all ranked pairs of r_i - r_j */
} gl_ranking_stats;
/* InstructGPT K-way ranking loss of a reward model. rewards: (P,K), row p holds the rewards of
 * the k_p responses to prompt p in ranked order (best first); entries past k_p are ignored.
 * counts: (P) int32 in [2,K], or NULL (k_p = K). Per prompt,
 *   loss_p = -1/C(k_p,2) sum_{i<j<k_p} log sigmoid(r_i - r_j - margin)
 *            + center_coef * 1/k_p sum_{i<k_p} r_i^2
 * (each prompt's C(k,2) pairs weigh as one example). Returns mean_p loss_p; losses: (P) or
 * NULL; stats may be NULL. Pairwise (chosen, rejected) is K = 2. */
float gl_ranking_loss_forward(float *losses, gl_ranking_stats *stats, const float *rewards,
                              const int32_t *counts, float margin, float center_coef, int P,
                              int K);
/* drewards (P,K) += dloss * d(mean_p loss_p)/d rewards (0 past k_p). */
void gl_ranking_loss_backward(float *drewards, const float *rewards, const int32_t *counts,
                              float margin, float center_coef, float dloss, int P, int K);

typedef struct {
    float clipfrac;   /* masked mean of [clipped term > unclipped term] (TRL's pg_clipfrac) */
    float approx_kl;  /* masked mean of 0.5 (logp - old_logp)^2 */
    float ratio_mean; /* masked mean of the ratio */
} gl_ppo_stats;
/* PPO clipped surrogate. ratio = exp(logp - old_logp); per token
 *   l = max(-A ratio, -A clip(ratio, 1 - clip, 1 + clip)), A = advantages[n];
 * returns the masked mean of l. logp, old_logp, advantages, mask: (N). stats may be NULL. */
float gl_ppo_policy_forward(gl_ppo_stats *stats, const float *logp, const float *old_logp,
                            const float *advantages, const float *mask, float clip, int N);
/* dlogp (N) += dloss / count * (-A ratio) where the unclipped term is taken (0 elsewhere). */
void gl_ppo_policy_backward(float *dlogp, const float *logp, const float *old_logp,
                            const float *advantages, const float *mask, float clip, float dloss,
                            int N);

/* Clipped value loss: with vc = clip(v, v_old - clip, v_old + clip), per token
 *   l = 0.5 max((v - R)^2, (vc - R)^2);
 * returns the masked mean of l. values, old_values, returns, mask: (N). clipfrac: masked mean
 * of [(vc - R)^2 > (v - R)^2], may be NULL. */
float gl_value_loss_forward(float *clipfrac, const float *values, const float *old_values,
                            const float *returns, const float *mask, float clip, int N);
/* dvalues (N) += dloss / count * (v - R) where the unclipped error is taken (0 elsewhere). */
void gl_value_loss_backward(float *dvalues, const float *values, const float *old_values,
                            const float *returns, const float *mask, float clip, float dloss,
                            int N);

/* Per-token estimates of KL(pi || pi_ref) from log-probs of sampled tokens, r = exp(ref - logp):
 * kind 1: k1 = logp - ref_logp; kind 2: k2 = 0.5 (logp - ref_logp)^2; kind 3: k3 = (r - 1) - log r.
 * kl, logp, ref_logp: (N). */
void gl_kl_forward(float *kl, const float *logp, const float *ref_logp, int kind, int N);
/* dlogp (N) += dkl[n] * d kl[n] / d logp[n]  (k1: 1, k2: logp - ref_logp, k3: 1 - r). */
void gl_kl_backward(float *dlogp, const float *logp, const float *ref_logp, const float *dkl,
                    int kind, int N);

typedef struct {
    float accuracy;        /* fraction of pairs with chosen reward > rejected reward */
    float chosen_reward;   /* mean of chosen_rewards */
    float rejected_reward; /* mean of rejected_rewards */
    float margin;          /* mean of chosen - rejected rewards */
} gl_dpo_stats;
/* DPO sigmoid loss over P preference pairs, from sequence log-prob sums (P) each:
 * implicit rewards c = beta (policy_chosen - ref_chosen), r = beta (policy_rejected -
 * ref_rejected); returns -mean_p log sigmoid(c_p - r_p). chosen_rewards, rejected_rewards: (P)
 * or NULL; stats may be NULL. */
float gl_dpo_forward(float *chosen_rewards, float *rejected_rewards, gl_dpo_stats *stats,
                     const float *policy_chosen, const float *policy_rejected,
                     const float *ref_chosen, const float *ref_rejected, float beta, int P);
/* dpolicy_chosen (P) += -dloss/P beta sigmoid(r - c); dpolicy_rejected (P) += the opposite. */
void gl_dpo_backward(float *dpolicy_chosen, float *dpolicy_rejected, const float *policy_chosen,
                     const float *policy_rejected, const float *ref_chosen,
                     const float *ref_rejected, float beta, float dloss, int P);

/* ==== optim.c: AdamW, gradient clipping, schedule ======================================= */

/* One AdamW step (PyTorch semantics) on a tensor of n floats, in place. t >= 1 is the number
 * of this step (bias correction). p, m, v, g: (n); p, m, v are updated:
 *   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
void gl_adamw_update(float *p, float *m, float *v, const float *g, float lr, float beta1,
                     float beta2, float eps, float weight_decay, int t, size_t n);
/* gl_adamw_update on `count` tensors p[k], m[k], v[k], g[k] of n[k] floats with weight decay
 * weight_decay[k], in one parallel region; each g[k] is first scaled by grad_scale and written
 * back (gradient clipping fused into the update; 1: g is only read). Elementwise, so the bits
 * equal gl_scale then gl_adamw_update tensor by tensor. */
void gl_adamw_update_many(int count, float *const *p, float *const *m, float *const *v,
                          float *const *g, const size_t *n, const float *weight_decay,
                          float grad_scale, float lr, float beta1, float beta2, float eps,
                          int t);
/* sum_i x_i^2 of x (n), accumulated in double; deterministic for a fixed thread count (each
 * thread sums a fixed contiguous range, the partial sums are added in thread order). */
double gl_sumsq(const float *x, size_t n);
/* The sum over k of gl_sumsq(x[k], n[k]), added in k order, with the same bits, in one
 * parallel region (or one per SUMSQ_PARTIALS / threads tensors). */
double gl_sumsq_many(int count, const float *const *x, const size_t *n);
/* x (n) *= s, in place. */
void gl_scale(float *x, float s, size_t n);
/* Learning rate at step (0-based): linear warmup lr_max (step + 1) / warmup for step < warmup,
 * then cosine decay from lr_max to lr_min at step = total, lr_min after. */
float gl_lr_cosine(int step, int warmup, int total, float lr_max, float lr_min);

/* ==== model.c: the GPT-2 model ========================================================== */

typedef struct {
    int vocab_size, block_size, n_layer, n_head, n_embd;
} gl_config;

/* One named tensor of the parameter arena, named as Hugging Face GPT2Model.state_dict(). */
typedef struct {
    char name[48];
    size_t offset; /* in floats from the start of the arena */
    size_t size;   /* number of floats */
    int ndim;
    int shape[2];
} gl_tensor_info;

typedef struct gl_model gl_model;

/* Checks a config: returns NULL if valid, else a static message saying what is wrong. */
const char *gl_config_check(const gl_config *cfg);
/* A model with zeroed parameters and gradients; NULL when out of memory or cfg invalid. */
gl_model *gl_model_new(const gl_config *cfg);
void gl_model_free(gl_model *m);
/* GPT-2 initialisation: N(0, 0.02) weights, c_proj weights N(0, 0.02/sqrt(2L)), zero biases,
 * LayerNorm weights 1. Deterministic for a seed. */
void gl_model_init_weights(gl_model *m, uint64_t seed);

const gl_config *gl_model_config(const gl_model *m);
size_t gl_model_num_params(const gl_model *m);
float *gl_model_params(gl_model *m);
float *gl_model_grads(gl_model *m);
/* Sets every gradient to 0 (threads clear slices of the arena). */
void gl_model_zero_grad(gl_model *m);
int gl_model_num_tensors(const gl_model *m);
const gl_tensor_info *gl_model_tensor(const gl_model *m, int i);

/* Makes room for activations of batch (B, T); 0 on success, -1 when out of memory.
 * Grows only: a step of a size already seen never allocates. */
int gl_model_reserve(gl_model *m, int B, int T);

/* Forward pass over idx (B,T) (validated ids, T <= block_size, reserve() done).
 * Always computes the final hidden states (after ln_f) into gl_model_hidden: (B,T,C);
 * with_logits != 0 also computes logits into gl_model_logits: (B,T,V).
 * Activations are kept for gl_model_backward. */
void gl_model_forward(gl_model *m, const int32_t *idx, int B, int T, int with_logits);
const float *gl_model_hidden(const gl_model *m);
const float *gl_model_logits(const gl_model *m);

/* After gl_model_forward(..., with_logits=1): mean cross-entropy over the positions where
 * mask != 0 (mask: (B,T) float 0/1 or NULL for all), targets: (B,T) int32 in [0, V).
 * Stores d(loss)/d(logits) in place of the logits for gl_model_backward_loss. Returns NaN
 * if the mask selects no position. */
float gl_model_loss(gl_model *m, const int32_t *targets, const float *mask);
/* Backward of the last gl_model_loss into the gradient arena: added to it when
 * `accumulate`, else written over it (every gradient, so no gl_model_zero_grad first). */
void gl_model_backward_loss(gl_model *m, int accumulate);
/* Backward of the last forward from upstream gradients: dlogits (B,T,V) and/or dhidden
 * (B,T,C) (either may be NULL), into the gradient arena as gl_model_backward_loss. */
void gl_model_backward(gl_model *m, const float *dlogits, const float *dhidden, int accumulate);

/* ==== generation (model.c): KV cache and sampling ====================================== */

typedef struct {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    const int32_t *stop;
    int n_stop;
    uint64_t seed;
} gl_sampling;

/* Autoregressive generation with a KV cache.
 * tokens: (B, Tmax) int32, row b holds its prompt in tokens[b, 0:prompt_len[b]]; the new tokens
 * are written after it, max_new per row, and rows that emit a stop token are padded with it.
 * logprobs: (B, max_new) or NULL, log-probability of each new token under the sampling
 * distribution's logits (scaled by 1/temperature when temperature > 0).
 * Requires prompt_len[b] >= 1 and prompt_len[b] + max_new <= min(Tmax, block_size).
 * interrupt: called every token with ctx; a non-zero return stops generation early (returns
 * the number of tokens produced). Returns max_new when complete, -1 when out of memory. */
int gl_model_generate(gl_model *m, int32_t *tokens, float *logprobs, const int *prompt_len,
                      int B, int Tmax, int max_new, const gl_sampling *s,
                      int (*interrupt)(void *), void *ctx);

/* ==== bpe.c: byte-level BPE tokenizer =================================================== */

/* A byte-level BPE tokenizer (GPT-2's pre-tokenisation pattern): an immutable vocabulary
 * (token id -> bytes), merges in rank order, and special tokens. Safe to use from several
 * threads at once. */
typedef struct gl_bpe gl_bpe;

/* Builds a tokenizer. Token id i has the bytes bytes[off[i] : off[i+1]]; off: (n_vocab+1)
 * int32, off[0] = 0, strictly increasing (no empty token). special: (n_vocab) 0/1 flags.
 * merges: (n_merges, 2) ids (left, right) in rank order; each merge yields the ordinary token
 * whose bytes are left's followed by right's. Requirements: every byte value has an ordinary
 * one-byte token, ordinary tokens have distinct bytes, specials have distinct text, merges
 * use ordinary ids in range, are distinct and their results exist. On failure returns NULL
 * and writes a message into err (errlen bytes). */
gl_bpe *gl_bpe_new(int n_vocab, const uint8_t *bytes, const int32_t *off, const int32_t *special,
                   int n_merges, const int32_t *merges, char *err, size_t errlen);
void gl_bpe_free(gl_bpe *t);

int gl_bpe_vocab_size(const gl_bpe *t); /* tokens, specials included */
int gl_bpe_num_merges(const gl_bpe *t);
const int32_t *gl_bpe_merges(const gl_bpe *t); /* (num_merges, 2) */
int gl_bpe_is_special(const gl_bpe *t, int id); /* 0 also for an id out of range */
/* Bytes of token id (0 <= id < vocab size); *len receives their length. */
const uint8_t *gl_bpe_token(const gl_bpe *t, int id, size_t *len);
/* Id of the special token with exactly this text, else of the ordinary token with these
 * bytes, else -1. */
int32_t gl_bpe_token_id(const gl_bpe *t, const uint8_t *s, size_t n);

/* Encodes text (n bytes of UTF-8; invalid bytes are encoded as bytes too) into out, which must
 * have room for n ids (every token has at least one byte). allowed: (n_allowed) ids of the
 * special tokens whose text becomes the special id (must be special ids); elsewhere, and for
 * the others, special text is ordinary text. Returns the number of ids, -1 when out of memory,
 * -2 when n > INT32_MAX. */
ptrdiff_t gl_bpe_encode(const gl_bpe *t, int32_t *out, const uint8_t *text, size_t n,
                        const int32_t *allowed, int n_allowed);
/* gl_bpe_encode of n_texts texts in parallel (OpenMP). Text i (lens[i] bytes) writes its ids at
 * out + out_off[i] (room for lens[i] ids) and their number into counts[i]. Returns 0, or -1
 * if a text failed (out of memory or longer than INT32_MAX). */
int gl_bpe_encode_batch(const gl_bpe *t, int32_t *out, size_t *counts, const size_t *out_off,
                        const uint8_t *const *texts, const size_t *lens, int n_texts,
                        const int32_t *allowed, int n_allowed);
/* Concatenates the bytes of ids (n, all valid) into out (may be NULL to only measure).
 * Returns the number of bytes. */
size_t gl_bpe_decode(const gl_bpe *t, uint8_t *out, const int32_t *ids, size_t n);
/* Splits text (n bytes) with GPT-2's pattern: ends (room for n) receives the end offset of
 * each piece. Returns the number of pieces. */
size_t gl_bpe_pretokenize(const gl_bpe *t, size_t *ends, const uint8_t *text, size_t n);

/* Training: feed text (any number of times), then learn merges. Occurrences of the special
 * strings in fed text are cut out (never merged with their neighbours, never counted). */
typedef struct gl_bpe_trainer gl_bpe_trainer;
gl_bpe_trainer *gl_bpe_trainer_new(int n_special, const uint8_t *const *special,
                                   const size_t *special_len);
void gl_bpe_trainer_free(gl_bpe_trainer *tr);
/* Counts the pre-tokenised pieces of text. 0, or -1 when out of memory. */
int gl_bpe_trainer_feed(gl_bpe_trainer *tr, const uint8_t *text, size_t n);
/* Learns merges until the vocabulary (256 bytes + merged tokens + specials) has vocab_size
 * tokens or no pair is left: the most frequent pair first, ties to the smallest
 * (left id, right id). Ids: 0-255 the bytes, then merged tokens in order, then the specials.
 * Returns the tokenizer, or NULL with a message in err. The trainer can be fed and trained
 * again. */
gl_bpe *gl_bpe_trainer_train(gl_bpe_trainer *tr, int vocab_size, char *err, size_t errlen);

#endif /* GPTLAB_H */
