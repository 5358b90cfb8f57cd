"""Publishing: a run folder -> a staged repo folder -> checked -> uploaded to the Hub.

    source (RUN_DIR or a save_pretrained folder)
      --build_repo_folder--> staging folder: weights, config (auto_map), shipped code, image
                             processor config, the run's result files, figures, recipe, README.md
      --validate_repo_folder--> checked (card metadata, model-index, links, weights, no token)
      --upload (huggingface_hub create_repo + upload_folder)--> the Hub

The staging folder mirrors the run folder's layout (`hf_vit_repro.runs`), with `final/` flattened
to the top, and the card (`hub.card.model_card`) is rendered from the staged files themselves.
The token is never written to a file, printed, or put in an error message (`hub.redaction`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path

from .. import runs
from .card import EVAL_RESULTS_DIR, Sources, check_repo_id, eval_result_files, eval_results, locate, model_card, read_metrics
from .redaction import TEXT_SUFFIXES, active_token, check_no_token, redact, redact_secrets


#: Seconds one request to the Hub may wait (connect, send, answer) before a push gives up.
DEFAULT_TIMEOUT = 60.0


class HubPushError(OSError):
    """The upload failed (network, authentication, or the Hub refused it). The message says what
    happened and what to do; it never contains the token."""


# ============================================================================ the repo folder
def _copy_text(src: Path, dst: Path, token: str | None) -> None:
    text = src.read_text(encoding="utf-8")
    clean = redact(text, token)
    if src.suffix in (".yaml", ".yml") and src.name == runs.RECIPE:
        import yaml

        recipe = yaml.safe_load(text)
        redacted = redact_secrets(recipe, token)
        if redacted != recipe:
            clean = "# Secrets in this recipe were redacted for publishing.\n" + yaml.safe_dump(redacted, sort_keys=False)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(clean, encoding="utf-8")


def copy_file(src: Path, dst: Path, token: str | None) -> None:
    if src.suffix in TEXT_SUFFIXES:
        _copy_text(src, dst, token)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def _staged_files(sources: Sources, include_logs: bool) -> list[tuple[Path, str]]:
    """(source path, path in repo) for everything a push uploads, README.md excepted."""
    ckpt, run = sources.checkpoint, sources.run
    files = [(p, p.name) for p in runs.weight_files(ckpt)]
    for name in ("config.json", "preprocessor_config.json"):
        if (ckpt / name).exists():
            files.append((ckpt / name, name))
    files += [(p, p.name) for p in sorted(ckpt.glob("*.py"))]  # the shipped code (auto_map)
    return files + run_files(run, include_logs)


def run_files(run: Path, include_logs: bool) -> list[tuple[Path, str]]:
    """(source path, path in repo) of a run's own records: recipe, training summary, few-shot and
    VTAB results, metrics, figures and (`include_logs`) training logs."""
    files = []
    for name in (runs.RECIPE, runs.TRAIN_SUMMARY, runs.FEWSHOT, runs.VTAB):
        if (run / name).exists():
            files.append((run / name, name))
    for folder, pattern in ((runs.METRICS_DIR, "*.json"), (runs.ANALYSIS_DIR, "*.png"), (runs.ANALYSIS_DIR, runs.ANALYSIS_JSON)):
        files += [(p, f"{folder}/{p.name}") for p in sorted((run / folder).glob(pattern))]
    if include_logs and (run / runs.LOGS_DIR).is_dir():
        files += [(p, p.relative_to(run).as_posix()) for p in sorted((run / runs.LOGS_DIR).rglob("*")) if p.is_file()]
    return files


def prepare_output_dir(output_dir: str | os.PathLike) -> Path:
    """`output_dir` as a Path whose parent exists; FileExistsError if it exists and is not an empty folder."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"{output_dir} already exists and is not empty; remove it or choose another output folder.")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return output_dir


def build_repo_folder(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    include_logs: bool = True,
    with_export: str | os.PathLike | None = None,
    token: str | None = None,
    to: str = "vit_repro",
    **card_options,
) -> Path:
    """Write the exact folder a push uploads to `output_dir` (which must not exist or be empty):
    safetensors weights, config.json (with `auto_map`), the shipped code, the image processor
    config, the run's recipe, training summary, metrics, few-shot and VTAB results, figures,
    the run's training logs (`logs/`: TensorBoard event files, the step log; unless
    `include_logs=False`), README.md rendered from those staged files, and the Hub's
    eval-results files `.eval_results/*.yaml` (`card.eval_result_files`). `with_export`: an ONNX
    export folder of this checkpoint (`vit-repro export`), verified against it and staged as
    `onnx/model.onnx` (+ `onnx/model_quantized.onnx`), where transformers.js and optimum look
    (`export.hub_files`). Text files have secrets redacted. Written to a temporary sibling and
    renamed, so a crash leaves nothing half-written. `card_options` go to `model_card`.

    `to="transformers"` stages the checkpoint in transformers' own ViT classes instead (model_type
    "vit", no `auto_map`, no code files: `convert(..., to="transformers")`, which refuses a model
    without an exact counterpart); the run's files and the card are the same."""
    check_repo_id(repo_id)
    if to not in ("vit_repro", "transformers"):
        raise ValueError(f"Unknown push target {to!r}: choose vit_repro (this package's classes) or transformers.")
    sources = locate(source)
    runs.check_checkpoint_files(sources.checkpoint)  # a truncated download is named before anything is staged
    token = active_token(token)
    if not (sources.checkpoint / "preprocessor_config.json").exists():
        raise FileNotFoundError(
            f"{sources.checkpoint} has no preprocessor_config.json: save the image processor used in training next to "
            "the weights (`processor.save_pretrained(folder)`), so pipeline() and AutoImageProcessor work."
        )
    output_dir = prepare_output_dir(output_dir)
    exported = []
    if with_export is not None:
        from ..export import hub_files

        exported = hub_files(with_export, sources.checkpoint)  # checked before anything is staged
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.staging-"))
    native = None
    try:
        if to == "transformers" and not _native_to_transformers(runs.read_json(sources.checkpoint / "config.json")):
            from ..convert import convert  # a BiT ResNet is transformers' own model already

            native = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.native-"))
            sources = dataclasses.replace(sources, checkpoint=convert(sources.checkpoint, native / "checkpoint",
                                                                      to="transformers"))
        for src, name in _staged_files(sources, include_logs) + exported:
            copy_file(src, staging / name, token)
        card = model_card(staging, repo_id, token=token, **{"recipe_root": sources.run, **card_options})
        card.save(staging / "README.md")
        finish_staging(staging, output_dir, token)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if native is not None:
            shutil.rmtree(native, ignore_errors=True)
    return output_dir


def finish_staging(staging: Path, output_dir: Path, token: str | None) -> None:
    """The last steps of every staged repo folder, once its files and README.md are in: the Hub's
    `.eval_results/*.yaml` from the metrics files staged, the token check, and the rename of the
    staging folder to `output_dir` (an empty `output_dir` is replaced)."""
    for name, text in eval_result_files(read_metrics(staging)).items():
        (staging / name).parent.mkdir(exist_ok=True)
        (staging / name).write_text(text, encoding="utf-8")
    check_no_token(staging, token)
    if output_dir.exists():
        output_dir.rmdir()
    os.replace(staging, output_dir)


def validate_repo_folder(folder: str | os.PathLike, *, token: str | None = None, load_model: bool = True) -> None:
    """Check a staged repo folder before it is uploaded; raises ValueError listing every problem.

    Checks: the files a checkpoint needs (config.json with a complete `auto_map` whose code files
    are present, except for a BiT ResNet, transformers' own model_type "bit" that loads without
    remote code; safetensors weights, preprocessor_config.json, README.md); the card's metadata
    parses with huggingface_hub (license, library_name, pipeline_tag, tags) and its `model-index`
    equals the metrics files in the folder, as do the `.eval_results/*.yaml` files; every relative
    link in the card points to a file in the folder; no file holds the token; and (`load_model`)
    the weights load into the class config.json names with no missing or unexpected tensor.
    """
    folder = Path(folder)
    problems = []
    for name in ("config.json", "preprocessor_config.json", "README.md"):
        if not (folder / name).exists():
            problems.append(f"{name} is missing")
    if not (folder / "model.safetensors").exists() and not (folder / "model.safetensors.index.json").exists():
        problems.append("the safetensors weights are missing")
    config = runs.read_json(folder / "config.json") if (folder / "config.json").exists() else None
    if config is not None and not _native_to_transformers(config):  # transformers' own need no code
        auto_map = config.get("auto_map") or {}
        for auto in ("AutoConfig", "AutoModel", "AutoModelForImageClassification"):
            if auto not in auto_map:
                problems.append(f"config.json's auto_map lacks {auto}: the checkpoint will not load without this package")
        for reference in auto_map.values():
            module = reference.split("--")[-1].rsplit(".", 1)[0]
            if not (folder / f"{module}.py").exists():
                problems.append(f"config.json's auto_map names {module}.py, which is missing")
    problems += card_problems(folder, token)
    if load_model and not problems:
        problems += _load_problems(folder)
    if problems:
        raise ValueError(f"{folder} is not ready to publish:\n- " + "\n- ".join(problems))


def _native_to_transformers(config: dict) -> bool:
    """Whether a config.json describes a model of transformers' own classes: a family that is
    (`models.ModelFamily.native_to_transformers`, a BiT ResNet) or transformers' ViT ("vit", which
    `push --to transformers` writes)."""
    from ..models import find_family

    family = find_family(config)
    return config.get("model_type") == "vit" if family is None else family.native_to_transformers


def card_problems(folder: Path, token: str | None, keys=("license", "library_name", "pipeline_tag", "tags")) -> list[str]:
    """What is wrong with a staged folder's README.md, `.eval_results/` and secrets: the card's
    metadata parses and has `keys`, its `model-index` equals the metrics files, as do the
    `.eval_results/*.yaml` files; every relative link points into the folder; no file holds the token."""
    from huggingface_hub import ModelCard

    problems = []
    if (folder / "README.md").exists():
        try:
            card = ModelCard.load(folder / "README.md")
        except ValueError as err:
            problems.append(f"README.md metadata does not parse: {err}")
        else:
            data = card.data
            for key in keys:
                if not getattr(data, key, None):
                    problems.append(f"README.md metadata lacks {key}")
            expected = {(r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value)
                        for r in eval_results(read_metrics(folder))}
            found = {(r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value)
                     for r in (data.eval_results or [])}
            if expected != found:
                problems.append(f"README.md model-index {sorted(found)} differs from the metrics files {sorted(expected)}")
            for target in re.findall(r"\]\(([^)\s]+)\)", card.text):
                if not re.match(r"^[a-z]+:", target) and not target.startswith("#") and not (folder / target).exists():
                    problems.append(f"README.md links to {target}, which is not in the folder")
    problems += _eval_results_problems(folder)
    try:
        check_no_token(folder, active_token(token))
    except ValueError as err:
        problems.append(str(err))
    return problems


def _eval_results_problems(folder: Path) -> list[str]:
    """The `.eval_results/*.yaml` files must be exactly those the metrics files give."""
    expected = eval_result_files(read_metrics(folder))
    found = {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8")
             for p in sorted((folder / EVAL_RESULTS_DIR).glob("*")) if p.is_file()}
    problems = [f"{name} is missing (the Hub's eval results of its metrics file)" for name in expected.keys() - found.keys()]
    problems += [f"{name} matches no metrics file" for name in found.keys() - expected.keys()]
    problems += [f"{name} differs from its metrics file" for name in expected.keys() & found.keys() if expected[name] != found[name]]
    return sorted(problems)


def _load_problems(folder: Path) -> list[str]:
    import transformers

    import hf_vit_repro  # noqa: F401  (registers the Auto classes)
    from transformers import AutoImageProcessor

    from ..convert_native import auto_class_name

    architectures = runs.read_json(folder / "config.json").get("architectures") or []
    auto_class = getattr(transformers, auto_class_name(architectures))  # ViTModel: AutoModel, with its pooler
    try:
        _, info = runs.load_pretrained(auto_class, folder, output_loading_info=True)
        AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        return [f"the checkpoint does not load: {err}"]
    return [f"{kind} weights: {sorted(keys)}" for kind in ("missing_keys", "unexpected_keys") if (keys := info.get(kind))]


# ============================================================================ publishing
def _plan(folder: Path, target: str) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    lines = [f"{len(files)} files, {_size(total)}, for {target}:"]
    lines += [f"  {_size(p.stat().st_size):>9}  {p.relative_to(folder).as_posix()}" for p in files]
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _upload_error(err: BaseException, endpoint: str, repo_id: str, token: str | None,
                  timeout: float = DEFAULT_TIMEOUT) -> HubPushError:
    """A huggingface_hub / network exception -> a HubPushError that says what to do."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    chain, cause = [], err
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    status = next((c.response.status_code for c in chain if isinstance(c, HfHubHTTPError) and c.response is not None), None)
    transport = next((c for c in chain if isinstance(c, httpx2.TransportError)), None)
    if any(isinstance(c, OfflineModeIsEnabled) for c in chain):
        message = "huggingface_hub is in offline mode (HF_HUB_OFFLINE=1). Unset it to publish, or use --dry-run."
    elif status == 401 and not token:
        message = "no Hugging Face token was found. Log in with `hf auth login` or set HF_TOKEN to a token with write access."
    elif status == 401:
        message = (f"{endpoint} refused the credentials. Log in with `hf auth login` or set HF_TOKEN to a token "
                   "with write access, then run the same command again.")
    elif status in (403, 404):
        message = f"{endpoint} denied access to {repo_id} (HTTP {status}): check that your token may write to this namespace."
    elif isinstance(transport, (httpx2.ReadTimeout, httpx2.WriteTimeout, httpx2.PoolTimeout)):
        message = (f"{endpoint} accepted the connection but did not answer within {timeout:g} s "
                   f"({type(transport).__name__}). Check HF_ENDPOINT and the network, or allow more time with "
                   "--timeout, then run the same command again.")
    elif isinstance(transport, (httpx2.ConnectError, httpx2.ConnectTimeout)):
        message = (f"could not connect to {endpoint} ({type(transport).__name__}). Check the network (and HF_ENDPOINT, "
                   "if set), then run the same command again.")
    elif transport is not None:
        message = (f"the connection to {endpoint} was lost during the upload ({type(transport).__name__}). "
                   "Run the same command again: files the Hub already has are not uploaded twice, and only what is "
                   "missing is sent.")
    else:
        message = f"{type(err).__name__}: {err}. Running the same command again resumes an interrupted upload."
    return HubPushError(redact(f"Publishing to {repo_id} failed: {message}", token))


def publishing_setup(repo_id: str, *, revision, create_pr, token, dry_run, output_dir, verbose, prefix="vit-repro-push"):
    """What every publish starts with: the repo id and branch options checked, the token found, the
    printer (`verbose`), and the folder to build in: `output_dir`, else `outputs/hub/<name>` for a dry
    run, else a temporary folder (`prefix`). Returns `(token, say, output_dir, temporary)`, where
    `temporary` is the TemporaryDirectory to clean up, or None."""
    check_repo_id(repo_id)
    if create_pr and revision not in (None, "main"):
        raise ValueError("create_pr opens a pull request on the main branch; do not combine it with --revision.")
    say = print if verbose else (lambda *a, **k: None)
    name = repo_id.split("/")[-1]
    temporary = None
    if output_dir is None and dry_run:
        output_dir = Path("outputs") / "hub" / name
    if output_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix=f"{prefix}-{name}-")
        output_dir = Path(temporary.name) / name
    return active_token(token), say, output_dir, temporary


def push_to_hub(
    source: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    output_dir: str | os.PathLike | None = None,
    include_logs: bool = True,
    with_export: str | os.PathLike | None = None,
    endpoint: str | None = None,
    verbose: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    to: str = "vit_repro",
    adapter_only: bool = False,
    **card_options,
):
    """Publish a run folder or checkpoint folder to the Hub repo `repo_id`.

    `adapter_only`: publish only the peft adapter of a LoRA run (`hub.adapter.build_adapter_folder`:
    the adapter files, the image processor config, the run's records and a card with
    `library_name: peft` and `base_model`) instead of the whole checkpoint.

    Builds the repo folder (`build_repo_folder`), validates it (`validate_repo_folder`), prints
    what will be uploaded, then `create_repo(exist_ok=True)` (+ `create_branch` for `revision`) and
    `upload_folder` with huggingface_hub. `create_pr` opens a pull request on the main branch
    instead of committing to it. `dry_run` stops after validation and keeps the folder in
    `output_dir` (default `outputs/hub/<repo name>`); without it the folder is temporary unless
    `output_dir` is given. The run's `logs/` go with it unless `include_logs=False`;
    `with_export`, an ONNX export folder of the checkpoint, adds its `onnx/` graphs (see
    `build_repo_folder`). `endpoint` is a Hub mirror (default: `HF_ENDPOINT` / huggingface.co).
    `timeout`: seconds any one request may wait for the Hub (connect, send, answer) before the push
    stops with a HubPushError. `to="transformers"` publishes the checkpoint in transformers' own
    ViT classes, loadable without remote code (see `build_repo_folder`). `card_options` (license, datasets, base_model, converted_from) go
    to `model_card`. SIGTERM, like Ctrl-C, stops the push and removes its temporary folders; a
    folder that fails validation is removed too (a dry run keeps only a folder that passed).

    Returns the `huggingface_hub.CommitInfo` (`.pr_url` for a pull request), or the folder for a
    dry run. Raises ValueError / FileNotFoundError for bad input before anything is sent, and
    HubPushError when the upload fails; running the same call again finishes an interrupted push.
    """
    if adapter_only and (with_export is not None or to != "vit_repro"):
        raise ValueError("--adapter-only publishes the peft adapter alone; --with-export and --to transformers are for a "
                         "whole checkpoint: leave them out, or push without --adapter-only.")
    token, say, output_dir, temporary = publishing_setup(repo_id, revision=revision, create_pr=create_pr, token=token,
                                                         dry_run=dry_run, output_dir=output_dir, verbose=verbose)
    built = None
    try:
        with terminate_as_interrupt():
            if adapter_only:
                from .adapter import adapter_card, build_adapter_folder, validate_adapter_folder

                built = folder = build_adapter_folder(source, output_dir, repo_id, include_logs=include_logs,
                                                      token=token, **card_options)
                validate_adapter_folder(folder, token=token)

                def render_card(name):
                    return adapter_card(folder, source, name, token=token, **card_options)
            else:
                built = folder = build_repo_folder(source, output_dir, repo_id, include_logs=include_logs,
                                                   with_export=with_export, token=token, to=to, **card_options)
                validate_repo_folder(folder, token=token)

                def render_card(name):
                    return model_card(folder, name, token=token, **{"recipe_root": locate(source).run, **card_options})
            built = None  # valid: a dry run keeps it
            return publish_folder(folder, repo_id, dry_run=dry_run, private=private, revision=revision,
                            create_pr=create_pr, commit_message=commit_message, token=token, endpoint=endpoint,
                            timeout=timeout, say=say, render_card=render_card)
    finally:
        if built is not None and temporary is None:
            shutil.rmtree(built, ignore_errors=True)
        if temporary is not None:
            temporary.cleanup()


def publish_folder(folder, repo_id, *, dry_run, private, revision, create_pr, commit_message, token, endpoint,
             timeout, say, render_card, repo_type=None):
    """Show what a validated `folder` holds, then stop (dry run) or upload it (to a model repo, or to
    a Space with `repo_type="space"`, `hub.space`)."""
    target = ("the Space " if repo_type == "space" else "") + f"{repo_id}"
    target += (f" (branch {revision})" if revision else "") + (" (pull request)" if create_pr else "")
    say(redact(_plan(folder, target), token))
    if dry_run:
        say(f"Dry run: the folder above is in {folder} and passed validation; nothing was uploaded.")
        return folder
    with _request_timeout(timeout):
        return _upload(folder, repo_id, private=private, revision=revision, create_pr=create_pr,
                       commit_message=commit_message, token=token, endpoint=endpoint, say=say, timeout=timeout,
                       render_card=render_card, repo_type=repo_type)


@contextlib.contextmanager
def _request_timeout(seconds: float):
    """Every request huggingface_hub sends through its shared client waits at most `seconds` to
    connect, send and hear back (its default client has no timeout: a silent endpoint hangs it)."""
    import httpx2
    from huggingface_hub.utils import get_session

    session = get_session()
    previous = session.timeout
    session.timeout = httpx2.Timeout(seconds)
    try:
        yield
    finally:
        session.timeout = previous


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (a job scheduler, `kill`) raises KeyboardInterrupt while publishing, so the `finally`
    blocks that remove temporary folders run instead of the process dying with a copy of the
    weights left in the temp folder. Only in the main thread, where Python delivers signals."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _upload(folder, repo_id, *, private, revision, create_pr, commit_message, token, endpoint, say, timeout,
            render_card, repo_type=None):
    from huggingface_hub import HfApi, constants

    api = HfApi(endpoint=endpoint, token=token)
    where = api.endpoint or constants.ENDPOINT
    sdk = {"space_sdk": "gradio"} if repo_type == "space" else {}
    try:
        full_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, **sdk).repo_id
        if full_id != repo_id:  # "name" went to the token's namespace: the card's snippets name the real repo
            render_card(full_id).save(folder / "README.md")
            repo_id = full_id
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type=repo_type)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type=repo_type,
            folder_path=folder,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} with hf_vit_repro",
        )
    except Exception as err:  # noqa: BLE001 - every failure is reported as a HubPushError
        raise _upload_error(err, where, repo_id, token, timeout) from None
    say(f"Published {commit.pr_url or commit.commit_url}")
    return commit


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    **options,
):
    """The end-of-training hook (recipe options `push_to_hub: true`, `hub_repo_id: ...`): publish
    RUN_DIR's final checkpoint with its card. Only the main process publishes: on any other rank
    (`RANK` / `LOCAL_RANK` not 0) this returns None without doing anything."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    if rank != 0:
        return None
    run_dir = Path(run_dir)
    if not (run_dir / runs.FINAL_DIR).is_dir():
        raise FileNotFoundError(f"{run_dir} has no {runs.FINAL_DIR}/ checkpoint: the training run did not finish saving it.")
    return push_to_hub(run_dir, repo_id, private=private, revision=revision, create_pr=create_pr,
                       commit_message=commit_message, token=token, dry_run=dry_run, **options)

