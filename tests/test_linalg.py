"""jaxlab.linalg: decompositions with one matrix per LAPACK call on CPUs (no thread-pool deadlock).

Checked against NumPy float64, for batch = alone bitwise, for the absence of batched LAPACK calls in
compiled programs (and the checker's ability to find them), for export to other platforms, and under
load on several host devices where XLA's batched kernels deadlock.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import linalg

ROOT = Path(__file__).resolve().parent.parent


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _spd(seed, b, n, offset=1.0):
    a = _rand(seed, b, n, n)
    return (a @ a.transpose(0, 2, 1) / n + offset * np.eye(n)).astype(np.float32)


def test_eigh_matches_numpy():
    a = _spd(0, 3, 6)
    w, v = linalg.eigh(jnp.asarray(a))
    w64 = np.linalg.eigvalsh(a.astype(np.float64))
    np.testing.assert_allclose(w, w64, rtol=1e-5, atol=1e-5)
    v = np.asarray(v, np.float64)
    np.testing.assert_allclose(v @ (np.asarray(w)[..., None] * v.transpose(0, 2, 1)), a, atol=1e-5)
    np.testing.assert_allclose(v.transpose(0, 2, 1) @ v, np.broadcast_to(np.eye(6), (3, 6, 6)), atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 7, 3), (4, 3, 7), (2, 5, 5)])  # tall, wide (n <= d), square
def test_svd_and_svdvals_match_numpy(shape):
    a = _rand(1, *shape)
    u, s, vt = linalg.svd(jnp.asarray(a))
    k = min(shape[1:])
    assert u.shape == (shape[0], shape[1], k) and s.shape == (shape[0], k) and vt.shape == (shape[0], k, shape[2])
    np.testing.assert_allclose(s, np.linalg.svd(a.astype(np.float64), compute_uv=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(u) * np.asarray(s)[:, None, :] @ np.asarray(vt), a, atol=1e-5)
    np.testing.assert_allclose(linalg.svdvals(jnp.asarray(a)), s, rtol=1e-6, atol=1e-6)


def test_svd_of_a_rank_deficient_matrix_with_a_large_offset():
    base = _rand(2, 8, 1) @ _rand(3, 1, 4)  # rank 1
    a = base + 1e3  # rank 2 after the offset; entries ~1e3
    s = np.asarray(linalg.svdvals(jnp.asarray(a)))
    s64 = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(s[:2], s64[:2], rtol=1e-5)
    assert np.all(s[2:] < 1e-3 * s[0])


def test_qr_matches_numpy():
    a = _rand(4, 5, 6, 4)
    q, r = linalg.qr(jnp.asarray(a))
    q, r = np.asarray(q, np.float64), np.asarray(r, np.float64)
    assert q.shape == (5, 6, 4) and r.shape == (5, 4, 4)
    np.testing.assert_allclose(q @ r, a, atol=1e-5)
    np.testing.assert_allclose(q.transpose(0, 2, 1) @ q, np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-5)
    np.testing.assert_array_equal(np.tril(r, -1), 0.0)
    # the same R as LAPACK through NumPy, up to the sign of each row
    r64 = np.linalg.qr(a.astype(np.float64))[1]
    np.testing.assert_allclose(np.abs(r), np.abs(r64), atol=1e-4)


def test_pinv_matches_numpy_also_rank_deficient():
    a = _rand(5, 3, 6, 4)
    a[1] = np.outer(_rand(6, 6), _rand(7, 4))  # rank 1
    # the float32 cut-off of jnp.linalg.pinv (singular values below max(m, n) * eps_32 * s_max are dropped)
    ref = np.linalg.pinv(a.astype(np.float64), rcond=6 * np.finfo(np.float32).eps)
    np.testing.assert_allclose(linalg.pinv(jnp.asarray(a)), ref, atol=2e-4)


@pytest.mark.parametrize("assume_a", ["gen", "pos"])
def test_solve_matches_numpy(assume_a):
    a = _spd(8, 4, 5)
    b = _rand(9, 4, 5, 3)
    x = linalg.solve(jnp.asarray(a), jnp.asarray(b), assume_a=assume_a)
    np.testing.assert_allclose(x, np.linalg.solve(a.astype(np.float64), b.astype(np.float64)), rtol=1e-4, atol=1e-5)
    x1 = linalg.solve(jnp.asarray(a[0]), jnp.asarray(b[0, :, 0]), assume_a=assume_a)  # a vector right-hand side
    np.testing.assert_allclose(x1, np.asarray(x)[0, :, 0], rtol=1e-6, atol=1e-6)


def test_solve_refuses_unknown_assumption():
    with pytest.raises(ValueError, match="assume_a"):
        linalg.solve(jnp.eye(2), jnp.ones((2, 1)), assume_a="sym")


def test_leading_axes_must_match():
    with pytest.raises(ValueError, match="leading axes"):
        linalg.solve(jnp.ones((2, 3, 3)), jnp.ones((4, 3, 1)))


def test_batched_equals_alone_bitwise_under_jit_and_nested_vmap():
    a = jnp.asarray(_spd(10, 6, 5).reshape(2, 3, 5, 5))
    alone = np.stack([np.stack([np.asarray(linalg.eigh(a[i, j])[1]) for j in range(3)]) for i in range(2)])
    nested = jax.jit(jax.vmap(jax.vmap(lambda m: linalg.eigh(m)[1])))(a)
    leading = jax.jit(lambda m: linalg.eigh(m)[1])(a)
    np.testing.assert_array_equal(nested, alone)
    np.testing.assert_array_equal(leading, alone)


def _compiled_text(fn, *args):
    return jax.jit(fn).lower(*args).compile().as_text()


def test_no_batched_lapack_call_in_compiled_programs_and_the_check_can_fail():
    a = jnp.asarray(_spd(11, 8, 6))
    b = jnp.asarray(_rand(12, 8, 6, 2))
    ours = {
        "eigh": lambda x, y: linalg.eigh(x),
        "svd": lambda x, y: linalg.svd(x),
        "qr": lambda x, y: linalg.qr(x),
        "pinv": lambda x, y: linalg.pinv(x),
        "solve": lambda x, y: linalg.solve(x, y),
        "solve_pos": lambda x, y: linalg.solve(x, y, assume_a="pos"),
    }
    for name, fn in ours.items():
        for wrapped in (fn, jax.vmap(fn)):
            args = (a, b) if wrapped is fn else (a[None].repeat(2, 0), b[None].repeat(2, 0))
            text = _compiled_text(wrapped, *args)
            assert "lapack_" in text, name  # the decomposition is there ...
            assert linalg.batched_lapack_calls(text) == [], name  # ... one matrix per call
    theirs = _compiled_text(lambda x, y: (jnp.linalg.eigh(x)[0], jnp.linalg.solve(x, y)), a, b)
    found = linalg.batched_lapack_calls(theirs)
    assert any("syevd" in f for f in found) and any("getrf" in f for f in found), found


def test_export_for_cuda_and_tpu_uses_their_batched_kernels():
    fn = jax.jit(jax.vmap(lambda m: linalg.eigh(m)[0]))
    spec = jax.ShapeDtypeStruct((8, 5, 5), jnp.float32)
    cuda = jax.export.export(fn, platforms=["cuda"])(spec).mlir_module()
    tpu = jax.export.export(fn, platforms=["tpu"])(spec).mlir_module()
    cpu = jax.export.export(fn, platforms=["cpu"])(spec).mlir_module()
    assert "cusolver" in cuda and "lapack" not in cuda and "stablehlo.while" not in cuda
    assert "lapack" not in tpu and "stablehlo.while" not in tpu
    assert "lapack" in cpu and "stablehlo.while" in cpu


def test_no_decomposition_outside_jaxlab_linalg():
    """Every decomposition jaxlab compiles goes through jaxlab.linalg (NumPy's, on the host, is fine)."""
    pattern = re.compile(
        r"\b(jnp|jax\.numpy|xp)\.linalg\.(eigh|eigvalsh|eig|svd|qr|solve|pinv|inv|lstsq|cholesky|det|slogdet|matrix_rank)\b"
        r"|jax\.scipy\.linalg|lax\.linalg|jax\.lax\.linalg"
    )
    offenders = []
    for path in (ROOT / "jaxlab").rglob("*.py"):
        if path.name == "linalg.py" and path.parent.name == "jaxlab":
            continue
        if path.parent.name == "bench" and path.name == "lapack.py":
            continue  # the benchmark times the batched kernels on purpose (one device, one call at a time)
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == []


STRESS = textwrap.dedent(
    """
    import os, sys
    n = int(sys.argv[1])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
    import jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxlab import linalg

    mesh = Mesh(jax.devices(), ("runs",))

    def probe(x):  # several independent batched decompositions in one program, as in a finalize step
        gram = x @ jnp.swapaxes(x, -1, -2) + jnp.eye(x.shape[-1])
        w = linalg.eigh(gram)[0].sum(-1)
        s = linalg.svdvals(x).sum(-1)
        q = linalg.qr(x)[0].sum((-1, -2))
        z = linalg.solve(gram, x, assume_a="pos").sum((-1, -2))
        return w + s + q + z

    f = jax.jit(jax.shard_map(jax.vmap(probe), mesh=mesh, in_specs=P("runs"), out_specs=P("runs")))
    x = jax.random.normal(jax.random.key(0), (2 * n, 8, 32, 32))  # > 2e5 flops per call: XLA's kernels would split it
    x = jax.device_put(x, NamedSharding(mesh, P("runs")))
    for _ in range(10):
        f(x).block_until_ready()
    print("done")
    """
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("n_devices", [2, 4])
def test_batched_decompositions_on_several_devices_under_load_do_not_hang(tmp_path, n_devices):
    """The shapes and device counts on which XLA's batched kernels deadlock at once (2 devices,
    batched eigh: the first call), run 10 times while a busy process oversubscribes the CPU."""
    script = tmp_path / "stress.py"
    script.write_text(STRESS)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(1)]
    try:
        out = subprocess.run(
            [sys.executable, str(script), str(n_devices)], capture_output=True, text=True, timeout=240, cwd=ROOT
        )
    finally:
        for h in hogs:
            h.kill()
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "done"
