"""`vit-repro app CHECKPOINT`: an interactive Gradio demo of an image classifier.

Upload an image (or pick an example: scikit-learn's two sample photos, and the images in the
checkpoint folder's own `examples/` if it has one) and see

- the top-5 classes with their probabilities (`gr.Label`);
- the attention-rollout map (Abnar & Zuidema 2020; the paper's Figure 6) laid over the image:
  each pixel of the image scaled by how much the class token's representation draws on its patch;
- the mean attention distance of every head against depth for this image (the paper's Figure 7
  right, Sec. 4.5), with the distance of uniform attention as the reference line.

The numbers come from `hf_vit_repro.analysis` (`attention_statistics`: the logits, rollout and mean
attention distance in one hooked pass, the same code as `vit-repro analyze`); this module only
lays them over the uploaded image. A BiT ResNet has no attention: it is still classified, and
the app says the maps exist only for Vision Transformers (hybrids included).

`Predictor` is the core, usable without a server: `Predictor.from_pretrained(CHECKPOINT)(image)`
returns `(labels, rollout image, distance plot)`. `build_app` wraps it in `gr.Blocks`; gradio is
imported only there (`pip install 'hf-vit-repro[app]'`), so `import hf_vit_repro` stays light.
The Space of a published model (`vit-repro push MODEL_ID SPACE_ID --space`, `hub.space`) runs
this same app: its app.py is `build_app(Predictor.from_pretrained(MODEL_ID))`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import runs

TOP_K = 5
APP_EXTRA = "pip install 'hf-vit-repro[app]'"
#: A checkpoint folder's own example images, shown beside scikit-learn's sample photos.
EXAMPLES_DIR = "examples"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def require_gradio():
    """The gradio module, or an ImportError that says how to install it."""
    try:
        import gradio
    except ImportError as err:
        raise ImportError(f"The demo app needs gradio, which is not installed: {APP_EXTRA}") from err
    return gradio


# ----------------------------------------------------------------------------- loading


def load_classifier(checkpoint: str | os.PathLike, device: str | torch.device | None = None):
    """`(model, image_processor)` of an image classifier: a save_pretrained folder, a run folder (its
    final/) or a Hub model id. The model is in eval mode on `device` (default: CUDA when available).
    ValueError / FileNotFoundError, in one line, for a missing checkpoint or one without a
    classification head (an encoder, a masked-patch-prediction or masked-image-modeling model)."""
    import hf_vit_repro  # noqa: F401 - registers the Auto classes
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    text = str(checkpoint)
    path = Path(text).expanduser()
    if (path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1) and not path.is_dir():
        raise FileNotFoundError(f"No checkpoint folder at {text!r}: give a save_pretrained folder, a run folder "
                                "(holding final/) or a Hub model id such as google/vit-base-patch16-224.")
    source, _ = runs.resolve_checkpoint(path if path.is_dir() else text)
    try:
        config = runs.load_pretrained(AutoConfig, source)
    except runs.CheckpointError:
        raise
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"Cannot load {text!r}: it is not a checkpoint folder, and no Hub model by that id "
                                f"could be read ({type(err).__name__}: {' '.join(str(err).split())[:300]})") from None
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(name.endswith("ForImageClassification") for name in architectures):
        raise ValueError(
            f"{text} holds {', '.join(architectures)}, not an image classifier: the app needs a checkpoint with a "
            "classification head and its labels (config.json's id2label), e.g. a fine-tuned run's final/ folder "
            "(`vit-repro train` a fine-tuning recipe on it first)."
        )
    model = runs.load_pretrained(AutoModelForImageClassification, source)
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        from .analysis import default_image_processor

        if not hasattr(config, "image_hw"):
            raise ValueError(f"{text} has no preprocessor_config.json: save the image processor used in training "
                             "beside the weights (`processor.save_pretrained(folder)`).") from None
        processor = default_image_processor(config)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(device).eval(), processor


def example_images(checkpoint: str | os.PathLike | None = None, folder: str | os.PathLike | None = None) -> list[str]:
    """Paths of the example images: those in CHECKPOINT/examples/ (a local checkpoint folder's own),
    then scikit-learn's two sample photos (a Chinese temple, a flower), written once as JPEGs into
    `folder` (default: a folder in the temp directory)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    found = []
    if checkpoint is not None:
        source = Path(checkpoint)
        for base in (source, source / runs.FINAL_DIR):
            if (base / EXAMPLES_DIR).is_dir():
                found += sorted(str(p) for p in (base / EXAMPLES_DIR).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    folder = Path(folder or Path(tempfile.gettempdir()) / "hf_vit_repro_app_examples")
    folder.mkdir(parents=True, exist_ok=True)
    samples = load_sample_images()
    for name, array in zip(samples.filenames, samples.images):
        path = folder / Path(name).name
        if not path.exists():
            Image.fromarray(array).save(path, quality=95)
        found.append(str(path))
    return found


# ----------------------------------------------------------------------------- the core


def _to_pil(image):
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        image = Image.open(image)
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8))
    if not isinstance(image, Image.Image):
        raise ValueError(f"Expected an image (PIL image, array or file path), got {type(image).__name__}.")
    return image.convert("RGB")


def seen_box(processor, width: int, height: int) -> tuple[float, float, float, float]:
    """`(left, top, right, bottom)` of the part of a `width x height` image the model sees after
    `processor`: all of it for a plain resize, the centre for a resize-then-centre-crop (timm's
    evaluation transform, transformers' BitImageProcessor), in the image's own pixels."""
    size = getattr(processor, "size", None) or {}
    crop = getattr(processor, "crop_size", None) or {}
    if not getattr(processor, "do_center_crop", False) or not crop:
        return 0.0, 0.0, float(width), float(height)
    if "shortest_edge" in size:
        scale_y = scale_x = size["shortest_edge"] / min(width, height)
    elif "height" in size:
        scale_y, scale_x = size["height"] / height, size["width"] / width
    else:
        return 0.0, 0.0, float(width), float(height)
    crop_h, crop_w = crop.get("height", crop.get("shortest_edge")), crop.get("width", crop.get("shortest_edge"))
    top = max(0.0, (height * scale_y - crop_h) / 2 / scale_y)
    left = max(0.0, (width * scale_x - crop_w) / 2 / scale_x)
    return left, top, min(float(width), left + crop_w / scale_x), min(float(height), top + crop_h / scale_y)


def rollout_overlay(image, rollout_map: torch.Tensor, box=None) -> np.ndarray:
    """The image (H, W, 3 uint8) times its attention-rollout mask (paper Figure 6): the `(rows, cols)`
    map is stretched bilinearly over `box` (the part the model saw, default all of it), scaled to
    [0, 1]; pixels outside the box are black. Returns `(H, W, 3)` uint8."""
    pixels = np.asarray(_to_pil(image), dtype=np.float32)
    height, width = pixels.shape[:2]
    left, top, right, bottom = box or (0, 0, width, height)
    x0, y0 = int(round(left)), int(round(top))
    x1, y1 = max(x0 + 1, int(round(right))), max(y0 + 1, int(round(bottom)))
    grid = rollout_map.detach().float().cpu()[None, None]
    stretched = torch.nn.functional.interpolate(grid, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0]
    low, high = float(stretched.min()), float(stretched.max())
    mask = np.zeros((height, width), dtype=np.float32)
    mask[y0:y1, x0:x1] = ((stretched - low) / (high - low)).numpy() if high > low else 1.0
    return np.clip(pixels * mask[..., None], 0, 255).astype(np.uint8)


def _figure_pixels(draw) -> np.ndarray:
    """Run `draw(path)` (e.g. `analysis.draw_attention_distance`, writing a PNG) and return the PNG as an `(H, W, 3)` array."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="vit-repro-app-") as folder:
        path = draw(Path(folder) / "figure.png")
        with Image.open(path) as figure:
            return np.array(figure.convert("RGB"))


class Predictor:
    """`predictor(image) -> (labels, rollout, distance)`: the app's core, without gradio.

    `labels`: the top-5 classes `{name: probability}`, from the model's logits on the image run
    through `processor`. `rollout`: the image `(H, W, 3)` uint8 at its own size times its
    attention-rollout mask. `distance`: an RGB array of the plot of every head's mean attention
    distance against depth for this image. Both maps are None for a model without attention
    (a BiT ResNet); `maps_note` then says why (it is None when the maps exist)."""

    def __init__(self, model: torch.nn.Module, processor=None, *, top_k: int = TOP_K, name: str | None = None):
        from .analysis import default_image_processor, vit_encoder

        self.model = model.eval()
        self.name = name or getattr(model, "name_or_path", "") or type(model).__name__
        self.top_k = top_k
        try:
            self.encoder = vit_encoder(model)
        except ValueError:
            self.encoder = None
        self.processor = processor or (default_image_processor(self.encoder.config) if self.encoder is not None else None)
        if self.processor is None:
            raise ValueError(f"{type(model).__name__} needs its image processor: pass processor=, or load it with "
                             "Predictor.from_pretrained(CHECKPOINT).")
        self.maps_note = None
        if self.encoder is None:
            from .models import find_family

            family = find_family(model)
            what = f"a {family.name}, which has no attention" if family is not None and not family.has_blocks else (
                f"a {type(model).__name__}, not this package's ViT (convert it with `vit-repro convert`)")
            self.maps_note = (f"The attention maps are ViT-only: this model is {what}. The classification is "
                              "the model's own; attention rollout and attention distance are not drawn.")

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike, device: str | torch.device | None = None, **kwargs):
        model, processor = load_classifier(checkpoint, device)
        return cls(model, processor, name=str(checkpoint), **kwargs)

    def pixel_values(self, image) -> torch.Tensor:
        """`(1, C, H, W)` model input of `image`, through the checkpoint's image processor."""
        channels = getattr(self.model.config, "num_channels", 3)
        pil = _to_pil(image).convert("L" if channels == 1 else "RGB")
        device = next(self.model.parameters()).device
        return self.processor(images=pil, return_tensors="pt")["pixel_values"].to(device)

    def classify(self, pixel_values: torch.Tensor) -> dict[str, float]:
        """The top-k classes of `(1, C, H, W)` pixel values, by a forward pass of its own."""
        with torch.inference_mode():
            return self.labels(self.model(pixel_values).logits[0])

    def labels(self, logits: torch.Tensor) -> dict[str, float]:
        """`{class name: probability}` of the top-k classes of one image's `(K,)` logits."""
        probabilities = logits.float().softmax(-1).cpu()
        top = probabilities.topk(min(self.top_k, probabilities.numel()))
        id2label = self.model.config.id2label or {}
        return {str(id2label.get(int(i), f"class {int(i)}")): float(p) for p, i in zip(top.values, top.indices)}

    def maps(self, image, stats) -> tuple[np.ndarray, np.ndarray]:
        """The rollout overlay and the distance plot of one image from its `AttentionStatistics`."""
        from .analysis import draw_attention_distance, uniform_attention_distance

        width, height = _to_pil(image).size
        rollout = rollout_overlay(image, stats.rollout_maps[0], seen_box(self.processor, width, height))
        uniform = uniform_attention_distance(self.encoder.config, *stats.input_size)
        distance = _figure_pixels(lambda path: draw_attention_distance(
            stats.mean_distance, path, stats.num_images, stats.input_size, uniform))
        return rollout, distance

    def __call__(self, image):
        """One forward pass yields the labels and both maps: `attention_statistics` runs the whole
        classifier with its attention hooks and keeps the logits. In fp32, as `classify` does: the
        first-batch bf16 check of `auto` would run every image twice."""
        if image is None:
            raise ValueError("No image: upload one or pick an example.")
        pixel_values = self.pixel_values(image)
        if self.encoder is None:
            return self.classify(pixel_values), None, None
        from .analysis import attention_statistics

        stats = attention_statistics(self.model, [pixel_values], rollout_images=1, progress=False, precision="fp32",
                                     with_logits=True)
        return (self.labels(stats.logits[0]), *self.maps(image, stats))


# ----------------------------------------------------------------------------- the app


def build_app(
    model_or_path,
    *,
    image_processor=None,
    device: str | torch.device | None = None,
    examples: list[str] | None = None,
    title: str | None = None,
):
    """The demo as `gr.Blocks`: an image input with examples, the top-5 classes (`gr.Label`), the
    attention-rollout overlay and the attention-distance plot. `model_or_path`: a checkpoint folder,
    run folder or Hub id, a loaded classifier (with `image_processor`), or a `Predictor`. `examples`:
    image paths (default `example_images` of the checkpoint). The endpoint is named `/predict`
    (`gradio_client.Client(URL).predict(handle_file(IMAGE), api_name="/predict")`)."""
    gr = require_gradio()
    if isinstance(model_or_path, Predictor):
        predictor = model_or_path
    elif isinstance(model_or_path, torch.nn.Module):
        predictor = Predictor(model_or_path.to(device) if device else model_or_path, image_processor)
    else:
        predictor = Predictor.from_pretrained(model_or_path, device=device)
    if examples is None:
        examples = example_images(model_or_path if isinstance(model_or_path, (str, os.PathLike)) else None)
    title = title or f"Vision Transformer: {predictor.name}"

    def predict(image):
        try:
            return predictor(image)
        except ValueError as err:
            raise gr.Error(str(err)) from None

    about = ("Attention rollout (Abnar & Zuidema 2020, the paper's Figure 6): the image times how much the "
             "classification draws on each patch. Mean attention distance (Figure 7 right): how far, in pixels of the "
             "model input, each head looks at each depth; the dotted line is uniform attention.")
    with gr.Blocks(title=title, analytics_enabled=False) as blocks:
        gr.Markdown(f"# {title}\n{predictor.maps_note or about}")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image", format="png")
                button = gr.Button("Classify", variant="primary")
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image])
            with gr.Column():
                labels = gr.Label(num_top_classes=predictor.top_k, label=f"Top-{predictor.top_k} classes")
                rollout = gr.Image(label="Attention rollout", format="png", interactive=False)
                distance = gr.Image(label="Mean attention distance per head and depth", format="png", interactive=False)
        # One request at a time: attention_statistics hooks the shared model while it runs.
        button.click(predict, inputs=image, outputs=[labels, rollout, distance], api_name="predict", concurrency_limit=1)
    blocks.predictor = predictor
    return blocks


def launch(checkpoint, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False, device=None,
           prevent_thread_lock: bool = False):
    """Build the app of `checkpoint` and serve it (blocks until Ctrl-C unless `prevent_thread_lock`)."""
    blocks = build_app(checkpoint, device=device)
    blocks.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock)
    return blocks


def _cmd_app(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    require_gradio()  # before the model is loaded: a missing extra is named at once
    launch(args.checkpoint, host=args.host, port=args.port, share=args.share, device=args.device)
    return 0


def add_cli(subparsers) -> None:
    from .cli_options import add_device

    p = subparsers.add_parser(
        "app",
        help="serve an interactive Gradio demo of a classifier: top-5 classes, attention rollout, attention distance",
        description="Start a Gradio app for an image classifier: upload an image or pick an example, see the top-5 "
        "classes, the attention-rollout map over the image and the mean attention distance of every head against "
        f"depth (paper Sec. 4.5). BiT ResNets are classified without the maps (they have no attention). Needs {APP_EXTRA}.",
    )
    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses RUN/final) or Hub model id of an image classifier")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1; 0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link (off by default)")
    add_device(p)
    p.set_defaults(func=_cmd_app)


__all__ = ["Predictor", "build_app", "example_images", "launch", "load_classifier", "rollout_overlay", "seen_box",
           "require_gradio", "TOP_K"]
