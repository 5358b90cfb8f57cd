"""Publishing against a local Hub: the whole push path with huggingface_hub's real client, a
download with `snapshot_download`, and loading in a process that cannot import this package.

The server (tests/hub_server.py) runs on 127.0.0.1 in this process. huggingface_hub reads
HF_ENDPOINT / HF_HUB_OFFLINE / HF_HUB_DISABLE_XET when it is imported, so the command-line push
and the download run in fresh subprocesses with those set; the in-process pushes pass the
server as `endpoint=` and switch huggingface_hub's offline and Xet constants for the test only.
"""

import json
import os
import secrets
import subprocess
import sys

import pytest
import torch

from hf_vit_repro import hub

from .conftest import run_without_package
from .hub_server import LocalHub
from .run_fixtures import make_run

TOKEN = "hf_" + secrets.token_hex(17)  # a fresh fake token: a leak of it can only come from this test


@pytest.fixture
def local_hub():
    with LocalHub(TOKEN) as server:
        yield server


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub in this process: online, plain LFS uploads (no Xet), the test token in HF_TOKEN."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def client_env(server, tmp_path) -> dict:
    return {
        **os.environ,
        "HF_ENDPOINT": server.url,
        "HF_TOKEN": TOKEN,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
    }


def test_push_then_download_and_load_without_the_package(tmp_path, local_hub):
    model = make_run(tmp_path / "run")
    (tmp_path / "run/logs").mkdir()
    (tmp_path / "run/logs/events.out.tfevents.1").write_bytes(b"\x00event")  # training logs go by default
    # the exact folder the push will upload, for comparison
    staged = hub.build_repo_folder(tmp_path / "run", tmp_path / "staged", "test-user/tiny-vit", token=TOKEN)

    push = subprocess.run(
        [sys.executable, "-m", "hf_vit_repro", "push", str(tmp_path / "run"), "test-user/tiny-vit",
         "--commit-message", "first version"],
        capture_output=True, text=True, env=client_env(local_hub, tmp_path), cwd=tmp_path, timeout=300, check=False,
    )
    assert push.returncode == 0, push.stderr[-3000:]
    assert "Published" in push.stdout and "model.safetensors" in push.stdout

    # the server holds exactly the staged folder (plus the .gitattributes of a new repo)
    on_hub = local_hub.files("test-user/tiny-vit")
    expected = {p.relative_to(staged).as_posix(): p.read_bytes() for p in staged.rglob("*") if p.is_file()}
    assert on_hub.pop(".gitattributes") and on_hub == expected
    assert {".eval_results/cifar10_test.yaml", ".eval_results/digits_test.yaml"} <= set(on_hub)  # the Hub's eval results
    assert on_hub["logs/events.out.tfevents.1"] == b"\x00event"
    repo = local_hub.repos["test-user/tiny-vit"]
    assert repo.commits[repo.refs["main"]]["message"] == "first version" and not repo.private
    assert local_hub.requests("POST", "/api/validate-yaml") and local_hub.requests("PUT", "/lfs-upload/")

    # download with snapshot_download and load with remote code, in a process without this package
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    out = run_without_package(
        f"""
        import os
        os.environ.update(HF_ENDPOINT={local_hub.url!r}, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
                          HF_HOME={str(tmp_path / "hf_home_download")!r})
        import json, torch
        from huggingface_hub import snapshot_download
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        try:
            import hf_vit_repro
            raise SystemExit("the package should not be importable here")
        except ImportError:
            pass
        path = snapshot_download("test-user/tiny-vit")
        model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "x.pt")!r})).logits
        print(json.dumps({{
            "files": sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs),
            "module": type(model).__module__, "logits": logits.tolist(),
            "processor": type(AutoImageProcessor.from_pretrained(path)).__name__,
        }}))
        """,
        tmp_path,
    )
    assert out["module"].startswith("transformers_modules.") and out["processor"] == "ViTImageProcessor"
    assert set(out["files"]) == set(expected) | {".gitattributes"}
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(out["logits"]), model(x).logits, atol=1e-6, rtol=0)

    # the token was sent (the server checked it) but written nowhere and printed nowhere
    assert TOKEN not in push.stdout + push.stderr
    for content in on_hub.values():
        assert TOKEN.encode() not in content
    for path in tmp_path.rglob("*"):  # run, staged folder, both HF caches and homes
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_dropped_connection_gives_a_clear_error_and_a_retry_sends_only_what_is_missing(tmp_path, local_hub, online):
    make_run(tmp_path / "run")
    local_hub.drop = ["commit"]  # the connection dies halfway through sending the commit
    with pytest.raises(hub.HubPushError) as info:
        hub.push_to_hub(tmp_path / "run", "test-user/tiny-vit", endpoint=local_hub.url, verbose=False)
    message = str(info.value)
    assert "connection" in message and "lost" in message and "Run the same command again" in message
    assert TOKEN not in message
    repo = local_hub.repos["test-user/tiny-vit"]
    assert set(local_hub.files("test-user/tiny-vit")) == {".gitattributes"}  # nothing committed
    uploaded_first = {path for _, path, status in local_hub.requests("PUT", "/lfs-upload/") if status == 200}
    assert len(uploaded_first) == 3  # the weights and two figures reached the LFS store

    log_start = len(local_hub.log)
    commit = hub.push_to_hub(tmp_path / "run", "test-user/tiny-vit", endpoint=local_hub.url, verbose=False)
    retry = local_hub.log[log_start:]
    assert not [entry for entry in retry if entry[0] == "PUT"]  # the LFS files are not sent again
    assert commit.oid == repo.refs["main"]
    staged = hub.build_repo_folder(tmp_path / "run", tmp_path / "staged", "test-user/tiny-vit")
    expected = {p.relative_to(staged).as_posix(): p.read_bytes() for p in staged.rglob("*") if p.is_file()}
    on_hub = local_hub.files("test-user/tiny-vit")
    on_hub.pop(".gitattributes")
    assert on_hub == expected

    # a third push of the same run changes nothing and sends no file
    log_start = len(local_hub.log)
    hub.push_to_hub(tmp_path / "run", "test-user/tiny-vit", endpoint=local_hub.url, verbose=False)
    assert repo.refs["main"] == commit.oid
    assert not [e for e in local_hub.log[log_start:] if e[0] == "PUT" or "/commit/" in e[1]]

    # a connection dropped once in the middle of a file's upload is retried by huggingface_hub
    local_hub.drop = ["lfs"]
    commit = hub.push_to_hub(tmp_path / "run", "test-user/other", endpoint=local_hub.url, verbose=False)
    puts = local_hub.requests("PUT", "/lfs-upload/test-user/other/")
    dropped = [path for _, path, status in puts if status == 0]
    assert len(dropped) == 1 and [status for _, path, status in puts if path == dropped[0]] == [0, 200]
    assert set(local_hub.files("test-user/other")) == set(expected) | {".gitattributes"}


def test_branch_pull_request_private_and_credentials(tmp_path, local_hub, online, monkeypatch):
    make_run(tmp_path / "run", evaluated=False, figures=False)
    repo_id = "test-user/tiny-vit"

    hub.push_to_hub(tmp_path / "run", repo_id, revision="experiment", private=True, endpoint=local_hub.url, verbose=False)
    repo = local_hub.repos[repo_id]
    assert repo.private
    assert set(local_hub.files(repo_id, "main")) == {".gitattributes"}  # main is untouched
    assert "model.safetensors" in local_hub.files(repo_id, "experiment")

    commit = hub.push_to_hub(tmp_path / "run", repo_id, create_pr=True, endpoint=local_hub.url, verbose=False)
    assert commit.pr_url == f"{local_hub.url}/{repo_id}/discussions/1" and commit.pr_revision == "refs/pr/1"
    assert "README.md" in local_hub.files(repo_id, "refs/pr/1")
    assert set(local_hub.files(repo_id, "main")) == {".gitattributes"}

    # a name without a namespace goes to the token's user, as on the Hub
    commit = hub.push_to_hub(tmp_path / "run", "solo-vit", endpoint=local_hub.url, verbose=False)
    assert commit.repo_url.repo_id == "test-user/solo-vit"
    assert b'from_pretrained("test-user/solo-vit", trust_remote_code=True)' in local_hub.files("test-user/solo-vit")["README.md"]

    # a wrong token: a clear error that does not repeat it
    wrong = "hf_" + secrets.token_hex(17)
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(hub.HubPushError, match="refused the credentials.*HF_TOKEN") as info:
        hub.push_to_hub(tmp_path / "run", "test-user/other", endpoint=local_hub.url, verbose=False)
    assert wrong not in str(info.value) and "test-user/other" not in local_hub.repos


def test_offline_mode_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # conftest's setting, made explicit
    make_run(tmp_path / "run", evaluated=False, figures=False)
    with pytest.raises(hub.HubPushError, match="offline mode .* --dry-run"):
        hub.push_to_hub(tmp_path / "run", "test-user/tiny-vit", endpoint="http://127.0.0.1:9", verbose=False)
    assert json.loads((tmp_path / "run/train_summary.json").read_text())["steps"] == 1234  # the run is untouched


# ------------------------------------------------------------------ a silent endpoint, SIGTERM, a broken folder


def push_temp_folders() -> set[str]:
    import tempfile
    from pathlib import Path

    return {p.name for p in Path(tempfile.gettempdir()).glob("vit-repro-push-*")}


def test_an_endpoint_that_never_answers_times_out_with_a_clear_error(tmp_path, online):
    import socket
    import time

    make_run(tmp_path / "run", evaluated=False, figures=False)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts connections; nobody ever answers
    before = push_temp_folders()
    try:
        start = time.monotonic()
        with pytest.raises(hub.HubPushError, match=r"did not answer within 1 s \(ReadTimeout\).*--timeout"):
            hub.push_to_hub(tmp_path / "run", "test-user/tiny-vit", endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}",
                            timeout=1, verbose=False)
        assert time.monotonic() - start < 60
    finally:
        silent.close()
    assert push_temp_folders() == before  # the temporary copy of the weights is gone


def test_sigterm_during_a_push_removes_the_temporary_copy(tmp_path):
    import signal
    import socket
    import time

    make_run(tmp_path / "run", evaluated=False, figures=False)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN,
           "HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}", "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    push = subprocess.Popen([sys.executable, "-m", "hf_vit_repro", "push", str(tmp_path / "run"), "test-user/tiny-vit"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "tmp").glob("vit-repro-push-*/*/model.safetensors")):  # the copy is staged
            assert time.monotonic() < deadline and push.poll() is None, push.communicate()
            time.sleep(0.2)
        time.sleep(1.0)  # now waiting for the silent endpoint
        push.send_signal(signal.SIGTERM)
        out, err = push.communicate(timeout=60)
    finally:
        silent.close()
        if push.poll() is None:
            push.kill()
    assert push.returncode == 130 and "Traceback" not in err
    assert "terminated (SIGTERM); no temporary copy was left behind" in err
    assert not list((tmp_path / "tmp").iterdir())


def test_dry_run_of_a_folder_that_fails_validation_leaves_nothing(tmp_path, monkeypatch):
    make_run(tmp_path / "run", evaluated=False, figures=False)
    config = tmp_path / "run" / "final" / "config.json"
    values = json.loads(config.read_text())
    values["auto_map"].pop("AutoModelForImageClassification")
    config.write_text(json.dumps(values))
    with pytest.raises(ValueError, match="auto_map lacks AutoModelForImageClassification"):
        hub.push_to_hub(tmp_path / "run", "someone/x", dry_run=True, output_dir=tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


def test_push_to_transformers_publishes_the_native_form_with_the_same_card(tmp_path, local_hub, online):
    """`--to transformers`: the repo holds transformers' own ViTForImageClassification (no auto_map,
    no code files), loads without this package and without trust_remote_code to the run's logits,
    and its card says what the remote-code card says about the model, training and results."""
    from hf_vit_repro.hub.cli import _cmd_push, add_cli  # noqa: F401  (the CLI flag exists)

    model = make_run(tmp_path / "run")
    ours = hub.build_repo_folder(tmp_path / "run", tmp_path / "ours", "test-user/tiny-vit", token=TOKEN)
    hub.push_to_hub(tmp_path / "run", "test-user/tiny-vit-native", endpoint=local_hub.url, verbose=False,
                    to="transformers")
    on_hub = local_hub.files("test-user/tiny-vit-native")
    config = json.loads(on_hub["config.json"])
    assert config["model_type"] == "vit" and "auto_map" not in config
    assert config["architectures"] == ["ViTForImageClassification"]
    assert not [name for name in on_hub if name.endswith(".py")]
    assert {name for name in on_hub if name.startswith("metrics/")} == {
        p.relative_to(ours).as_posix() for p in (ours / "metrics").iterdir()}
    card, our_card = on_hub["README.md"].decode(), (ours / "README.md").read_text()
    assert "without remote code" in card and "trust_remote_code" not in card
    section = lambda text: text[text.index("## Model"):text.index("## Usage")]  # noqa: E731
    assert section(card) == section(our_card)

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    out = run_without_package(
        f"""
        import os
        os.environ.update(HF_ENDPOINT={local_hub.url!r}, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
                          HF_HOME={str(tmp_path / "hf_home_download")!r}, HF_TOKEN={TOKEN!r})
        import json, torch
        from huggingface_hub import snapshot_download
        from transformers import AutoModelForImageClassification
        path = snapshot_download("test-user/tiny-vit-native")
        model = AutoModelForImageClassification.from_pretrained(path).eval()
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "x.pt")!r})).logits
        print(json.dumps({{"class": type(model).__name__, "logits": logits.tolist()}}))
        """,
        tmp_path,
    )
    assert out["class"] == "ViTForImageClassification"
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(out["logits"]), model(x).logits, atol=1e-5, rtol=0)


def test_push_with_export_uploads_the_onnx_graphs(tmp_path, local_hub, online):
    """`push --with-export`: the graphs reach the Hub as onnx/model.onnx and
    onnx/model_quantized.onnx, and what the server holds runs in ONNX Runtime like the weights."""
    import onnxruntime as ort

    from hf_vit_repro.export import export

    model = make_run(tmp_path / "run", evaluated=False, figures=False)
    export(tmp_path / "run", tmp_path / "onnx-export", quantize="int8", progress=False)
    hub.push_to_hub(tmp_path / "run", "test-user/tiny-vit", endpoint=local_hub.url, verbose=False,
                    with_export=tmp_path / "onnx-export")
    on_hub = local_hub.files("test-user/tiny-vit")
    assert {"onnx/model.onnx", "onnx/model_quantized.onnx", "onnx/export_report.json", "model.safetensors"} <= set(on_hub)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).logits
    for name, bound in (("onnx/model.onnx", 1e-4), ("onnx/model_quantized.onnx", 0.1 * float(expected.abs().max()))):
        (tmp_path / "from_hub.onnx").write_bytes(on_hub[name])
        session = ort.InferenceSession(str(tmp_path / "from_hub.onnx"), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"pixel_values": x.numpy()})[0])
        assert float((got - expected).abs().max()) <= bound, name
