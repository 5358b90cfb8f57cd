"""Shared fixtures. Tests run offline: the Hub is never contacted (HF_HUB_OFFLINE) and any
socket connection to a non-loopback address fails the test. The HF cache (HF_HOME), the feature
cache, torch.compile's cache and the temp folder of every subprocess (torchrun leaves a log folder
per launch) live in one temporary folder of this session, removed when it ends."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

# Must be set before anything from the HF stack is imported. Under pytest-xdist the workers inherit
# the controller's HF_HOME, so only the process that created the folder owns (and removes) it.
_SESSION_DIR = None
if "HF_HOME" not in os.environ:
    _SESSION_DIR = tempfile.mkdtemp(prefix="hf_vit_repro_tests_")
    os.environ["HF_HOME"] = os.path.join(_SESSION_DIR, "hf_home")
    os.environ.setdefault("HF_VIT_REPRO_CACHE", os.path.join(_SESSION_DIR, "hf_vit_repro"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_SESSION_DIR, "torchinductor"))
    # Subprocesses get their temp folder in here; this process keeps its own (pytest's tmp_path).
    tempfile.tempdir = tempfile.gettempdir()
    os.makedirs(os.path.join(_SESSION_DIR, "tmp"))
    os.environ["TMPDIR"] = os.path.join(_SESSION_DIR, "tmp")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# precision="auto" means fp32 on every CPU in tests and in every process they start, module-scoped
# fixtures' launches included (hf_vit_repro.precision.PRECISION_ENV; tests/test_precision.py plays
# the CPUs itself), so results compare with fp32 references on Intel with AMX and AMD alike.
os.environ["HF_VIT_REPRO_CPU_PRECISION"] = "fp32"

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist (`make test` runs `pytest -n 2`) each worker takes its share of the cores for torch's
# intra-op threads, so two workers on two cores do not run four threads; one process alone keeps torch's default.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

_real_connect = socket.socket.connect


def _loopback_only_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1", "")):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"Test tried to reach the network ({address}); tests must stay offline.")
    return _real_connect(self, address)


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's temporary folder (HF_HOME with datasets' and the Hub's caches, ~4 MB
    a run; subprocesses' temp folders)."""
    if _SESSION_DIR is not None:
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _loopback_only_connect)


@pytest.fixture(autouse=True)
def _auto_precision_is_fp32(monkeypatch):
    """`precision="auto"` resolves as on a CPU without AMX (fp32) in every test, so tests that
    compare against fp32 references give the same answer on every CPU. tests/test_precision.py
    plays both kinds of CPU itself (it replaces `cpu_capabilities` again). The environment variable
    carries the same choice into the processes tests start (CLI runs, launchers' workers)."""
    from hf_vit_repro import precision

    monkeypatch.setattr(precision, "cpu_capabilities", lambda: {"avx2": True, "fma3": True})
    monkeypatch.setenv(precision.PRECISION_ENV, "fp32")  # set at import too; a test that removed it gets it back


# Two float32 forward passes of the same weights on the same input agree only up to rounding when
# they are computed separately: oneDNN/MKL pick their kernels by buffer alignment (weights loaded
# from a memory-mapped safetensors file sit at other offsets than freshly allocated ones), batch
# size and thread count, and each kernel sums in its own order. On a 2-core AMD EPYC (AVX-512, no
# AMX) a saved-and-reloaded hybrid's logits differ from the original's by 3e-8 (issue 14). Float32
# rounding is 6e-8 of a value, and a tiny model's forward pass accumulates a few hundred roundings:
# 1e-5 of the logits' scale (the tolerance of the parity tests) covers that with a wide margin and
# fails on a real difference above it (tests/test_conftest.py checks both: a classifier weight
# moved by 1e-3 moves the tiny model's logits by 2e-4 and is caught).
# Bit-exactness is kept only where the same kernels run on the same buffers (a resumed run in the
# same process layout, weights read back from a file).
LOGITS_RTOL = 1e-5
LOGITS_ATOL = 1e-5


def assert_logits_close(actual, expected, *, rtol: float = LOGITS_RTOL, atol: float = LOGITS_ATOL, msg=None) -> None:
    """Assert that two separately computed forward passes agree up to float32 rounding.

    `|actual - expected| <= atol * max(1, max|expected|) + rtol * |expected|` elementwise, with
    the same shape and dtype (torch.testing.assert_close with explicit tolerances): the absolute
    part is scaled by the largest logit, so near-zero entries of large logits are judged on the
    scale of the computation that produced them. The defaults and why: see LOGITS_RTOL above.
    """
    actual = torch.as_tensor(actual).detach()
    expected = torch.as_tensor(expected).detach()
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, msg=msg)


def tiny_kwargs(**overrides) -> dict:
    """The tiny test config of DESIGN.md: image 32, patch 8, width 32, 2 layers."""
    kwargs = dict(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def tiny_config():
    from hf_vit_repro import ViTReproConfig

    return ViTReproConfig(**tiny_kwargs())


def randomize_(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with N(0, std^2) so zero-initialised heads and tokens are exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


# A subprocess in which `import hf_vit_repro` fails, as on a machine without the package.
BLOCK_PACKAGE = textwrap.dedent(
    """
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "hf_vit_repro" or name.startswith("hf_vit_repro."):
                raise ImportError("hf_vit_repro is blocked in this process")
    sys.meta_path.insert(0, _Block())
    """
)


def run_without_package(script: str, tmp_path) -> dict:
    """Run `script` in a fresh Python that cannot import hf_vit_repro (the remote-code path);
    returns the JSON object its last line of stdout prints."""
    code = BLOCK_PACKAGE + textwrap.dedent(script)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
