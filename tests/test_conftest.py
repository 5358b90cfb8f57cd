"""The shared comparison helper `assert_logits_close`: it must pass on the last-bit noise two
separately computed forward passes show, and fail on a real difference above its tolerance."""

import copy

import pytest
import torch

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification

from .conftest import LOGITS_ATOL, assert_logits_close, randomize_, tiny_kwargs


def _logits(model, x):
    with torch.no_grad():
        return model(x).logits


@pytest.fixture(scope="module")
def model_and_input():
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(num_labels=10))), seed=3).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return model, x


def test_passes_on_last_bit_noise(model_and_input):
    model, x = model_and_input
    logits = _logits(model, x)
    two_ulps = torch.nextafter(torch.nextafter(logits, logits + 1), logits + 2)
    assert not torch.equal(two_ulps, logits)
    assert_logits_close(two_ulps, logits)
    assert_logits_close(logits + 3e-8, logits)  # the difference seen on the AMD EPYC (issue 14)
    # The same model run on another batch layout: other kernel paths, same numbers to rounding.
    assert_logits_close(torch.cat([_logits(model, x[i : i + 1]) for i in range(4)]), logits)


def test_fails_on_a_real_difference(model_and_input):
    model, x = model_and_input
    logits = _logits(model, x)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.classifier.weight[0, 0] += 1e-3  # one weight: the logits move by about 2e-4
    changed = _logits(moved, x)
    with pytest.raises(AssertionError):
        assert_logits_close(changed, logits)
    # Just above the tolerance in one entry fails; the scale is the largest |logit| (>= 1).
    scale = max(1.0, float(logits.abs().max()))
    bumped = logits.clone()
    bumped[0, 0] += 3 * LOGITS_ATOL * scale + 1e-5 * abs(float(logits[0, 0]))
    with pytest.raises(AssertionError):
        assert_logits_close(bumped, logits)
    with pytest.raises(AssertionError):
        assert_logits_close(logits[:, :5], logits)  # shapes must match


def test_a_test_session_leaves_nothing_in_the_temp_folder(tmp_path):
    """The session's HF_HOME (datasets' and the Hub's caches) and the tmp_path folders of passing
    tests are removed when the session ends (issue 14, item 3): a pytest session with this
    conftest, whose one test writes into both, leaves no file in its temp folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    temp = tmp_path / "temp"
    temp.mkdir()
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import os, subprocess, sys\n"
        "def test_writes(tmp_path):\n"
        "    (tmp_path / 'weights.bin').write_bytes(b'0' * 1000)\n"
        "    os.makedirs(os.path.join(os.environ['HF_HOME'], 'datasets'), exist_ok=True)\n"
        "    open(os.path.join(os.environ['HF_HOME'], 'datasets', 'cache.arrow'), 'wb').write(b'0')\n"
        "    # a subprocess that leaves a temp folder behind, as torchrun does with its logs\n"
        "    code = 'import tempfile, pathlib; (pathlib.Path(tempfile.mkdtemp(prefix=\"torchelastic_\")) / \"log\").write_text(\"x\")'\n"
        "    subprocess.run([sys.executable, '-c', code], check=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_VIT_REPRO_CACHE")}
    env["TMPDIR"] = str(temp)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "--rootdir", str(root),
         "-c", str(root / "pyproject.toml"), str(probe)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    left = sorted(str(p.relative_to(temp)) for p in temp.rglob("*") if p.is_file() and not p.is_symlink())
    assert left == [], left
    assert not list(temp.glob("hf_vit_repro_tests_*")) and not list(temp.glob("torchelastic_*"))
