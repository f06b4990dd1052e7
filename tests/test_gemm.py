"""gl_sgemm (through gptlab._core.sgemm) against an independent float64 NumPy reference.

C = alpha * op(A) @ op(B) + beta * C, row-major, on every instruction-set path this CPU runs,
for the four transposition cases, sizes that are not multiples of any register tile or cache
block, and the properties training relies on: beta = 0 overwrites garbage, results are
bitwise reproducible.
"""

import numpy as np
import pytest
from gemm_checks import bias_has_the_bits_of_beta_one, concurrent_calls_give_serial_bits
from isa_paths import available

from gptlab import _core

ALL_ISAS = ["portable", "avx2", "avx512"]


ISAS = available(_core.gemm_set_isa, ALL_ISAS)


@pytest.fixture(params=ALL_ISAS)
def isa(request):
    """Forces one SIMD path for the test, skipped where the CPU (or build) lacks it."""
    if request.param not in ISAS:
        pytest.skip(f"{request.param} not available on this CPU/build")
    _core.gemm_set_isa(request.param)
    yield request.param
    _core.gemm_set_isa("auto")


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    n = _core.get_num_threads()
    yield
    _core.set_num_threads(n)


def _operands(rng, M, N, K, ta, tb):
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    return A, B


def _reference(ta, tb, A, B, C0, alpha, beta):
    """float64 result and an elementwise bound on float32 rounding: 1e-4 of the magnitude
    sum |alpha| |op(A)| @ |op(B)| + |beta C|, so entries near zero are judged fairly."""
    a = (A.T if ta else A).astype(np.float64)
    b = (B.T if tb else B).astype(np.float64)
    ref = alpha * (a @ b)
    scale = abs(alpha) * (np.abs(a) @ np.abs(b))
    if beta != 0.0:
        ref = ref + beta * C0.astype(np.float64)
        scale = scale + abs(beta) * np.abs(C0.astype(np.float64))
    return ref, 1e-4 * scale + 1e-30


def _check(ta, tb, A, B, C0, alpha, beta):
    C = C0.copy()
    _core.sgemm(ta, tb, A, B, C, alpha, beta)
    ref, tol = _reference(ta, tb, A, B, C0, alpha, beta)
    assert np.all(np.isfinite(C))
    bad = np.abs(C - ref) > tol
    assert not bad.any(), f"{bad.sum()} entries off, worst {np.abs(C - ref).max():.3g}"
    return C


# Edge sizes, sizes one off the register tiles (4x8, 6x16, 12x32), and sizes that cross the
# cache blocks (MC 128..240, KC 256..512, NC 4096) so partial blocks are exercised. Products
# under 32^3 multiply-adds take the unblocked path, so edge sizes appear in both regimes.
SHAPES = [
    (1, 1, 1), (1, 7, 17), (7, 1, 65), (17, 63, 1), (63, 65, 7), (65, 17, 63),
    (1, 300, 200), (300, 1, 200), (7, 200, 100), (200, 7, 65), (17, 63, 65),
    (5, 15, 31), (13, 33, 257), (6, 16, 256), (12, 32, 192), (25, 47, 193),
    (145, 31, 400), (241, 9, 800), (3, 4100, 5), (70, 130, 770),
    (48, 64, 385), (96, 160, 771),  # whole groups of 8 micro-panels: the packers' fast paths
    (96, 256, 513), (192, 512, 300),  # the same for the AVX-512 tile (12 x 32)
]


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_sgemm_matches_float64_reference_in_all_transposition_cases(isa, ta, tb):
    rng = np.random.default_rng(100 + 2 * ta + tb)
    for M, N, K in SHAPES:
        A, B = _operands(rng, M, N, K, ta, tb)
        C0 = rng.standard_normal((M, N)).astype(np.float32)
        _check(ta, tb, A, B, C0, 1.0, 0.0)
        _check(ta, tb, A, B, C0, -0.75, 1.0)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.5, 0.0), (-1.0, 1.0), (0.5, -2.0),
                                        (1.0, 0.3), (0.0, 1.5)])
def test_sgemm_applies_alpha_and_beta(isa, alpha, beta):
    rng = np.random.default_rng(7)
    for M, N, K in [(7, 17, 63), (65, 40, 300), (130, 100, 260)]:
        for ta, tb in [(0, 0), (0, 1), (1, 0)]:
            A, B = _operands(rng, M, N, K, ta, tb)
            C0 = rng.standard_normal((M, N)).astype(np.float32)
            _check(ta, tb, A, B, C0, alpha, beta)


def test_sgemm_beta_zero_overwrites_nan_and_inf_garbage(isa):
    rng = np.random.default_rng(3)
    for M, N, K in [(1, 1, 1), (7, 17, 63), (65, 63, 300), (150, 70, 40)]:
        for ta, tb in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            A, B = _operands(rng, M, N, K, ta, tb)
            C0 = np.full((M, N), np.nan, np.float32)
            C0[::2] = np.inf
            C = C0.copy()
            _core.sgemm(ta, tb, A, B, C, 1.0, 0.0)
            ref, tol = _reference(ta, tb, A, B, np.zeros_like(C0), 1.0, 0.0)
            assert np.all(np.abs(C - ref) <= tol)


def test_sgemm_with_empty_inner_dimension_scales_c_by_beta(isa):
    A = np.zeros((5, 0), np.float32)
    B = np.zeros((0, 9), np.float32)
    C = np.full((5, 9), np.nan, np.float32)
    _core.sgemm(0, 0, A, B, C, 1.0, 0.0)
    assert np.all(C == 0.0)
    C = np.full((5, 9), 3.0, np.float32)
    _core.sgemm(0, 0, A, B, C, 1.0, 0.5)
    assert np.all(C == 1.5)


def test_sgemm_training_shapes_large_enough_to_thread(isa):
    """The three products of a linear layer's training step, BT=256, C=384, OC=1152 (scaled)."""
    rng = np.random.default_rng(11)
    BT, C_in, OC = 200, 192, 576
    x = rng.standard_normal((BT, C_in)).astype(np.float32)
    w = rng.standard_normal((C_in, OC)).astype(np.float32)
    dy = rng.standard_normal((BT, OC)).astype(np.float32)
    _check(0, 0, x, w, np.zeros((BT, OC), np.float32), 1.0, 0.0)           # y = x @ w
    _check(0, 1, dy, w, rng.standard_normal((BT, C_in)).astype(np.float32), 1.0, 1.0)  # dx
    _check(1, 0, x, dy, rng.standard_normal((C_in, OC)).astype(np.float32), 1.0, 1.0)  # dw


@pytest.mark.parametrize("tb", [0, 1])
def test_sgemm_skinny_decode_products_for_every_row_count(isa, tb, threads):
    """M <= 8 rows (a decode step's batch) take the streaming path: register blocks of 1-8
    rows by 16-128 columns and a tail of fewer than 16 columns. Every row count and column
    edge against float64, with beta 0 and 1, and the same bits on 1 and 2 threads."""
    rng = np.random.default_rng(29)
    for M in range(1, 9):
        for N, K in [(15, 200), (16, 130), (47, 64), (129, 300), (300, 77), (1153, 40)]:
            A, B = _operands(rng, M, N, K, 0, tb)
            C0 = rng.standard_normal((M, N)).astype(np.float32)
            _check(0, tb, A, B, C0, 1.0, 0.0)
            _core.set_num_threads(1)
            one = _check(0, tb, A, B, C0, -0.5, 1.0)
            _core.set_num_threads(2)
            np.testing.assert_array_equal(_check(0, tb, A, B, C0, -0.5, 1.0), one)


def test_sgemm_skinny_products_are_the_k_ordered_float32_sums(isa, threads):
    """Each SIMD path has its own decode-step kernel (vectors of its register width, blocks
    of its register count), and all promise the plain loop's bits: acc += a * b in float32, k
    ascending, no fused multiply-add, then alpha * acc + beta * C. NumPy's float32 multiply
    and add round the same way, so this is an exact reference on every path."""
    if isa == "portable":
        pytest.skip("the portable path has no skinny kernel")
    rng = np.random.default_rng(31)
    # M = 1 with B rows a multiple of 4 KB apart has its own kernel (8 rows of B streamed at a
    # time, 1024 columns per pass): N = 2048 and 3072 with K not a multiple of 8, on 1 thread
    # (two passes) and 2
    for M, N, K in [(1, 1153, 200), (1, 2048, 203), (1, 3072, 64), (1, 300, 130), (3, 200, 97),
                    (5, 77, 130), (8, 512, 300), (8, 1100, 64)]:
        A, B = _operands(rng, M, N, K, 0, 0)
        C0 = rng.standard_normal((M, N)).astype(np.float32)
        acc = np.zeros((M, N), np.float32)
        for k in range(K):
            acc = acc + A[:, k:k + 1] * B[k]
        alpha, beta = np.float32(-0.5), np.float32(1.0)
        for n in (1, 2):
            _core.set_num_threads(n)
            C = C0.copy()
            _core.sgemm(0, 0, A, B, C, float(alpha), float(beta))
            np.testing.assert_array_equal(C, alpha * acc + beta * C0)
            C = np.full((M, N), np.nan, np.float32)
            _core.sgemm(0, 0, A, B, C, 1.0, 0.0)
            np.testing.assert_array_equal(C, acc)


def _at_offset(a: np.ndarray, offset: int) -> np.ndarray:
    """A C-contiguous copy of a that starts `offset` floats past a 64-byte boundary."""
    buf = np.empty(a.size + 32, np.float32)
    start = (-(buf.ctypes.data // 4) % 16 + offset) % 16
    out = buf[start:start + a.size].reshape(a.shape)
    out[...] = a
    assert (out.ctypes.data // 4) % 16 == offset
    return out


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0)])
def test_sgemm_result_does_not_depend_on_operand_alignment(isa, ta, tb):
    """A C row of a full tile (32 floats on the AVX-512 path) spans three cache lines unless C
    starts on one, and the packers read A and B at any offset: every offset from a 64-byte
    boundary gives the same bits, and right ones (beta 0 and 1, so C is read and written)."""
    rng = np.random.default_rng(23)
    M, N, K = 100, 200, 300
    A, B = _operands(rng, M, N, K, ta, tb)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    first = None
    for offset in (0, 1, 4, 8, 12, 15):
        a, b, c = _at_offset(A, offset), _at_offset(B, (offset * 7) % 16), _at_offset(C0, offset)
        _core.sgemm(ta, tb, a, b, c, 0.5, 1.0)
        ref, tol = _reference(ta, tb, A, B, C0, 0.5, 1.0)
        assert np.all(np.abs(c - ref) <= tol), offset
        if first is None:
            first = c.copy()
        np.testing.assert_array_equal(c, first)


def test_sgemm_is_bitwise_reproducible_and_independent_of_thread_count(isa, threads):
    rng = np.random.default_rng(5)
    # the last two are skinny (decode-step) products: M <= 8, columns split between threads
    for ta, tb, (M, N, K) in [(0, 0, (300, 200, 600)), (0, 1, (40, 500, 300)),
                              (1, 0, (97, 300, 513)), (0, 0, (8, 1153, 384)),
                              (0, 1, (1, 2001, 1100))]:
        A, B = _operands(rng, M, N, K, ta, tb)
        results = []
        for n in (1, 2, 2, 3):
            _core.set_num_threads(n)
            C = np.full((M, N), np.nan, np.float32)
            _core.sgemm(ta, tb, A, B, C, 1.0, 0.0)
            results.append(C)
        for C in results[1:]:
            np.testing.assert_array_equal(C, results[0])


def _check_at_1_2_3_threads(rng, cases):
    """Each ((ta, tb), (M, N, K)) with alpha 0.5, beta 0.7: right against float64 on 1, 2 and
    3 threads, and the same bits on all three."""
    for (ta, tb), (M, N, K) in cases:
        A, B = _operands(rng, M, N, K, ta, tb)
        C0 = rng.standard_normal((M, N)).astype(np.float32)
        results = []
        for n in (1, 2, 3):
            _core.set_num_threads(n)
            results.append(_check(ta, tb, A, B, C0, 0.5, 0.7))
        for C in results[1:]:
            np.testing.assert_array_equal(C, results[0])


def test_sgemm_short_products_without_barriers_match_the_blocked_loops(isa, threads):
    """With 2+ threads, products whose packed operands fit in 2M floats -- or in 4M with A
    under 1M -- pack every KC slice up front and multiply as each slice is flagged packed
    (gemm_whole); one thread runs the blocked loops. Same bits either way, and right against
    float64, across many KC slices, edge tiles, alpha and beta. (Few rows and few columns of
    C: the team packs B too; more rows than 256: also with many columns.)"""
    _check_at_1_2_3_threads(np.random.default_rng(17), [
        ((0, 0), (61, 67, 2000)), ((0, 1), (200, 45, 1500)),
        ((1, 0), (43, 250, 2100)), ((1, 1), (130, 70, 800)),
        ((0, 1), (300, 770, 3072)), ((0, 0), (290, 3100, 768))])


def test_sgemm_few_rows_pack_their_own_panels_of_b(isa, threads):
    """With 2+ threads, products with at most 256 rows of C and more of B than of A to pack
    (gpt2's x W and dy W^T at B*T = 256, and its lm head against the 50257-word embedding)
    leave B to the work items: each, 4 micro-panels of columns over every row, packs its own
    panels of B slice by slice into its thread's buffer (own_b). A is packed up front
    (gemm_whole) or, past 1M floats, by the team slice by slice (gemm_loops: 5200 and 8300
    deep, and on the SIMD paths 4200 columns, two NC blocks). Right against float64 and the
    bits of one thread in every transposition case: several KC slices with a short last one,
    column counts off the panels, 256 rows exactly and rows off the tile."""
    cases = [((0, 0), (256, 2321, 1100)), ((0, 1), (250, 3100, 768)),
             ((1, 0), (43, 1000, 2100)), ((1, 1), (130, 1000, 800)), ((0, 1), (256, 700, 513)),
             ((0, 0), (200, 700, 5200)), ((1, 1), (130, 1000, 8300))]
    if isa != "portable":  # 4.4G multiply-adds a call
        cases.append(((0, 1), (256, 4200, 4100)))
    _check_at_1_2_3_threads(np.random.default_rng(19), cases)


def test_sgemm_transposed_a_larger_than_b_packed_by_its_items(isa, threads):
    """With 2+ threads, a short product with a transposed A larger than B (the dW product of
    a wide layer's output side, x^T dy: the small preset's 768 x 192 from 2048 rows) packs B
    up front and lets each work item pack its own rows of A slice by slice (gemm_whole's
    own_a; the AVX2 path reads such an A in place instead, up to rows of 1024 floats: 1100
    here). Right against float64 and the bits of one thread: whole tiles and panels, then
    rows, columns and depth off every block (701 rows, 150 columns, 1500 deep)."""
    _check_at_1_2_3_threads(np.random.default_rng(37), [
        ((1, 0), (768, 192, 2048)), ((1, 1), (701, 150, 1500)), ((1, 0), (1100, 100, 700))])


def test_sgemm_short_products_reading_a_in_place_match_the_packed_tiles(isa, threads):
    """On the AVX2 path, gemm_whole reads A where it lies instead of packing it, for products
    at most 1536 columns wide: row-major A (NN, NT) as six row streams, transposed A (TN, TT)
    as K rows of six adjacent floats. Full tiles go through the in-place micro-kernel, the
    last short rows (M not a multiple of 6: 17, 63, 65, 301) are packed with zero padding,
    column edges go through the edge buffer, K spans several KC slices, the last one short
    (K = 800). One thread packs A (the blocked loops): same bits as two and three threads, and
    right against float64. Wider products (1537 columns) pack A again, and so does a
    transposed A with rows over 1024 floats (1100)."""
    _check_at_1_2_3_threads(np.random.default_rng(31), [
        ((ta_tb), (M, N, 800)) for ta_tb in ((0, 0), (0, 1), (1, 0), (1, 1))
        for M, N in ((17, 500), (63, 161), (65, 1536), (301, 65), (64, 1537), (1100, 65))])


def test_sgemm_long_products_in_the_blocked_loops_at_every_thread_count(isa, threads):
    """Products whose packed operands pass 2M floats take the blocked loops, a team barrier
    per KC slice. With many rows each work item packs its own rows of A into its thread's
    buffer (1453 rows: one, two and, on the AVX2 and portable tiles, three threads; K = 2100:
    several slices, the last one short; 4150 columns: two NC blocks; 33001 rows with K = 64,
    shallower than every KC, so the threads' buffers are K deep). With few rows the team packs
    A once per slice and items split the columns (300 rows, 4200 columns, K = 1100: packed
    operands over 4M floats; over 256 rows, or the items would pack their own B). Right
    against float64 in every transposition case, and the same bits for 1, 2 and 3 threads."""
    _check_at_1_2_3_threads(np.random.default_rng(23), [
        ((0, 1), (33001, 100, 64)),  # first: the packing buffers are not grown yet
        ((0, 0), (1453, 1100, 2100)), ((1, 1), (1453, 4150, 270)),
        ((0, 1), (300, 4200, 1100)), ((1, 0), (300, 4200, 1100))])


def test_linear_forward_adds_its_bias_inside_the_product_with_the_bits_of_beta_one(isa, threads):
    """matmul_forward(x, w, b) runs gl_sgemm_bias: the blocked paths add b to each tile of the
    first KC slice as it is stored, the others copy b into the output first. Either way the
    bits must be those of filling C with b and calling sgemm with alpha = beta = 1, on every
    path: tiny (unblocked), 4 rows (skinny), short (gemm_whole), long with items owning rows
    and with items sharing rows (gemm_loops); and right against float64."""
    rng = np.random.default_rng(29)
    for N, C, OC in [(3, 5, 7), (4, 384, 1153), (200, 192, 577), (1453, 800, 1100),
                     (300, 1100, 4200)]:
        x = rng.standard_normal((N, C)).astype(np.float32)
        w = rng.standard_normal((C, OC)).astype(np.float32)
        b = rng.standard_normal(OC).astype(np.float32)
        got = bias_has_the_bits_of_beta_one(x, w, b)
        ref, tol = _reference(0, 0, x, w, np.tile(b, (N, 1)), 1.0, 1.0)
        assert np.all(np.abs(got - ref) <= tol)


def test_sgemm_called_from_several_python_threads_at_once(isa):
    """The GIL is released and packing buffers are per calling thread: concurrent calls on
    different arrays give the same results as calls one after another."""
    rng = np.random.default_rng(13)
    concurrent_calls_give_serial_bits(
        [(0, t % 2, *_operands(rng, 150 + 10 * t, 170, 300 + t, 0, t % 2)) for t in range(4)],
        170)


def test_simd_paths_agree_with_portable_path():
    M, N, K = 77, 150, 333
    outs = {}
    for name in ISAS:
        _core.gemm_set_isa(name)
        for ta, tb in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            r = np.random.default_rng(ta * 2 + tb)
            A, B = _operands(r, M, N, K, ta, tb)
            C = np.zeros((M, N), np.float32)
            _core.sgemm(ta, tb, A, B, C, 1.0, 0.0)
            outs[name, ta, tb] = C
    _core.gemm_set_isa("auto")
    for (_name, ta, tb), C in outs.items():
        np.testing.assert_allclose(C, outs["portable", ta, tb], rtol=1e-4, atol=1e-3)


def test_gemm_isa_reports_the_forced_path_and_auto_picks_the_best():
    for name in ISAS:
        _core.gemm_set_isa(name)
        assert _core.gemm_isa() == name
    _core.gemm_set_isa("auto")
    assert _core.gemm_isa() == ISAS[-1]


def test_gemm_set_isa_refuses_unknown_names():
    before = _core.gemm_isa()
    with pytest.raises(ValueError, match="not available"):
        _core.gemm_set_isa("sse9")
    assert _core.gemm_isa() == before


@pytest.mark.parametrize("args,exc", [
    ((np.zeros((2, 3), np.float64), np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32)),
     TypeError),
    ((np.zeros((2, 3), np.float32), np.zeros((3, 4), np.float32), np.zeros((2, 4), np.int32)),
     TypeError),
    ((np.zeros((2, 3, 1), np.float32), np.zeros((3, 4), np.float32),
      np.zeros((2, 4), np.float32)), ValueError),
    ((np.zeros((2, 3), np.float32), np.zeros((5, 4), np.float32), np.zeros((2, 4), np.float32)),
     ValueError),
    ((np.zeros((2, 3), np.float32), np.zeros((3, 4), np.float32), np.zeros((2, 5), np.float32)),
     ValueError),
    ((np.zeros((3, 2), np.float32)[::2], np.zeros((2, 4), np.float32),
      np.zeros((2, 4), np.float32)), ValueError),
])
def test_sgemm_refuses_bad_arrays(args, exc):
    A, B, C = args
    with pytest.raises(exc):
        _core.sgemm(0, 0, A, B, C, 1.0, 0.0)
