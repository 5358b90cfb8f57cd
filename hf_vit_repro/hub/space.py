"""A Gradio Space for a published model: `vit-repro push MODEL_ID SPACE_ID --space`.

The Space repo folder holds three files:

- `app.py`: a few lines that load the model repo by id (`hf_vit_repro.app.Predictor`) and serve
  `hf_vit_repro.app.build_app`, the app `vit-repro app` serves locally; the environment variable
  `VIT_REPRO_SPACE_MODEL` points it at another model (a local folder, in the tests);
- `requirements.txt`: this package with its app extra, and the versions of what it needs as they
  are installed where the folder is written (what was tested);
- `README.md`: the Space's metadata (sdk: gradio, sdk_version, app_file, models, title, emoji,
  colours, license) and a short description.

It is checked (`validate_space_folder`) and uploaded through the same path as a model repo
(`push.publish_folder`, with repo_type "space").
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .card import DEFAULT_LICENSE, check_repo_id

#: The gradio release the app is written for (the `app` extra's pin; Spaces install it from sdk_version).
GRADIO_VERSION = "6.31.0"
#: The colours a Space card's colorFrom / colorTo may name.
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
#: The distributions the Space's app imports, pinned in requirements.txt at their installed versions.
SPACE_REQUIREMENTS = ("torch", "transformers", "huggingface-hub", "safetensors", "pillow", "numpy", "matplotlib",
                      "scikit-learn")
SPACE_FILES = ("app.py", "requirements.txt", "README.md")
#: Environment variable the Space's app.py reads its model from (default: the model repo it was written for).
SPACE_MODEL_ENV = "VIT_REPRO_SPACE_MODEL"
MAX_TITLE = 30  # characters the Hub shows of a Space title

APP_TEMPLATE = '''"""Gradio Space of the image classifier {model_text}, written by `vit-repro push --space` (hf_vit_repro).

Upload an image: the top-5 classes, the attention-rollout map and every head's mean attention
distance against depth (Dosovitskiy et al. 2021, Sec. 4.5). Set {env_text} to serve another model."""

import os

from hf_vit_repro.app import Predictor, build_app

MODEL_ID = os.environ.get({env}, {model_id})
predict = Predictor.from_pretrained(MODEL_ID)
demo = build_app(predict, title={title})

if __name__ == "__main__":
    demo.launch()
'''

README_TEMPLATE = """---
{metadata}---

# {title}

An interactive demo of the image classifier [{model_id}](https://huggingface.co/{model_id}): upload an image
(or pick an example) to see

- its top-5 classes;
- the attention-rollout map (Abnar & Zuidema 2020), the paper's Figure 6, over the image;
- the mean attention distance of every head against depth (the paper's Figure 7 right, Sec. 4.5).

The maps are drawn for Vision Transformers (hybrids included); a BiT ResNet is classified without them.
Run it locally with `pip install 'hf-vit-repro[app]'` and `vit-repro app {model_id}`.
"""


def _literal(text: str) -> str:
    """`text` as a double-quoted Python string literal."""
    import json

    return json.dumps(text, ensure_ascii=False)


def _pinned(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return name


def requirements(gradio_version: str = GRADIO_VERSION) -> str:
    """requirements.txt of the Space: this package with its app extra, gradio, and what they import
    at the versions installed here."""
    from .. import __version__

    lines = [f"hf-vit-repro[app]=={__version__}", f"gradio=={gradio_version}"]
    lines += [_pinned(name) for name in SPACE_REQUIREMENTS]
    return "\n".join(lines) + "\n"


def space_metadata(model_id: str, *, title: str, emoji: str, color_from: str, color_to: str, license: str,
                   gradio_version: str = GRADIO_VERSION) -> dict:
    return {"title": title, "emoji": emoji, "colorFrom": color_from, "colorTo": color_to, "sdk": "gradio",
            "sdk_version": gradio_version, "app_file": "app.py", "models": [model_id], "license": license,
            "pinned": False}


def space_files(
    model_id: str,
    *,
    title: str | None = None,
    emoji: str = "🔭",
    color_from: str = "indigo",
    color_to: str = "blue",
    license: str | None = None,
    gradio_version: str = GRADIO_VERSION,
) -> dict[str, str]:
    """{file name: text} of the Space serving the model repo `model_id` (see the module docstring)."""
    import yaml

    check_repo_id(model_id)
    if "/" not in model_id:
        raise ValueError(f"The Space loads the model by its full id: write 'namespace/{model_id}'.")
    for name, colour in (("color_from", color_from), ("color_to", color_to)):
        if colour not in SPACE_COLORS:
            raise ValueError(f"{name} {colour!r} is not a Space colour: choose one of {', '.join(SPACE_COLORS)}.")
    title = title or f"ViT {model_id.split('/')[-1]}"
    if len(title) > MAX_TITLE:
        title = title[: MAX_TITLE - 1] + "…"
    metadata = space_metadata(model_id, title=title, emoji=emoji, color_from=color_from, color_to=color_to,
                              license=license or DEFAULT_LICENSE, gradio_version=gradio_version)
    text = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return {
        "app.py": APP_TEMPLATE.format(model_id=_literal(model_id), title=_literal(title), env=_literal(SPACE_MODEL_ENV),
                                      model_text=model_id, env_text=SPACE_MODEL_ENV),
        "requirements.txt": requirements(gradio_version),
        "README.md": README_TEMPLATE.format(metadata=text, title=title, model_id=model_id),
    }


def build_space_folder(model_id: str, output_dir: str | os.PathLike, **options) -> Path:
    """Write the Space folder of `model_id` to `output_dir` (new or empty), checked by
    `validate_space_folder`; written to a temporary sibling and renamed. `options`: `space_files`'."""
    from .push import prepare_output_dir

    files = space_files(model_id, **options)
    output_dir = prepare_output_dir(output_dir)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.staging-"))
    try:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        validate_space_folder(staging, model_id)
        if output_dir.exists():
            output_dir.rmdir()
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def validate_space_folder(folder: str | os.PathLike, model_id: str | None = None) -> None:
    """Raise ValueError listing every problem of a Space folder: the three files are there, app.py
    compiles, README.md's metadata parses (huggingface_hub's SpaceCard) with sdk gradio, an
    sdk_version, app_file app.py, a valid title / emoji / colours / license and `models` naming
    `model_id`, and requirements.txt pins gradio at the sdk_version."""
    from huggingface_hub import SpaceCard

    folder = Path(folder)
    problems = [f"{name} is missing" for name in SPACE_FILES if not (folder / name).is_file()]
    if (folder / "app.py").is_file():
        try:
            compile((folder / "app.py").read_text(encoding="utf-8"), "app.py", "exec")
        except SyntaxError as err:
            problems.append(f"app.py does not compile: {err}")
    if (folder / "README.md").is_file():
        data = SpaceCard.load(folder / "README.md").data
        if data.sdk != "gradio" or not data.sdk_version:
            problems.append(f"README.md metadata: sdk must be gradio with an sdk_version, got {data.sdk!r} {data.sdk_version!r}")
        if data.app_file != "app.py":
            problems.append(f"README.md metadata: app_file must be app.py, got {data.app_file!r}")
        if model_id is not None and data.models != [model_id]:
            problems.append(f"README.md metadata: models must be [{model_id}], got {data.models!r}")
        for key in ("title", "emoji", "license"):
            if not getattr(data, key, None):
                problems.append(f"README.md metadata lacks {key}")
        for key in ("colorFrom", "colorTo"):
            if getattr(data, key, None) not in SPACE_COLORS:
                problems.append(f"README.md metadata: {key} must be one of {', '.join(SPACE_COLORS)}")
        if (folder / "requirements.txt").is_file():
            pins = (folder / "requirements.txt").read_text(encoding="utf-8").split()
            if f"gradio=={data.sdk_version}" not in pins:
                problems.append(f"requirements.txt must pin gradio=={data.sdk_version} (the sdk_version)")
    if problems:
        raise ValueError(f"{folder} is not a ready Space folder:\n- " + "\n- ".join(problems))


def push_space(
    model_id: str,
    space_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    output_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    verbose: bool = True,
    timeout: float | None = None,
    **options,
):
    """Write the Space folder of the model repo `model_id` (`build_space_folder`) and publish it as
    the Space `space_id` through the model push's path (plan, dry run, `create_repo(repo_type="space",
    space_sdk="gradio")`, `upload_folder`, the same errors). `dry_run` keeps the folder in `output_dir`
    (default `outputs/hub/<space name>`); otherwise it is temporary unless `output_dir` is given.
    Returns the CommitInfo, or the folder for a dry run."""
    from .push import DEFAULT_TIMEOUT, publish_folder, terminate_as_interrupt, publishing_setup

    if Path(model_id).exists():
        raise ValueError(f"--space: {model_id!r} is a local path, but the Space loads its model from the Hub: give the "
                         "model's repo id (publish it first with `vit-repro push RUN MODEL_ID`).")
    token, say, output_dir, temporary = publishing_setup(space_id, revision=revision, create_pr=create_pr, token=token,
                                                         dry_run=dry_run, output_dir=output_dir, verbose=verbose,
                                                         prefix="vit-repro-space")
    try:
        with terminate_as_interrupt():
            folder = build_space_folder(model_id, output_dir, **options)

            def render_card(_full_id):  # the card names the model, not the Space: a new namespace changes nothing
                from huggingface_hub import SpaceCard

                return SpaceCard.load(folder / "README.md")

            return publish_folder(folder, space_id, dry_run=dry_run, private=private, revision=revision, create_pr=create_pr,
                            commit_message=commit_message, token=token, endpoint=endpoint,
                            timeout=timeout or DEFAULT_TIMEOUT, say=say, render_card=render_card, repo_type="space")
    finally:
        if temporary is not None:
            temporary.cleanup()
