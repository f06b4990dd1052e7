/* The GPT-2 model: parameter/gradient/activation arenas, the forward pass over the layers,
 * the backward pass, and generation with a KV cache. */
#include "gptlab.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void gl_set_num_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n < 1 ? 1 : n);
#else
    (void)n;
#endif
}

int gl_get_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#endif

/* ---- the model struct ------------------------------------------------------------------ */

/* Pointers to one block's tensors (parameters or their gradients, same layout). */
typedef struct {
    float *ln1w, *ln1b, *qkvw, *qkvb, *projw, *projb;
    float *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
} block_ptrs;

/* Activations of one block for a batch of N = B*T tokens, kept for the backward pass. */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd; /* (N,C), (N), (N) */
    float *qkv;                       /* (N,3C) */
    float *atty, *lse;                /* (N,C), (B,NH,T) */
    float *res2;                      /* (N,C) residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd; /* (N,C), (N), (N) */
    float *fch, *fch_gelu;            /* (N,4C) each */
    float *res3;                      /* (N,C) residual after the MLP: the block's output */
} block_acts;

/* Activations per token, in floats: what gl_model_reserve allocates for each of N tokens. */
#define ACT_FLOATS_PER_BLOCK(C, NH) (16 * (size_t)(C) + 4 + (size_t)(NH))

struct gl_model {
    gl_config cfg;
    size_t num_params;
    float *params, *grads;
    int ntensors;
    gl_tensor_info *tensors;
    size_t wte, wpe, lnfw, lnfb; /* offsets of the non-block tensors */
    size_t *block_off;           /* (L, 12) offsets of each block's tensors */

    /* activations, sized for cap_tokens tokens */
    size_t cap_tokens;
    float *act;          /* one arena for everything below */
    int32_t *idx;        /* (N) token ids of the last forward */
    float *encoded;      /* (N,C) embedding output = input of block 0 */
    block_acts *blocks;  /* (L) */
    float *lnf, *lnf_mean, *lnf_rstd; /* (N,C), (N), (N) */
    float *logits;       /* (N,V); holds dlogits after gl_model_loss */
    float *scratch;      /* (N,C) temporaries of the forward (projections before residual) */
    float *dres, *dC1, *dC2, *dC3; /* backward: (N,C) each */
    float *dQKV, *dH1, *dH2;       /* backward: (N,3C), (N,4C), (N,4C) */
    int B, T;            /* shape of the last forward */
    int have_logits;     /* the last forward computed logits */
};

/* ---- parameters ------------------------------------------------------------------------ */

const char *gl_config_check(const gl_config *c) {
    if (c->vocab_size < 1) return "vocab_size must be >= 1";
    if (c->block_size < 1) return "block_size must be >= 1";
    if (c->n_layer < 1) return "n_layer must be >= 1";
    if (c->n_head < 1) return "n_head must be >= 1";
    if (c->n_embd < 1) return "n_embd must be >= 1";
    if (c->n_embd % c->n_head != 0) return "n_embd must be divisible by n_head";
    if ((double)c->vocab_size * c->n_embd > 2e9 || (double)c->block_size * c->n_embd > 2e9 ||
        (double)c->n_embd * c->n_embd * 4 > 2e9 || c->n_layer > 4096 || c->block_size > 1 << 20)
        return "config is too large";
    return NULL;
}

static void add_tensor(gl_model *m, size_t *off, const char *name, int d0, int d1) {
    gl_tensor_info *t = &m->tensors[m->ntensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->offset = *off;
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->size = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    *off += t->size;
}

/* Lays the tensors out in Hugging Face GPT2Model.state_dict() order. */
static void layout_params(gl_model *m) {
    const int V = m->cfg.vocab_size, maxT = m->cfg.block_size, L = m->cfg.n_layer;
    const int C = m->cfg.n_embd;
    size_t off = 0;
    char name[48];
    m->wte = off;
    add_tensor(m, &off, "wte.weight", V, C);
    m->wpe = off;
    add_tensor(m, &off, "wpe.weight", maxT, C);
    static const char *suffix[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight",
                                     "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
                                     "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight",
                                     "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
    const int d0[12] = {C, C, C, 3 * C, C, C, C, C, C, 4 * C, 4 * C, C};
    const int d1[12] = {0, 0, 3 * C, 0, C, 0, 0, 0, 4 * C, 0, C, 0};
    for (int l = 0; l < L; l++) {
        for (int k = 0; k < 12; k++) {
            snprintf(name, sizeof name, "h.%d.%s", l, suffix[k]);
            m->block_off[l * 12 + k] = off;
            add_tensor(m, &off, name, d0[k], d1[k]);
        }
    }
    m->lnfw = off;
    add_tensor(m, &off, "ln_f.weight", C, 0);
    m->lnfb = off;
    add_tensor(m, &off, "ln_f.bias", C, 0);
    m->num_params = off;
}

/* n floats, 64-byte aligned, huge pages for large arenas (gl_alloc). */
static float *alloc_floats(size_t n) { return gl_alloc(n * sizeof(float)); }

static block_ptrs block_tensors(const gl_model *m, float *base, int l) {
    const size_t *o = &m->block_off[l * 12];
    block_ptrs p = {base + o[0], base + o[1], base + o[2],  base + o[3],
                    base + o[4], base + o[5], base + o[6],  base + o[7],
                    base + o[8], base + o[9], base + o[10], base + o[11]};
    return p;
}

gl_model *gl_model_new(const gl_config *cfg) {
    if (gl_config_check(cfg)) return NULL;
    gl_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->cfg = *cfg;
    m->tensors = calloc((size_t)cfg->n_layer * 12 + 4, sizeof *m->tensors);
    m->block_off = calloc((size_t)cfg->n_layer * 12, sizeof *m->block_off);
    m->blocks = calloc((size_t)cfg->n_layer, sizeof *m->blocks);
    if (!m->tensors || !m->block_off || !m->blocks) goto fail;
    layout_params(m);
    m->params = alloc_floats(m->num_params);
    m->grads = alloc_floats(m->num_params);
    if (!m->params || !m->grads) goto fail;
    memset(m->params, 0, m->num_params * sizeof(float));
    memset(m->grads, 0, m->num_params * sizeof(float));
    return m;
fail:
    gl_model_free(m);
    return NULL;
}

void gl_model_free(gl_model *m) {
    if (!m) return;
    free(m->params);
    free(m->grads);
    free(m->tensors);
    free(m->block_off);
    free(m->blocks);
    free(m->act);
    free(m->idx);
    free(m);
}

const gl_config *gl_model_config(const gl_model *m) { return &m->cfg; }
size_t gl_model_num_params(const gl_model *m) { return m->num_params; }
float *gl_model_params(gl_model *m) { return m->params; }
float *gl_model_grads(gl_model *m) { return m->grads; }

/* Every gradient to 0, each thread clearing an equal slice from ZERO_SPLIT floats on: one
 * core's stores do not fill the memory bandwidth (gpt2's 124M floats on the development VM:
 * 53 ms on one thread, 27 ms on two; 11.5M, gpt-mini: 4.5 and 2.2 ms). From ZERO_STREAM
 * floats on, with non-temporal stores: the gradients outgrow the caches, so the zeros go
 * straight to memory instead of each line being read first to be overwritten (gpt2 on the
 * Intel Xeon of docs/benchmarks.md, two threads: 28 -> 14.5 ms). Smaller models keep their
 * zeroed gradients in cache for the backward pass. */
#define ZERO_SPLIT (1 << 20)
#define ZERO_STREAM (16 << 20)

/* x[0:n] = 0, by non-temporal stores where the CPU has them (x86-64) and `stream`. */
static void zero_floats(float *x, size_t n, int stream) {
#if defined(__SSE2__) || defined(_M_X64)
    if (stream) {
        size_t i = 0;
        for (; i < n && ((uintptr_t)(x + i) & 15); i++) x[i] = 0.0f;
        const __m128 zero = _mm_setzero_ps();
        for (; i + 4 <= n; i += 4) _mm_stream_ps(x + i, zero);
        _mm_sfence(); /* the zeros are seen before anything stored after them */
        for (; i < n; i++) x[i] = 0.0f;
        return;
    }
#endif
    (void)stream;
    memset(x, 0, n * sizeof(float));
}

void gl_model_zero_grad(gl_model *m) {
    const size_t n = m->num_params;
    const int stream = n >= ZERO_STREAM;
#pragma omp parallel if (n >= ZERO_SPLIT)
    {
#ifdef _OPENMP
        const size_t t = (size_t)omp_get_thread_num(), team = (size_t)omp_get_num_threads();
#else
        const size_t t = 0, team = 1;
#endif
        const size_t share = ((n + team - 1) / team + 15) / 16 * 16; /* whole cache lines */
        const size_t lo = t * share < n ? t * share : n, hi = lo + share < n ? lo + share : n;
        zero_floats(m->grads + lo, hi - lo, stream);
    }
}
int gl_model_num_tensors(const gl_model *m) { return m->ntensors; }
const gl_tensor_info *gl_model_tensor(const gl_model *m, int i) {
    return (i >= 0 && i < m->ntensors) ? &m->tensors[i] : NULL;
}
const float *gl_model_hidden(const gl_model *m) { return m->lnf; }
const float *gl_model_logits(const gl_model *m) { return m->logits; }

/* splitmix64: the seeded generator behind weight init and sampling. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1), 53-bit. */
static double uniform01(uint64_t *s) { return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

void gl_model_init_weights(gl_model *m, uint64_t seed) {
    uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
    const double two_pi = 6.283185307179586;
    const float proj_std = 0.02f / sqrtf(2.0f * m->cfg.n_layer);
    for (int i = 0; i < m->ntensors; i++) {
        const gl_tensor_info *t = &m->tensors[i];
        float *p = m->params + t->offset;
        const char *dot = strrchr(t->name, '.');
        int is_ln = strstr(t->name, "ln_") != NULL;
        if (strcmp(dot, ".bias") == 0) {
            memset(p, 0, t->size * sizeof(float));
        } else if (is_ln) {
            for (size_t j = 0; j < t->size; j++) p[j] = 1.0f;
        } else {
            float std = strstr(t->name, "c_proj.weight") ? proj_std : 0.02f;
            for (size_t j = 0; j < t->size; j += 2) { /* Box-Muller, two normals per draw */
                double r = sqrt(-2.0 * log(uniform01(&s))), a = two_pi * uniform01(&s);
                p[j] = (float)(std * r * cos(a));
                if (j + 1 < t->size) p[j + 1] = (float)(std * r * sin(a));
            }
        }
    }
}

/* ---- activations ----------------------------------------------------------------------- */

int gl_model_reserve(gl_model *m, int B, int T) {
    size_t N = (size_t)B * (size_t)T;
    if (N <= m->cap_tokens) return 0;
    const size_t C = m->cfg.n_embd, V = m->cfg.vocab_size, L = m->cfg.n_layer;
    const size_t NH = m->cfg.n_head;
    /* per token: encoded C, blocks, lnf C+2, logits V, scratch C, backward 4C + 3C + 8C */
    size_t per_tok = C + L * ACT_FLOATS_PER_BLOCK(C, NH) + (C + 2) + V + C + 4 * C + 3 * C + 8 * C;
    /* every array starts on a 64-byte line: up to 15 floats of padding after each of them */
    const size_t arrays = 13 * L + 13;
    float *act = alloc_floats(N * per_tok + 16 * arrays);
    int32_t *idx = malloc(N * sizeof(int32_t));
    if (!act || !idx) {
        free(act);
        free(idx);
        return -1;
    }
    free(m->act);
    free(m->idx);
    m->act = act;
    m->idx = idx;
    m->cap_tokens = N;
    float *p = act;
#define TAKE(n) (p += ((n) + 15) / 16 * 16, p - ((n) + 15) / 16 * 16)
    m->encoded = TAKE(N * C);
    for (size_t l = 0; l < L; l++) {
        block_acts *a = &m->blocks[l];
        a->ln1 = TAKE(N * C);
        a->ln1_mean = TAKE(N);
        a->ln1_rstd = TAKE(N);
        a->qkv = TAKE(N * 3 * C);
        a->atty = TAKE(N * C);
        a->lse = TAKE(N * NH);
        a->res2 = TAKE(N * C);
        a->ln2 = TAKE(N * C);
        a->ln2_mean = TAKE(N);
        a->ln2_rstd = TAKE(N);
        a->fch = TAKE(N * 4 * C);
        a->fch_gelu = TAKE(N * 4 * C);
        a->res3 = TAKE(N * C);
    }
    m->lnf = TAKE(N * C);
    m->lnf_mean = TAKE(N);
    m->lnf_rstd = TAKE(N);
    m->logits = TAKE(N * V);
    m->scratch = TAKE(N * C);
    m->dres = TAKE(N * C);
    m->dC1 = TAKE(N * C);
    m->dC2 = TAKE(N * C);
    m->dC3 = TAKE(N * C);
    m->dQKV = TAKE(N * 3 * C);
    m->dH1 = TAKE(N * 4 * C);
    m->dH2 = TAKE(N * 4 * C);
#undef TAKE
    m->have_logits = 0;
    m->B = m->T = 0;
    return 0;
}

/* ---- forward --------------------------------------------------------------------------- */

/* A layernorm: its weights, and where the forward pass keeps its output and statistics. */
typedef struct {
    float *out, *mean, *rstd;
    const float *w, *b;
} ln_site;

/* The layernorm that reads block l's output (l = -1: the embedding's): block l + 1's ln_1, or
 * ln_f after the last block. */
static ln_site ln_after(gl_model *m, int l) {
    if (l + 1 < m->cfg.n_layer) {
        block_ptrs w = block_tensors(m, m->params, l + 1);
        block_acts *a = &m->blocks[l + 1];
        return (ln_site){a->ln1, a->ln1_mean, a->ln1_rstd, w.ln1w, w.ln1b};
    }
    return (ln_site){m->lnf, m->lnf_mean, m->lnf_rstd, m->params + m->lnfw, m->params + m->lnfb};
}

void gl_model_forward(gl_model *m, const int32_t *idx, int B, int T, int with_logits) {
    const int C = m->cfg.n_embd, NH = m->cfg.n_head, V = m->cfg.vocab_size;
    const int L = m->cfg.n_layer, N = B * T;
    m->B = B;
    m->T = T;
    if (m->idx != idx) memcpy(m->idx, idx, (size_t)N * sizeof(int32_t));
    gl_embedding_forward(m->encoded, idx, m->params + m->wte, m->params + m->wpe, B, T, C);
    ln_site ln = ln_after(m, -1);
    gl_layernorm_forward(ln.out, ln.mean, ln.rstd, m->encoded, ln.w, ln.b, N, C);
    const float *x = m->encoded; /* (N,C) input of the current block; its ln1 is done */
    for (int l = 0; l < L; l++) {
        block_ptrs w = block_tensors(m, m->params, l);
        block_acts *a = &m->blocks[l];
        gl_matmul_forward(a->qkv, a->ln1, w.qkvw, w.qkvb, N, C, 3 * C);
        gl_attention_forward(a->atty, a->lse, a->qkv, B, T, C, NH);
        gl_matmul_forward(m->scratch, a->atty, w.projw, w.projb, N, C, C);
        gl_residual_layernorm_forward(a->res2, a->ln2, a->ln2_mean, a->ln2_rstd, x, m->scratch,
                                      w.ln2w, w.ln2b, N, C);
        gl_matmul_forward(a->fch, a->ln2, w.fcw, w.fcb, N, C, 4 * C);
        gl_gelu_forward(a->fch_gelu, a->fch, (size_t)N * 4 * C);
        gl_matmul_forward(m->scratch, a->fch_gelu, w.fcprojw, w.fcprojb, N, 4 * C, C);
        ln = ln_after(m, l); /* res3, and the layernorm that reads it */
        gl_residual_layernorm_forward(a->res3, ln.out, ln.mean, ln.rstd, a->res2, m->scratch,
                                      ln.w, ln.b, N, C);
        x = a->res3;
    }
    m->have_logits = with_logits;
    if (with_logits) /* tied LM head: logits = lnf @ wte^T */
        gl_sgemm(0, 1, N, V, C, 1.0f, m->lnf, C, m->params + m->wte, C, 0.0f, m->logits, V);
}

float gl_model_loss(gl_model *m, const int32_t *targets, const float *mask) {
    const int N = m->B * m->T, V = m->cfg.vocab_size;
    /* the gradient overwrites the logits, row by row: no second (N,V) buffer */
    float loss = gl_crossentropy_forward_backward(NULL, m->logits, targets, mask, 1.0f, N, V);
    m->have_logits = 0;
    return loss;
}

/* ---- backward -------------------------------------------------------------------------- */

/* A linear layer's backward pass whose dx is written, not accumulated: dx = dout @ w^T (the
 * product overwrites dx, so the buffer needs no zeroing first); dw += x^T @ dout; db += sum_n
 * dout (written instead when !acc). Shapes as in gl_matmul_backward. */
static void linear_backward_set_dx(float *dx, float *dw, float *db, const float *dout,
                                   const float *x, const float *w, int N, int C, int OC,
                                   int acc) {
    gl_sgemm(0, 1, N, C, OC, 1.0f, dout, OC, w, OC, 0.0f, dx, C);
    gl_matmul_backward(NULL, dw, db, dout, x, w, N, C, OC, acc);
}

/* With acc == 0 every gradient is written rather than added to (PyTorch's backward after
 * zero_grad(set_to_none=True) does the same): each tensor's first writer below overwrites --
 * the products with beta 0, which never read the old gradient -- and the later ones add. So
 * a training step needs no gl_model_zero_grad, a pass over every gradient (gpt2: 124M floats),
 * and the weight-gradient products do not read 0s back from memory. The first writers: the
 * head's dwte (else a memset), lnf, every layer's weights and biases, and dwpe (a memset of
 * its block_size rows, then added to as the embedding adds to dwte). */
void gl_model_backward(gl_model *m, const float *dlogits, const float *dhidden, int acc) {
    const int B = m->B, T = m->T, N = B * T;
    const int C = m->cfg.n_embd, NH = m->cfg.n_head, V = m->cfg.vocab_size, L = m->cfg.n_layer;
    const size_t NC = (size_t)N * C;
    float *g = m->grads;
    float *dlnf = m->dC1; /* d loss / d (final hidden state) */
    if (dlogits) { /* tied head: dlnf = dlogits @ wte; dwte += dlogits^T @ lnf */
        gl_sgemm(0, 0, N, C, V, 1.0f, dlogits, V, m->params + m->wte, C, 0.0f, dlnf, C);
        gl_sgemm(1, 0, V, C, N, 1.0f, dlogits, V, m->lnf, C, acc ? 1.0f : 0.0f, g + m->wte, C);
    } else {
        memset(dlnf, 0, NC * sizeof(float));
        if (!acc) memset(g + m->wte, 0, (size_t)V * C * sizeof(float));
    }
    if (!acc) memset(g + m->wpe, 0, (size_t)m->cfg.block_size * C * sizeof(float));
    if (dhidden)
        for (size_t i = 0; i < NC; i++) dlnf[i] += dhidden[i];
    float *dres = m->dres; /* d loss / d (residual stream), flowing down the blocks */
    memset(dres, 0, NC * sizeof(float));
    const float *xlast = L > 0 ? m->blocks[L - 1].res3 : m->encoded;
    gl_layernorm_backward(dres, g + m->lnfw, g + m->lnfb, dlnf, xlast, m->params + m->lnfw,
                          m->lnf_mean, m->lnf_rstd, N, C, acc);
    for (int l = L - 1; l >= 0; l--) {
        block_ptrs w = block_tensors(m, m->params, l), dw = block_tensors(m, g, l);
        block_acts *a = &m->blocks[l];
        const float *x = l == 0 ? m->encoded : m->blocks[l - 1].res3;
        /* MLP: res3 = res2 + fcproj(gelu(fc(ln2(res2)))); dres holds d res3 = d fcproj */
        linear_backward_set_dx(m->dH1, dw.fcprojw, dw.fcprojb, dres, a->fch_gelu, w.fcprojw,
                               N, 4 * C, C, acc);
        gl_gelu_backward(m->dH2, a->fch, m->dH1, (size_t)N * 4 * C, 0); /* dH2 written */
        linear_backward_set_dx(m->dC2, dw.fcw, dw.fcb, m->dH2, a->ln2, w.fcw, N, C, 4 * C, acc);
        gl_layernorm_backward(dres, dw.ln2w, dw.ln2b, m->dC2, a->res2, w.ln2w, a->ln2_mean,
                              a->ln2_rstd, N, C, acc); /* dres now holds d res2 */
        /* attention: res2 = x + proj(attn(qkv(ln1(x)))) */
        linear_backward_set_dx(m->dC3, dw.projw, dw.projb, dres, a->atty, w.projw, N, C, C, acc);
        gl_attention_backward(m->dQKV, m->dC3, a->qkv, a->atty, a->lse, B, T, C, NH, 0);
        linear_backward_set_dx(m->dC2, dw.qkvw, dw.qkvb, m->dQKV, a->ln1, w.qkvw, N, C, 3 * C,
                               acc);
        gl_layernorm_backward(dres, dw.ln1w, dw.ln1b, m->dC2, x, w.ln1w, a->ln1_mean,
                              a->ln1_rstd, N, C, acc); /* dres now holds d x */
    }
    gl_embedding_backward(g + m->wte, g + m->wpe, dres, m->idx, B, T, C);
}

void gl_model_backward_loss(gl_model *m, int acc) { gl_model_backward(m, m->logits, NULL, acc); }

/* ---- sampling -------------------------------------------------------------------------- */

typedef struct {
    float v;
    int32_t i;
} scored;

static int scored_desc(const void *a, const void *b) {
    float x = ((const scored *)a)->v, y = ((const scored *)b)->v;
    if (x != y) return x < y ? 1 : -1;
    return ((const scored *)a)->i - ((const scored *)b)->i; /* ties: lower id first */
}

/* Moves the k largest of w[0:n] to w[0:k] (any order): quickselect, deterministic pivots. */
static void select_top_k(scored *w, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        scored pivot = w[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (scored_desc(&w[i], &pivot) < 0) i++;
            while (scored_desc(&w[j], &pivot) > 0) j--;
            if (i <= j) {
                scored t = w[i];
                w[i++] = w[j];
                w[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* Draws one token from logits (V). temperature 0: argmax. Otherwise from softmax(logits/temp)
 * restricted to the top_k tokens and then to the smallest set whose probability reaches
 * top_p. *logprob gets the token's log-probability under the unrestricted softmax of
 * logits/temperature (logits alone when greedy): what a forward pass recomputes. */
static int32_t sample_token(const float *logits, int V, const gl_sampling *s, uint64_t *rng,
                            float *logprob, scored *work) {
    const float invT = s->temperature > 0 ? 1.0f / s->temperature : 1.0f;
    float mx = -INFINITY;
    int32_t arg = 0;
    for (int v = 0; v < V; v++)
        if (logits[v] > mx) mx = logits[v], arg = v;
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((double)(logits[v] - mx) * invT);
    const double lse = log(sum); /* of (logits - max) / T */
    int32_t tok = arg;
    if (s->temperature > 0) {
        int n = V;
        for (int v = 0; v < V; v++) work[v].v = logits[v], work[v].i = v;
        if (s->top_k > 0 && s->top_k < V) {
            select_top_k(work, V, s->top_k);
            n = s->top_k;
        }
        if (s->top_p < 1.0f) {
            qsort(work, (size_t)n, sizeof *work, scored_desc);
            double tot = 0.0, acc = 0.0;
            for (int j = 0; j < n; j++) tot += exp((double)(work[j].v - mx) * invT);
            int keep = 0;
            while (keep < n && acc < s->top_p * tot) acc += exp((double)(work[keep++].v - mx) * invT);
            n = keep > 0 ? keep : 1;
        }
        double tot = 0.0;
        for (int j = 0; j < n; j++) tot += exp((double)(work[j].v - mx) * invT);
        double u = uniform01(rng) * tot, acc = 0.0;
        tok = work[n - 1].i;
        for (int j = 0; j < n; j++) {
            acc += exp((double)(work[j].v - mx) * invT);
            if (acc >= u) {
                tok = work[j].i;
                break;
            }
        }
    }
    *logprob = (float)((double)(logits[tok] - mx) * invT - lse);
    return tok;
}

/* ---- generation with a KV cache -------------------------------------------------------- */

/* Buffers of one generate call; B rows, one token each per decode step. */
typedef struct {
    int B, Tmax;
    float *kc, *vc;       /* (L, B, Tmax, C) keys and values of every position seen */
    float *x, *ln, *mean, *rstd, *qkv, *atty, *tmp, *h, *hg, *logits; /* per row */
    scored *work;         /* (V) sampler scratch */
} kv_state;

static float *kv_at(const gl_model *m, const kv_state *s, float *c, int l, int b, int t) {
    const size_t C = m->cfg.n_embd;
    return c + (((size_t)l * s->B + b) * s->Tmax + t) * C;
}

/* Attention of one new query per row over the cached keys/values 0..pos[b]:
 * qkv (B,3C) of the new tokens (their k, v already cached); out (B,C). */
static void attention_decode(const gl_model *m, const kv_state *s, int l, const int *pos) {
    const int C = m->cfg.n_embd, NH = m->cfg.n_head, hs = C / NH, B = s->B;
    const float scale = 1.0f / sqrtf((float)hs);
    size_t work = 0; /* cached floats read: at small B and T one thread is quicker */
    for (int b = 0; b < B; b++) work += 2 * (size_t)(pos[b] + 1) * C;
#pragma omp parallel for schedule(static) if (work >= GL_PAR_MIN)
    for (int bh = 0; bh < B * NH; bh++) {
        const int b = bh / NH, h = bh % NH, n = pos[b] + 1;
        const float *q = s->qkv + (size_t)b * 3 * C + h * hs;
        float *out = s->atty + (size_t)b * C + h * hs;
        float mx = -INFINITY, sum = 0.0f;
        for (int i = 0; i < hs; i++) out[i] = 0.0f;
        for (int t = 0; t < n; t++) { /* online softmax over the cached positions */
            const float *k = kv_at(m, s, s->kc, l, b, t) + h * hs;
            const float *v = kv_at(m, s, s->vc, l, b, t) + h * hs;
            float sc = 0.0f;
            for (int i = 0; i < hs; i++) sc += q[i] * k[i];
            sc *= scale;
            float nm = sc > mx ? sc : mx, corr = expf(mx - nm), p = expf(sc - nm);
            sum = sum * corr + p;
            for (int i = 0; i < hs; i++) out[i] = out[i] * corr + p * v[i];
            mx = nm;
        }
        for (int i = 0; i < hs; i++) out[i] /= sum;
    }
}

/* One decode step: token tok[b] at position pos[b] for every row -> s->logits (B,V). */
static void decode_step(gl_model *m, kv_state *s, const int32_t *tok, const int *pos) {
    const int C = m->cfg.n_embd, V = m->cfg.vocab_size, B = s->B;
    const float *wte = m->params + m->wte, *wpe = m->params + m->wpe;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < C; i++)
            s->x[(size_t)b * C + i] = wte[(size_t)tok[b] * C + i] + wpe[(size_t)pos[b] * C + i];
    ln_site ln = ln_after(m, -1);
    gl_layernorm_forward(s->ln, s->mean, s->rstd, s->x, ln.w, ln.b, B, C);
    for (int l = 0; l < m->cfg.n_layer; l++) { /* s->ln holds the block's ln1 */
        block_ptrs w = block_tensors(m, m->params, l);
        gl_matmul_forward(s->qkv, s->ln, w.qkvw, w.qkvb, B, C, 3 * C);
        for (int b = 0; b < B; b++) {
            memcpy(kv_at(m, s, s->kc, l, b, pos[b]), s->qkv + (size_t)b * 3 * C + C, C * sizeof(float));
            memcpy(kv_at(m, s, s->vc, l, b, pos[b]), s->qkv + (size_t)b * 3 * C + 2 * C, C * sizeof(float));
        }
        attention_decode(m, s, l, pos);
        gl_matmul_forward(s->tmp, s->atty, w.projw, w.projb, B, C, C);
        gl_residual_layernorm_forward(s->x, s->ln, s->mean, s->rstd, s->x, s->tmp, w.ln2w, w.ln2b,
                                      B, C);
        gl_matmul_forward(s->h, s->ln, w.fcw, w.fcb, B, C, 4 * C);
        gl_gelu_forward(s->hg, s->h, (size_t)B * 4 * C);
        gl_matmul_forward(s->tmp, s->hg, w.fcprojw, w.fcprojb, B, 4 * C, C);
        ln = ln_after(m, l);
        gl_residual_layernorm_forward(s->x, s->ln, s->mean, s->rstd, s->x, s->tmp, ln.w, ln.b,
                                      B, C);
    }
    gl_sgemm(0, 1, B, V, C, 1.0f, s->ln, C, wte, C, 0.0f, s->logits, V);
}

static int is_stop(const gl_sampling *s, int32_t t) {
    for (int i = 0; i < s->n_stop; i++)
        if (s->stop[i] == t) return 1;
    return 0;
}

int gl_model_generate(gl_model *m, int32_t *tokens, float *logprobs, const int *prompt_len,
                      int B, int Tmax, int max_new, const gl_sampling *smp,
                      int (*interrupt)(void *), void *ctx) {
    const int C = m->cfg.n_embd, V = m->cfg.vocab_size, L = m->cfg.n_layer;
    int Lmax = 0;
    for (int b = 0; b < B; b++) Lmax = prompt_len[b] > Lmax ? prompt_len[b] : Lmax;
    if (max_new <= 0) return 0;
    kv_state s = {B, Tmax};
    const size_t cache = (size_t)L * B * Tmax * C, BC = (size_t)B * C;
    float *buf = alloc_floats(2 * cache + BC * 18 + 2 * (size_t)B + (size_t)B * V);
    s.work = malloc((size_t)V * sizeof(scored));
    int *pos = malloc((size_t)B * sizeof(int)), *done = calloc((size_t)B, sizeof(int));
    int32_t *cur = malloc((size_t)B * sizeof(int32_t));
    uint64_t *rng = malloc((size_t)B * sizeof(uint64_t));
    int produced = -1;
    if (!buf || !s.work || !pos || !done || !cur || !rng || gl_model_reserve(m, B, Lmax) != 0)
        goto out;
    float *p = buf;
    s.kc = p, p += cache;
    s.vc = p, p += cache;
    s.x = p, p += BC;
    s.ln = p, p += BC;
    s.qkv = p, p += 3 * BC;
    s.atty = p, p += BC;
    s.tmp = p, p += BC;
    s.h = p, p += 4 * BC;
    s.hg = p, p += 4 * BC;
    s.mean = p, p += B;
    s.rstd = p, p += B;
    s.logits = p;

    /* prefill: one ordinary forward over the prompts (padded to Lmax with token 0), then copy
     * each position's keys and values into the cache. Positions past a row's prompt hold junk
     * that the row's own new tokens overwrite before any query can see them. */
    int32_t *ids = m->idx; /* reuse the model's id buffer as the padded prompt batch */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < Lmax; t++)
            ids[(size_t)b * Lmax + t] = t < prompt_len[b] ? tokens[(size_t)b * Tmax + t] : 0;
    gl_model_forward(m, ids, B, Lmax, 0);
    for (int l = 0; l < L; l++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < Lmax; t++) {
                const float *qkv = m->blocks[l].qkv + ((size_t)b * Lmax + t) * 3 * C;
                memcpy(kv_at(m, &s, s.kc, l, b, t), qkv + C, C * sizeof(float));
                memcpy(kv_at(m, &s, s.vc, l, b, t), qkv + 2 * C, C * sizeof(float));
            }
    for (int b = 0; b < B; b++)
        memcpy(s.ln + (size_t)b * C, m->lnf + ((size_t)b * Lmax + prompt_len[b] - 1) * C,
               C * sizeof(float));
    gl_sgemm(0, 1, B, V, C, 1.0f, s.ln, C, m->params + m->wte, C, 0.0f, s.logits, V);
    m->B = m->T = 0; /* the training activations no longer hold a forward pass */
    m->have_logits = 0;

    for (int b = 0; b < B; b++) {
        uint64_t st = smp->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(b + 1));
        rng[b] = splitmix64(&st);
    }
    for (int i = 0; i < max_new; i++) {
        int all_done = 1;
        for (int b = 0; b < B; b++) {
            float lp = 0.0f;
            int32_t t = cur[b];
            if (!done[b]) {
                t = sample_token(s.logits + (size_t)b * V, V, smp, &rng[b], &lp, s.work);
                if (is_stop(smp, t)) done[b] = 1;
            }
            tokens[(size_t)b * Tmax + prompt_len[b] + i] = t;
            if (logprobs) logprobs[(size_t)b * max_new + i] = lp;
            cur[b] = t;
            pos[b] = prompt_len[b] + i;
            all_done &= done[b];
        }
        produced = i + 1;
        if (all_done) { /* pad the rest of every row with its stop token */
            for (int j = i + 1; j < max_new; j++)
                for (int b = 0; b < B; b++) {
                    tokens[(size_t)b * Tmax + prompt_len[b] + j] = cur[b];
                    if (logprobs) logprobs[(size_t)b * max_new + j] = 0.0f;
                }
            produced = max_new;
            break;
        }
        if (i + 1 == max_new) break;
        if (interrupt && interrupt(ctx)) break;
        decode_step(m, &s, cur, pos);
    }
out:
    free(buf);
    free(s.work);
    free(pos);
    free(done);
    free(cur);
    free(rng);
    return produced;
}
