"""Fuzzing: random arguments at every entry point, random corruptions of every file format.

The promise under test: whatever a user passes, gptlab answers with ValueError or TypeError (or
a correct result) and the process never crashes. A segfault would kill pytest itself, so each
fuzz campaign runs in a child process (this file run as a script) and the test checks how the
child ended: exit code 0, no signal.

- ``core``: hypothesis draws arguments for every function of ``gptlab._core`` (and the methods
  of ``_core.Model``): first a valid call with random sizes (0, 1, odd, ...) and values (NaN,
  Inf, 3e38, denormals), then 0-3 arguments replaced by something wrong: another dtype or
  rank, a non-contiguous / Fortran / read-only / misaligned array, an empty or 0-d array, a
  size off by one, an out-of-range id, a Python scalar, None, a string.
  Raw bindings may also raise OverflowError: CPython's own argument parser refuses a Python
  int that does not fit the C int it asks for.
- ``api``: the same for the public Python API (GPT.forward/forward_hidden/backward/generate,
  gptlab.losses.*, AdamW, Tokenizer.train/encode/decode): only ValueError/TypeError.
- ``files``: >= 10,000 mutations of tiny valid files for GPT.load (safetensors),
  Tokenizer.load (JSON) and Tokenizer.from_gpt2_files: truncation, flipped/inserted/deleted
  bytes, huge header lengths, huge/negative/wrong shapes, dtypes and offsets, bad JSON. Each is
  a ValueError/TypeError or a load that equals the original; the child's address space is
  capped (RLIMIT_AS) so an absurd allocation would fail the run.

Run one campaign by hand: ``python tests/test_fuzz.py core [n_examples]``.
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(target: str, timeout: float = 120) -> str:
    from child import PKG_ROOT, child_env

    r = subprocess.run([sys.executable, "-X", "faulthandler", os.path.abspath(__file__), target],
                       capture_output=True, text=True, timeout=timeout, cwd=PKG_ROOT,
                       env=child_env(OMP_NUM_THREADS="1"))
    assert r.returncode == 0, (f"fuzz campaign {target!r} failed with exit code {r.returncode} "
                               f"(negative: killed by that signal)\n--- stdout\n{r.stdout[-4000:]}"
                               f"\n--- stderr\n{r.stderr[-8000:]}")
    return r.stdout


def test_core_bindings_raise_only_value_or_type_error():
    out = run_child("core")
    assert "core: ok" in out


def test_public_api_raises_only_value_or_type_error():
    out = run_child("api")
    assert "api: ok" in out


def test_file_readers_survive_10000_mutations():
    out = run_child("files")
    counts = dict(line.split("=") for line in out.split() if "=" in line)
    assert int(counts["cases"]) >= 10_000
    assert int(counts["loaded"]) > 0 and int(counts["refused"]) > 0  # both outcomes reached


# =============================================================================================
# The child process: everything below runs only as a script.
# =============================================================================================

# CI replays the same examples each run; GPTLAB_FUZZ_RANDOM=1 explores new ones.
DERANDOMIZE = os.environ.get("GPTLAB_FUZZ_RANDOM") != "1"
SPECIALS = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 3.4e38, -3.4e38, 1e-45, 1e30]


def _core_campaign(n_examples: int) -> None:  # noqa: C901 -- one table of every binding
    import numpy as np
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import gptlab as gl
    from gptlab import _core

    OK = (ValueError, TypeError, OverflowError)

    def floats(d, shape):
        rng = np.random.default_rng(d.draw(st.integers(0, 2**32 - 1), label="seed"))
        a = rng.standard_normal(shape).astype(np.float32)
        mode = d.draw(st.sampled_from(["plain", "plain", "special", "huge"]), label="values")
        if mode == "special" and a.size:
            k = rng.integers(0, a.size, size=max(1, a.size // 3))
            a.flat[k] = rng.choice(np.array(SPECIALS, np.float32), size=len(k))
        elif mode == "huge":
            a *= np.float32(1e30)
        return a

    def ids(d, shape, V):
        rng = np.random.default_rng(d.draw(st.integers(0, 2**32 - 1), label="seed"))
        return rng.integers(0, max(V, 1), size=shape).astype(np.int32)

    def dim(d, lo=0, hi=7):
        return d.draw(st.integers(lo, hi), label="dim")

    def lead(d):  # leading axes of an (..., C) array: rank 0-2
        return tuple(dim(d) for _ in range(d.draw(st.integers(0, 2), label="rank")))

    JUNK = [None, 0, 1, -1, 2**31, 2**63, 1.5, float("nan"), "x", b"x", [1.0, 2.0], (), {}]

    def mutate(d, a, args):
        """A wrong version of argument a (an array or a scalar)."""
        kind = d.draw(st.sampled_from(
            ["dtype", "noncontig", "fortran", "readonly", "misaligned", "rank", "shape", "empty",
             "zerod", "junk", "alias", "ids", "special"]), label="mutation")
        if not isinstance(a, np.ndarray) or kind == "junk":
            return d.draw(st.sampled_from(JUNK + [np.zeros(3, np.float32)]), label="junk")
        if kind == "dtype":
            dt = d.draw(st.sampled_from([np.float64, np.float16, np.int32, np.int64, np.uint8,
                                         np.bool_, np.complex64, object]), label="dtype")
            return a.astype(dt)
        if kind == "noncontig" and a.ndim:
            return np.repeat(a, 2, axis=-1)[..., ::2]
        if kind == "fortran" and a.ndim >= 2:
            return np.asfortranarray(a)
        if kind == "readonly":
            b = a.copy()
            b.setflags(write=False)
            return b
        if kind == "misaligned":
            buf = np.zeros(a.nbytes + a.itemsize, np.uint8)
            b = buf[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
            b[...] = a
            return b
        if kind == "rank":
            return a[None] if d.draw(st.booleans()) or a.ndim == 0 else a.reshape(-1)
        if kind == "shape" and a.ndim:
            shape = list(a.shape)
            ax = d.draw(st.integers(0, a.ndim - 1))
            shape[ax] = max(0, shape[ax] + d.draw(st.sampled_from([-1, 1, 5])))
            return np.resize(a, shape)
        if kind == "empty":
            return np.zeros((0,) * max(a.ndim, 1), a.dtype)
        if kind == "zerod":
            return np.array(a.flat[0] if a.size else 0, a.dtype)
        if kind == "alias":
            others = [x for x in args if isinstance(x, np.ndarray)]
            return d.draw(st.sampled_from(others)) if others else a
        if kind == "ids" and a.dtype == np.int32 and a.size:
            b = a.copy()
            b.flat[d.draw(st.integers(0, a.size - 1))] = d.draw(
                st.sampled_from([-1, 2**31 - 1, -(2**31), 10**6]))
            return b
        if kind == "special" and a.dtype == np.float32 and a.size:
            b = a.copy()
            b.flat[d.draw(st.integers(0, a.size - 1))] = d.draw(st.sampled_from(SPECIALS))
            return b
        return a

    def scalar(d, good):
        return d.draw(st.sampled_from([good, good, good, float("nan"), float("inf"), -1.0, 0,
                                       1e40, 2**40, -(2**31), "x", None]), label="scalar")

    def opt(d, a):
        return None if d.draw(st.booleans(), label="none") else a

    # a small tokenizer and model shared by the calls
    tok = gl.Tokenizer.train("the cat sat on the mat. " * 20 + "dogs run fast!", 300)
    tokens, special_ids, merges = _core.bpe_info(tok._h)
    blob = b"".join(tokens)
    off = np.zeros(len(tokens) + 1, np.int32)
    off[1:] = np.cumsum([len(t) for t in tokens])
    special = np.zeros(len(tokens), np.int32)
    special[special_ids] = 1
    V_m, T_m = 37, 16
    model = _core.Model(vocab_size=V_m, block_size=T_m, n_layer=1, n_head=2, n_embd=8)
    model.init_weights(1)
    trainer = _core.bpe_trainer_new([b"<|x|>"])

    def b_sgemm(d):
        ta, tb, M, N, K = d.draw(st.booleans()), d.draw(st.booleans()), dim(d), dim(d), dim(d)
        A = floats(d, (K, M) if ta else (M, K))
        B = floats(d, (N, K) if tb else (K, N))
        return _core.sgemm, [ta, tb, A, B, floats(d, (M, N)), scalar(d, 1.0), scalar(d, 0.5)]

    def b_emb_f(d):
        B, T, C, V = dim(d), dim(d), dim(d), dim(d)
        return _core.embedding_forward, [ids(d, (B, T), V), floats(d, (V, C)),
                                         floats(d, (T + dim(d, 0, 2), C))]

    def b_emb_b(d):
        B, T, C, V = dim(d), dim(d), dim(d), dim(d)
        return _core.embedding_backward, [floats(d, (V, C)), floats(d, (T + dim(d, 0, 2), C)),
                                          floats(d, (B, T, C)), ids(d, (B, T), V)]

    def b_ln_f(d):
        L, C = lead(d), dim(d, 1)
        return _core.layernorm_forward, [floats(d, L + (C,)), floats(d, (C,)), floats(d, (C,))]

    def b_ln_res(d):
        L, C = lead(d), dim(d, 1)
        x = L + (C,)
        return _core.residual_layernorm_forward, [floats(d, x), floats(d, x), floats(d, (C,)),
                                                  floats(d, (C,))]

    def b_ln_b(d):
        L, C = lead(d), dim(d, 1)
        x = L + (C,)
        return _core.layernorm_backward, [floats(d, x), floats(d, (C,)), floats(d, (C,)),
                                          floats(d, x), floats(d, x), floats(d, (C,)),
                                          floats(d, L), floats(d, L)]

    def b_mm_f(d):
        L, C, OC = lead(d), dim(d, 1), dim(d)
        return _core.matmul_forward, [floats(d, L + (C,)), floats(d, (C, OC)),
                                      opt(d, floats(d, (OC,)))]

    def b_mm_b(d):
        L, C, OC = lead(d), dim(d, 1), dim(d)
        return _core.matmul_backward, [opt(d, floats(d, L + (C,))), floats(d, (C, OC)),
                                       opt(d, floats(d, (OC,))), floats(d, L + (OC,)),
                                       floats(d, L + (C,)), floats(d, (C, OC))]

    def b_att_f(d):
        B, T, NH, hs = dim(d), dim(d), dim(d, 1, 3), dim(d, 1, 4)
        return _core.attention_forward, [floats(d, (B, T, 3 * NH * hs)), scalar(d, NH)]

    def b_att_b(d):
        B, T, NH, hs = dim(d), dim(d), dim(d, 1, 3), dim(d, 1, 4)
        C = NH * hs
        return _core.attention_backward, [floats(d, (B, T, 3 * C)), floats(d, (B, T, C)),
                                          floats(d, (B, T, 3 * C)), floats(d, (B, T, C)),
                                          floats(d, (B, NH, T)), scalar(d, NH)]

    def b_gelu_f(d):
        return _core.gelu_forward, [floats(d, lead(d))]

    def b_gelu_b(d):
        s = lead(d)
        return _core.gelu_backward, [floats(d, s), floats(d, s), floats(d, s)]

    def b_res_f(d):
        s = lead(d)
        return _core.residual_forward, [floats(d, s), floats(d, s)]

    def b_res_b(d):
        s = lead(d)
        return _core.residual_backward, [floats(d, s), floats(d, s), floats(d, s)]

    def b_head_f(d):
        L, C = lead(d), dim(d, 1)
        return _core.scalar_head_forward, [floats(d, L + (C,)), floats(d, (C,)), floats(d, (1,))]

    def b_head_b(d):
        L, C = lead(d), dim(d, 1)
        return _core.scalar_head_backward, [opt(d, floats(d, L + (C,))), floats(d, (C,)),
                                            floats(d, (1,)), floats(d, L), floats(d, L + (C,)),
                                            floats(d, (C,))]

    def mask(d, n):
        return opt(d, (np.random.default_rng(dim(d)).random(n) < 0.7).astype(np.float32))

    def b_ce_f(d):
        N, V = dim(d), dim(d)
        return _core.crossentropy_forward, [opt(d, floats(d, (N,))), floats(d, (N, V)),
                                            ids(d, (N,), V), mask(d, N)]

    def b_ce_b(d):
        N, V = dim(d), dim(d)
        return _core.crossentropy_backward, [floats(d, (N, V)), floats(d, (N, V)),
                                             ids(d, (N,), V), mask(d, N), scalar(d, 1.0)]

    def b_lp_f(d):
        N, V = dim(d), dim(d)
        return _core.logprobs_forward, [floats(d, (N,)), opt(d, floats(d, (N,))),
                                        floats(d, (N, V)), ids(d, (N,), V), scalar(d, 0.7)]

    def b_lp_b(d):
        N, V = dim(d), dim(d)
        return _core.logprobs_backward, [floats(d, (N, V)), floats(d, (N, V)), ids(d, (N,), V),
                                         floats(d, (N,)), opt(d, floats(d, (N,))),
                                         scalar(d, 1.3)]

    def counts(d, P, K):
        return opt(d, np.random.default_rng(P).integers(2, max(K, 2) + 1, P).astype(np.int32))

    def b_rank_f(d):
        P, K = dim(d), dim(d)
        return _core.ranking_loss_forward, [opt(d, floats(d, (P,))), floats(d, (P, K)),
                                            counts(d, P, K), scalar(d, 0.0), scalar(d, 0.01)]

    def b_rank_b(d):
        P, K = dim(d), dim(d)
        return _core.ranking_loss_backward, [floats(d, (P, K)), floats(d, (P, K)),
                                             counts(d, P, K), scalar(d, 0.0), scalar(d, 0.0),
                                             scalar(d, 1.0)]

    def vecs(d, k, N):
        return [floats(d, (N,)) for _ in range(k)]

    def b_ppo_f(d):
        N = dim(d)
        return _core.ppo_policy_forward, vecs(d, 3, N) + [mask(d, N), scalar(d, 0.2)]

    def b_ppo_b(d):
        N = dim(d)
        return _core.ppo_policy_backward, vecs(d, 4, N) + [mask(d, N), scalar(d, 0.2),
                                                           scalar(d, 1.0)]

    def b_val_f(d):
        N = dim(d)
        return _core.value_loss_forward, vecs(d, 3, N) + [mask(d, N), scalar(d, 0.2)]

    def b_val_b(d):
        N = dim(d)
        return _core.value_loss_backward, vecs(d, 4, N) + [mask(d, N), scalar(d, 0.2),
                                                           scalar(d, 1.0)]

    def b_kl_f(d):
        N = dim(d)
        return _core.kl_forward, vecs(d, 3, N) + [scalar(d, d.draw(st.integers(0, 4)))]

    def b_kl_b(d):
        N = dim(d)
        return _core.kl_backward, vecs(d, 4, N) + [scalar(d, d.draw(st.integers(0, 4)))]

    def b_dpo_f(d):
        P = dim(d)
        return _core.dpo_forward, [opt(d, floats(d, (P,))), opt(d, floats(d, (P,)))] + \
            vecs(d, 4, P) + [scalar(d, 0.1)]

    def b_dpo_b(d):
        P = dim(d)
        return _core.dpo_backward, vecs(d, 6, P) + [scalar(d, 0.1), scalar(d, 1.0)]

    def b_adamw(d):
        s = lead(d)
        return _core.adamw_update, [floats(d, s) for _ in range(4)] + [
            scalar(d, 1e-3), scalar(d, 0.9), scalar(d, 0.95), scalar(d, 1e-8), scalar(d, 0.1),
            scalar(d, d.draw(st.integers(-1, 5)))]

    def b_sumsq(d):
        return _core.sumsq, [floats(d, lead(d))]

    def b_scale(d):
        return _core.scale, [floats(d, lead(d)), scalar(d, 0.5)]

    def b_cos(d):
        return _core.lr_cosine, [scalar(d, dim(d, 0, 50)), scalar(d, 5), scalar(d, 30),
                                 scalar(d, 1e-3), scalar(d, 1e-4)]

    def b_threads(d):
        return _core.set_num_threads, [scalar(d, d.draw(st.integers(-2, 3)))]

    def b_isa(d):
        f = d.draw(st.sampled_from([_core.gemm_set_isa, _core.losses_set_isa,
                                    _core.gemm_set_precision]))
        return f, [d.draw(st.sampled_from(["auto", "portable", "avx2", "avx512", "", "x" * 300,
                                           "float32", "bfloat16", None, 3]))]

    def b_bpe_new(d):
        args = [blob, off.copy(), special.copy(), merges.copy()]
        how = d.draw(st.sampled_from(["off", "special", "merges", "blob", "none"]))
        rng = np.random.default_rng(d.draw(st.integers(0, 2**32 - 1)))
        if how == "off":
            args[1][rng.integers(0, len(off))] = rng.choice([-1, 0, 5, 2**31 - 1, len(blob)])
        elif how == "special":
            args[2][rng.integers(0, len(special))] = rng.choice([-1, 1, 2])
        elif how == "merges" and len(merges):
            args[3][rng.integers(0, len(merges)), rng.integers(0, 2)] = rng.choice(
                [-1, 0, 299, 300, 2**31 - 1])
        elif how == "blob":
            k = int(rng.integers(0, len(blob)))
            args[0] = blob[:k] + bytes([int(rng.integers(0, 256))]) + blob[k + 1:]
        return _core.bpe_new, args

    texts = st.text(max_size=40) | st.sampled_from(["<|x|>", "\ud800", "the cat", "\x00" * 9])

    def b_bpe_encode(d):
        allowed = opt(d, np.array(d.draw(st.lists(st.integers(-2, 305), max_size=3)), np.int32))
        return _core.bpe_encode, [tok._h, d.draw(texts), allowed, d.draw(st.booleans())]

    def b_bpe_batch(d):
        return _core.bpe_encode_batch, [tok._h, d.draw(st.lists(texts, max_size=4)), None]

    def b_bpe_decode(d):
        return _core.bpe_decode, [tok._h, ids(d, (dim(d),), 300)]

    def b_bpe_misc(d):
        f = d.draw(st.sampled_from([_core.bpe_token_id, _core.bpe_pretokenize, _core.bpe_info]))
        if f is _core.bpe_info:
            return f, [tok._h]
        if f is _core.bpe_token_id:
            return f, [tok._h, d.draw(st.binary(max_size=6))]
        return f, [tok._h, d.draw(texts)]

    def b_trainer(d):
        f = d.draw(st.sampled_from(["new", "feed", "train"]))
        if f == "new":
            return _core.bpe_trainer_new, [d.draw(st.lists(st.binary(max_size=4), max_size=3))]
        if f == "feed":
            return _core.bpe_trainer_feed, [trainer, d.draw(texts)]
        return _core.bpe_trainer_train, [trainer, scalar(d, d.draw(st.integers(250, 300)))]

    def b_model_new(d):
        return _core.Model, [scalar(d, dim(d, 1)) for _ in range(5)]

    def b_m_forward(d):
        B, T = dim(d, 1, 3), dim(d, 1, T_m)
        return model.forward, [ids(d, (B, T), V_m), d.draw(st.booleans())]

    def b_m_loss(d):
        B, T = dim(d, 1, 3), dim(d, 1, T_m)
        return model.loss, [ids(d, (B, T), V_m), ids(d, (B, T), V_m), mask(d, (B, T))]

    def b_m_backward(d):
        B, T = dim(d, 1, 3), dim(d, 1, T_m)
        return model.backward, [opt(d, floats(d, (B, T, V_m))), opt(d, floats(d, (B, T, 8)))]

    def b_m_generate(d):
        B, T0 = dim(d, 1, 3), dim(d, 1, 6)
        n = dim(d, 1, T_m - T0)
        toks = np.zeros((B, T0 + n), np.int32)
        toks[:, :T0] = ids(d, (B, T0), V_m)
        lens = np.full(B, T0, np.int32)
        stop = ids(d, (dim(d, 0, 2),), V_m)
        return model.generate, [toks, lens, scalar(d, n), scalar(d, 0.8), scalar(d, 0.9),
                                scalar(d, 5), stop, scalar(d, 7), d.draw(st.booleans())]

    def b_m_misc(d):
        f = d.draw(st.sampled_from(["zero_grad", "init_weights", "params", "tensors"]))
        if f == "init_weights":
            return model.init_weights, [scalar(d, 3)]
        return getattr(model, f), []

    builders = [b_sgemm, b_emb_f, b_emb_b, b_ln_f, b_ln_res, b_ln_b, b_mm_f, b_mm_b, b_att_f,
                b_att_b, b_gelu_f, b_gelu_b, b_res_f, b_res_b, b_head_f, b_head_b, b_ce_f, b_ce_b,
                b_lp_f, b_lp_b, b_rank_f, b_rank_b, b_ppo_f, b_ppo_b, b_val_f, b_val_b, b_kl_f,
                b_kl_b, b_dpo_f, b_dpo_b, b_adamw, b_sumsq, b_scale, b_cos, b_threads, b_isa,
                b_bpe_new, b_bpe_encode, b_bpe_batch, b_bpe_decode, b_bpe_misc, b_trainer,
                b_model_new, b_m_forward, b_m_loss, b_m_backward, b_m_generate, b_m_misc]
    trace = os.environ.get("GPTLAB_FUZZ_TRACE")

    @settings(max_examples=n_examples, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_call(d):
        fn, args = d.draw(st.sampled_from(builders))(d)
        for _ in range(d.draw(st.sampled_from([0, 0, 1, 1, 2, 3]), label="n_mutations")):
            if args:
                i = d.draw(st.integers(0, len(args) - 1), label="which")
                args[i] = mutate(d, args[i], args)
        if trace:
            print(getattr(fn, "__name__", fn), [getattr(a, "shape", a) for a in args],
                  file=sys.stderr, flush=True)
        try:
            fn(*args)
        except OK:
            pass
        finally:
            _core.set_num_threads(1)
            _core.gemm_set_isa("auto")
            _core.losses_set_isa("auto")
            _core.gemm_set_precision("float32")

    one_call()
    print("core: ok")


def _api_campaign(n_examples: int) -> None:
    import numpy as np
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import gptlab as gl

    cfg = gl.GPTConfig(vocab_size=41, block_size=12, n_layer=1, n_head=2, n_embd=8)
    model = gl.GPT(cfg, seed=0)
    opt = gl.AdamW(model, lr=1e-3)
    tok = gl.Tokenizer.train("a cat sat on a mat; the dog ran. " * 10, 280)

    def value(d):
        """A random argument: arrays of any dtype/shape/values, scalars, junk."""
        kind = d.draw(st.sampled_from(["int", "int", "float", "float", "bool", "junk", "list",
                                       "nested"]), label="kind")
        shape = tuple(d.draw(st.lists(st.integers(0, 5), max_size=4), label="shape"))
        rng = np.random.default_rng(d.draw(st.integers(0, 2**32 - 1), label="seed"))
        if kind == "int":
            hi = d.draw(st.sampled_from([2, 41, 2**31, 2**62]))
            a = rng.integers(-2 if d.draw(st.booleans()) else 0, hi, size=shape)
            return a.astype(d.draw(st.sampled_from([np.int64, np.int32, np.uint8, np.int8])))
        if kind == "float":
            a = rng.standard_normal(shape)
            if a.size and d.draw(st.booleans()):
                a.flat[rng.integers(0, a.size)] = d.draw(st.sampled_from(SPECIALS + [1e300]))
            a = a.astype(d.draw(st.sampled_from([np.float32, np.float64, np.float16])))
            return a.T if d.draw(st.booleans()) else a
        if kind == "bool":
            return rng.random(shape) < 0.5
        if kind == "list":
            return d.draw(st.lists(st.integers(-5, 50), max_size=6))
        if kind == "nested":
            return [[1, 2], [3]]
        return d.draw(st.sampled_from([None, 0, -1, 5, 2**40, 1.5, float("nan"), "x", b"x",
                                       object(), np.array("str"), np.array([None])]))

    def good_idx(d):
        B, T = d.draw(st.integers(1, 3)), d.draw(st.integers(1, 12))
        return np.random.default_rng(B * T).integers(0, 41, (B, T))

    SCALARS = [None, 0, -1, 2**31, 2**40, 2**70, -(2**70), 1e300, float("nan"), float("inf"),
               "x", 1.5, True, np.int64(3), np.float32("nan"), np.array([2, 3])]

    def arg(d, good):
        """Mostly the good value; else a wrong scalar or a random array."""
        k = d.draw(st.integers(0, 5), label="arg")
        return value(d) if k == 0 else d.draw(st.sampled_from(SCALARS)) if k == 1 else good

    calls = {
        "forward": lambda d: model.forward(arg(d, good_idx(d))),
        "forward_loss": lambda d: model.forward(arg(d, good_idx(d)), value(d),
                                                mask=value(d) if d.draw(st.booleans()) else None),
        "forward_hidden": lambda d: model.forward_hidden(value(d)),
        "backward": lambda d: model.backward(dlogits=value(d) if d.draw(st.booleans()) else None,
                                             dhidden=value(d) if d.draw(st.booleans()) else None),
        "generate": lambda d: model.generate(
            arg(d, good_idx(d)[:, :4]), arg(d, d.draw(st.integers(1, 4))),
            temperature=arg(d, 0.8), top_k=arg(d, None), top_p=arg(d, None), stop=arg(d, None),
            seed=arg(d, 1), return_logprobs=d.draw(st.booleans()),
            prompt_lens=arg(d, None)),
        "cross_entropy": lambda d: gl.losses.cross_entropy(value(d), value(d),
                                                           arg(d, None)),
        "logprobs": lambda d: gl.losses.logprobs(value(d), value(d), arg(d, 1.0)),
        "logprobs_backward": lambda d: gl.losses.logprobs_backward(
            value(d), value(d), value(d), arg(d, None), temperature=arg(d, 1.0)),
        "ranking_loss": lambda d: gl.losses.ranking_loss(value(d), arg(d, None),
                                                         margin=arg(d, 0.0)),
        "ppo_policy_loss": lambda d: gl.losses.ppo_policy_loss(value(d), value(d), value(d),
                                                               arg(d, None), clip=arg(d, 0.2)),
        "value_loss": lambda d: gl.losses.value_loss(value(d), value(d), value(d),
                                                     arg(d, None), clip=arg(d, 0.2)),
        "kl_penalty": lambda d: gl.losses.kl_penalty(value(d), value(d), arg(d, "k1"),
                                                     dkl=arg(d, None)),
        "dpo_loss": lambda d: gl.losses.dpo_loss(value(d), value(d), value(d), value(d),
                                                 beta=arg(d, 0.1)),
        "adamw_step": lambda d: opt.clip_and_step(arg(d, 1.0), lr=arg(d, 1e-3),
                                                  on_nonfinite=arg(d, "skip")),
        "adamw_new": lambda d: gl.AdamW(arg(d, model), arg(d, 1e-3), betas=arg(d, (0.9, 0.95)),
                                        eps=arg(d, 1e-8), weight_decay=arg(d, 0.1)),
        "encode": lambda d: tok.encode(d.draw(st.text(max_size=30)) if d.draw(st.booleans())
                                       else value(d), allowed_special=arg(d, "all")),
        "decode": lambda d: tok.decode(value(d)),
        "train": lambda d: gl.Tokenizer.train(arg(d, "ab ab abc"), arg(d, 270)),
        "config": lambda d: gl.GPTConfig(*[arg(d, 4) for _ in range(5)]),
    }
    names = sorted(calls)

    @settings(max_examples=n_examples, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_call(d):
        name = d.draw(st.sampled_from(names), label="function")
        try:
            calls[name](d)
        except (ValueError, TypeError):
            pass
        except FloatingPointError:  # AdamW refusing a NaN gradient: the documented guard
            assert name == "adamw_step"
        except Exception as e:
            raise AssertionError(f"{name} raised {type(e).__name__}: {e}") from e

    one_call()
    # the model is still usable after all of that
    model.load_state_dict({k: np.full(v.shape, 0.01, np.float32) for k, v in model.params.items()})
    assert np.isfinite(model.forward(np.zeros((1, 3), np.int64), np.ones((1, 3), np.int64)))
    print("api: ok")


def _files_campaign(n_cases: int) -> None:
    import json
    import random
    import resource
    import struct
    import tempfile

    import gptlab as gl

    # An absurd allocation must fail loudly rather than succeed: cap the address space (the
    # OpenMP runtime and numpy need some; 3 GB is far above what tiny files justify). Under
    # AddressSanitizer, whose shadow memory needs terabytes of address space, the cap is
    # ASan's own max_allocation_size_mb instead (set by .ci/sanitize.sh).
    if "asan" not in os.environ.get("LD_PRELOAD", ""):
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    rnd = random.Random(1234)
    d = tempfile.mkdtemp(prefix="gptlab-fuzz-")
    cfg = gl.GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=2)
    ref = gl.GPT(cfg, seed=5)
    ckpt = os.path.join(d, "m.safetensors")
    ref.save(ckpt)
    good_ckpt = open(ckpt, "rb").read()
    n_header = struct.unpack("<Q", good_ckpt[:8])[0]
    header = json.loads(good_ckpt[8:8 + n_header])

    tok = gl.Tokenizer.train("ab ba abab", 260)
    tpath = os.path.join(d, "t.json")
    tok.save(tpath)
    good_tok = open(tpath, "rb").read()
    vpath, mpath = os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt")
    tok.save_gpt2_files(vpath, mpath)
    good_vocab, good_merges = open(vpath, "rb").read(), open(mpath, "rb").read()

    def mutate_bytes(b: bytes) -> bytes:
        b = bytearray(b)
        for _ in range(rnd.choice([1, 1, 2, 4])):
            op = rnd.randrange(6)
            i = rnd.randrange(len(b) + 1)
            if op == 0:
                del b[i:]                                          # truncate
            elif op == 1 and i < len(b):
                b[i] ^= 1 << rnd.randrange(8)                      # flip a bit
            elif op == 2 and i < len(b):
                b[i] = rnd.randrange(256)                          # replace a byte
            elif op == 3:
                b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 5)))
            elif op == 4:
                del b[i:i + rnd.randrange(1, 8)]
            else:
                src = rnd.randrange(len(b) + 1)                    # duplicate a span
                b[i:i] = b[src:src + rnd.randrange(1, 16)]
        return bytes(b)

    big = [2**31, 2**40, 2**63, 2**64 + 1, 10**30, -1, -(2**63), 1.5, 1e400, "7", None, True]

    def mutate_header() -> bytes:
        h = json.loads(json.dumps(header))
        names = [k for k in h if k != "__metadata__"]
        name = rnd.choice(names)
        what = rnd.randrange(9)
        if what == 0:
            h[name]["shape"] = [rnd.choice(big)] + h[name]["shape"][1:]
        elif what == 1:
            h[name]["shape"] = [250_000_000_000, 1]              # a 1 TB tensor
            h[name]["data_offsets"] = [0, 10**12]
        elif what == 2:
            h[name]["dtype"] = rnd.choice(["F64", "I8", "BOOL", "F16", "XX", 3, None])
        elif what == 3:
            h[name]["data_offsets"] = [rnd.choice(big), rnd.choice(big)]
        elif what == 4:
            h[name] = rnd.choice([[], "x", 3, None, {}, {"dtype": "F32"}])
        elif what == 5:
            h["__metadata__"]["gptlab.config"] = rnd.choice(
                ["{", "[]", "3", '{"vocab_size": -1}', json.dumps(dict(
                    cfg.to_dict(), vocab_size=50000, n_embd=40000)),
                 json.dumps(dict(cfg.to_dict(), n_layer=2)), "[" * 50000])
        elif what == 6:
            h["__metadata__"] = rnd.choice([None, [], {"a": 1}, "x"])
        elif what == 7:
            h[name]["shape"] = h[name]["shape"][::-1] + [1]
        else:
            h[rnd.choice(names)]["data_offsets"] = h[name]["data_offsets"]   # overlap
        raw = json.dumps(h).encode()
        n = len(raw) if rnd.random() < 0.8 else rnd.choice([0, 1, 2**40, 2**64 - 1, len(raw) + 9])
        return struct.pack("<Q", n) + raw + good_ckpt[8 + n_header:]

    def mutate_tok_json() -> bytes:
        t = json.loads(good_tok)
        key = rnd.choice(["tokens", "merges", "special_tokens", "vocab_size", "format"])
        t[key] = rnd.choice([None, 3, "x", [], {}, [[1, 2]], [[1000, 2]], [["a", 1]],
                             t[key][:3] if isinstance(t[key], list) else -1, [1e400],
                             {"<|endoftext|>": 10**9}, {"x": 0}, ["Ā" * 3] * 300])
        return json.dumps(t).encode()

    def check_model(m):
        for k, v in ref.params.items():
            assert m.params[k].tobytes() == v.tobytes(), f"{k} loaded differently"

    cases = loaded = refused = 0
    path = os.path.join(d, "case")
    kinds = ["ckpt", "ckpt", "ckpt_header", "tok", "tok_json", "gpt2"]
    while cases < n_cases:
        kind = rnd.choice(kinds)
        if kind == "ckpt":
            data = mutate_bytes(good_ckpt)
        elif kind == "ckpt_header":
            data = mutate_header()
        elif kind == "tok":
            data = mutate_bytes(good_tok)
        elif kind == "tok_json":
            data = mutate_tok_json()
        else:
            data = mutate_bytes(good_vocab if rnd.random() < 0.5 else good_merges)
        cases += 1
        try:
            if kind.startswith("ckpt"):
                with open(path, "wb") as f:
                    f.write(data)
                check_model(gl.GPT.load(path))
            elif kind.startswith("tok"):
                with open(path, "wb") as f:
                    f.write(data)
                t = gl.Tokenizer.load(path)
                assert t.encode("ab ba abab") == tok.encode("ab ba abab") or data != good_tok
            else:
                v, m = (data, good_merges) if rnd.random() < 0.5 else (good_vocab, data)
                with open(vpath, "wb") as f:
                    f.write(v)
                with open(mpath, "wb") as f:
                    f.write(m)
                t = gl.Tokenizer.from_gpt2_files(vpath, mpath)
                t.decode(t.encode("ab ba abab"))
            loaded += 1
        except (ValueError, TypeError):
            refused += 1
        except Exception as e:
            raise AssertionError(f"{kind} case {cases}: {type(e).__name__}: {e}\n"
                                 f"data={data[:2000]!r}") from e
    print(f"cases={cases} loaded={loaded} refused={refused}")


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # casts of NaN/huge values in the generators
    target = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else None
    if target == "core":
        _core_campaign(n or 2500)
    elif target == "api":
        _api_campaign(n or 1500)
    elif target == "files":
        _files_campaign(n or 10_000)
    else:
        raise SystemExit(f"unknown campaign {target!r}")
