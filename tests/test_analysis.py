"""analysis.py: the paper's inspection figures. Numbers are checked on constructed cases against
hand computations (loops over the grid, numpy products) and against scikit-learn / scipy; the
figures and the command are checked by opening the PNGs they write."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification, ViTReproModel
from hf_vit_repro import analysis
from hf_vit_repro.cli import main

from .conftest import randomize_, tiny_kwargs

# ----------------------------------------------------------------------------- helpers

FIGURES = (
    analysis.EMBEDDING_FILTERS_PNG,
    analysis.POSITION_SIMILARITY_PNG,
    analysis.ATTENTION_DISTANCE_PNG,
    analysis.ATTENTION_ROLLOUT_PNG,
)


def digit_images(n: int) -> list[Image.Image]:
    """Real offline images: scikit-learn's 8x8 digits (values 0..16) as greyscale PIL images."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:n]
    return [Image.fromarray(np.clip(d * 16, 0, 255).astype(np.uint8), "L") for d in digits]


def write_png_folder(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i:03d}.png")
    return folder


def hand_mean_distance(rows, cols, ph, pw, weight_on_patches=1.0):
    """Uniform attention over a rows x cols grid of ph x pw patches, by explicit loops: every query
    spreads `weight_on_patches` evenly over the patch keys."""
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    per_query = []
    for r, c in cells:
        total = sum(math.hypot((r - r2) * ph, (c - c2) * pw) for r2, c2 in cells)
        per_query.append(weight_on_patches * total / len(cells))
    return sum(per_query) / len(per_query)


def uniform_attention(batch, heads, seq):
    return torch.full((batch, heads, seq, seq), 1.0 / seq)


def assert_png(path, min_side=100):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        width, height = image.size
    assert width >= min_side and height >= min_side, (path, image.size)
    return image.size


# ----------------------------------------------------------------------------- token geometry


def test_token_centers_are_patch_centres_in_pixels():
    config = ViTReproConfig(**tiny_kwargs(image_size=(16, 32), patch_size=(8, 16)))
    centers = analysis.token_centers(config, 16, 32)
    # Row-major (y, x): 2 rows of 8-pixel patches, 2 columns of 16-pixel patches.
    assert centers.tolist() == [[4.0, 8.0], [4.0, 24.0], [12.0, 8.0], [12.0, 24.0]]
    # At another input resolution the grid grows, the stride stays the patch size.
    assert analysis.token_grid(config, 32, 64) == (4, 4)


def test_token_stride_of_a_hybrid_includes_the_cnn_stride():
    backbone = dict(depths=[1, 1, 1], hidden_sizes=[32, 64, 128], embedding_size=16, num_groups=8)
    config = ViTReproConfig(**tiny_kwargs(image_size=64, patch_size=1, backbone_config=backbone))
    assert analysis.token_stride(config) == (16, 16)
    assert analysis.token_centers(config, 64, 64)[:2].tolist() == [[8.0, 8.0], [8.0, 24.0]]


# ----------------------------------------------------------------------------- mean attention distance


@pytest.mark.parametrize("prefix", [0, 1])
@pytest.mark.parametrize("renormalize", [True, False])
def test_attention_on_the_query_itself_has_distance_zero(prefix, renormalize):
    config = ViTReproConfig(**tiny_kwargs())  # 4 x 4 grid of 8-pixel patches
    centers = analysis.token_centers(config, 32, 32)
    attention = torch.eye(prefix + 16).expand(2, 3, -1, -1)
    distance = analysis.mean_attention_distance(attention, centers, prefix, renormalize=renormalize)
    assert distance.shape == (2, 3)
    assert torch.equal(distance, torch.zeros(2, 3))


def test_uniform_attention_matches_the_hand_computed_value():
    # 2 x 2 grid of 8 x 8 patches: from every query the keys lie at 0, 8, 8 and 8*sqrt(2) pixels.
    config = ViTReproConfig(**tiny_kwargs(image_size=16))
    centers = analysis.token_centers(config, 16, 16)
    expected = (0 + 8 + 8 + 8 * math.sqrt(2)) / 4
    got = analysis.mean_attention_distance(uniform_attention(1, 2, 4), centers, num_prefix_tokens=0)
    torch.testing.assert_close(got, torch.full((1, 2), expected))

    # A rectangular 3 x 3 grid of 8 x 16 patches (rows and columns must not be swapped).
    config = ViTReproConfig(**tiny_kwargs(image_size=(24, 48), patch_size=(8, 16)))
    centers = analysis.token_centers(config, 24, 48)
    got = analysis.mean_attention_distance(uniform_attention(1, 1, 9), centers, num_prefix_tokens=0)
    torch.testing.assert_close(got, torch.full((1, 1), hand_mean_distance(3, 3, 8, 16)))
    assert analysis.uniform_attention_distance(config, 24, 48) == pytest.approx(hand_mean_distance(3, 3, 8, 16))


def test_class_token_column_is_dropped_and_renormalisation_is_a_choice():
    # Uniform over 1 class token + 9 patches: 1/10 of each row goes to the class token.
    config = ViTReproConfig(**tiny_kwargs(image_size=24))
    centers = analysis.token_centers(config, 24, 24)
    attention = uniform_attention(1, 1, 10)
    renormalised = analysis.mean_attention_distance(attention, centers, 1, renormalize=True)
    raw = analysis.mean_attention_distance(attention, centers, 1, renormalize=False)
    torch.testing.assert_close(renormalised, torch.full((1, 1), hand_mean_distance(3, 3, 8, 8)))
    torch.testing.assert_close(raw, torch.full((1, 1), hand_mean_distance(3, 3, 8, 8, weight_on_patches=0.9)))


def test_distances_are_in_pixels_and_scale_with_patch_size():
    attention = torch.softmax(torch.randn(2, 3, 17, 17, generator=torch.Generator().manual_seed(0)), dim=-1)
    results = []
    for patch in (4, 8, 16):
        config = ViTReproConfig(**tiny_kwargs(image_size=4 * patch, patch_size=patch))
        centers = analysis.token_centers(config, 4 * patch, 4 * patch)
        results.append(analysis.mean_attention_distance(attention, centers, 1))
    torch.testing.assert_close(results[1], 2 * results[0])
    torch.testing.assert_close(results[2], 4 * results[0])


def test_mean_attention_distance_rejects_mismatched_centres():
    config = ViTReproConfig(**tiny_kwargs())
    with pytest.raises(ValueError, match=r"needs 10 token centres, got centres of shape \(16, 2\)"):
        analysis.mean_attention_distance(uniform_attention(1, 1, 10), analysis.token_centers(config, 32, 32), 0)


# ----------------------------------------------------------------------------- rollout


def test_rollout_of_identity_attention_is_the_identity():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    torch.testing.assert_close(analysis.attention_rollout([eye, eye, eye]), torch.eye(5).expand(2, 5, 5))


def test_rollout_of_two_layers_is_the_product_computed_by_hand():
    generator = torch.Generator().manual_seed(1)
    a1 = torch.softmax(torch.randn(1, 2, 3, 3, generator=generator), dim=-1)
    a2 = torch.softmax(torch.randn(1, 2, 3, 3, generator=generator), dim=-1)

    def hand(a):  # numpy: mean over heads, + identity, rows renormalised
        m = a[0].numpy().astype(np.float64).mean(axis=0) + np.eye(3)
        return m / m.sum(axis=1, keepdims=True)

    expected = hand(a2) @ hand(a1)  # the later layer acts on the result of the earlier one
    got = analysis.attention_rollout([a1, a2])[0].double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), np.ones(3), rtol=1e-6)
    # The class token's row over the patch tokens is the map; without a class token, the mean row.
    rollout = analysis.attention_rollout([a1, a2])
    assert torch.equal(analysis.rollout_maps(rollout, (1, 2), 1)[0], rollout[0, 0, 1:].reshape(1, 2))
    a1g, a2g = a1[..., :2, :2].softmax(-1), a2[..., :2, :2].softmax(-1)
    rollout = analysis.attention_rollout([a1g, a2g])
    torch.testing.assert_close(analysis.rollout_maps(rollout, (1, 2), 0)[0], rollout[0].mean(0).reshape(1, 2))


# ----------------------------------------------------------------------------- model hooks


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_hooked_statistics_match_the_models_returned_attentions(pooling):
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs(pooling=pooling)))).eval()
    config = model.config
    pixels = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    # Reference route: every layer's attention returned at once by transformers' output capturing.
    with torch.no_grad():
        attentions = model(pixels, output_attentions=True).attentions
    centers = analysis.token_centers(config, 32, 32)
    expected = torch.stack(
        [analysis.mean_attention_distance(a, centers, config.num_prefix_tokens).mean(0) for a in attentions]
    )
    expected_maps = analysis.rollout_maps(analysis.attention_rollout(attentions), (4, 4), config.num_prefix_tokens)

    model.train()  # restored afterwards, as are the attention implementation and the hooks
    hooks = [list(layer.attention._forward_hooks) for layer in model.vit.layers]  # transformers' own
    stats = analysis.attention_statistics(model, pixels.split(2), rollout_images=3)
    assert model.training and model.config._attn_implementation == "sdpa"
    assert [list(layer.attention._forward_hooks) for layer in model.vit.layers] == hooks
    assert stats.num_images == 5 and stats.input_size == (32, 32)
    np.testing.assert_allclose(stats.mean_distance, expected.numpy(), rtol=1e-5)
    torch.testing.assert_close(stats.rollout_maps, expected_maps[:3])
    torch.testing.assert_close(stats.rollout_inputs, pixels[:3])


# ----------------------------------------------------------------------------- position embeddings


def sincos_grid_embedding(rows, cols, frequencies=(0.15, 0.3)):
    """Embedding with a known 2-D structure: sin/cos of the row and of the column index."""
    r, c = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij"
    )
    parts = [f(x * w) for w in frequencies for x in (r, c) for f in (torch.sin, torch.cos)]
    return torch.stack(parts, dim=-1).reshape(rows * cols, -1)


def test_position_similarity_of_a_2d_embedding_peaks_at_self_and_neighbours():
    from sklearn.metrics.pairwise import cosine_similarity

    rows, cols = 5, 6
    grid = sincos_grid_embedding(rows, cols)
    with_cls = torch.cat([torch.randn(1, grid.shape[1], dtype=torch.float64), grid])[None]
    similarity = analysis.position_embedding_similarity(with_cls, (rows, cols), num_prefix_tokens=1)
    assert similarity.shape == (rows, cols, rows, cols)
    np.testing.assert_allclose(
        similarity.reshape(rows * cols, rows * cols).numpy(), cosine_similarity(grid.numpy()), atol=1e-6
    )
    for r in range(rows):
        for c in range(cols):
            tile = similarity[r, c]
            assert int(tile.argmax()) == r * cols + c  # most similar to itself
            others = tile.clone()
            others[r, c] = -2
            r2, c2 = divmod(int(others.argmax()), cols)
            assert abs(r - r2) + abs(c - c2) == 1  # ... then to a 4-neighbour
    summary = analysis._similarity_summary(similarity)
    assert summary["mean_neighbour_similarity"] > summary["mean_other_similarity"]


def test_position_similarity_figure_from_a_model(tmp_path):
    model = ViTReproModel(ViTReproConfig(**tiny_kwargs()))
    with torch.no_grad():
        model.embeddings.position_embeddings[0, 1:] = sincos_grid_embedding(4, 4, (0.3, 0.6, 0.9, 1.2)).repeat(1, 2)
    path = analysis.plot_position_embedding_similarity(model, tmp_path / "pos.png")
    assert_png(path)


# ----------------------------------------------------------------------------- embedding filters


def test_pca_filters_recover_a_planted_low_rank_structure():
    from sklearn.decomposition import PCA

    generator = torch.Generator().manual_seed(3)
    dim, channels, p, rank = 64, 3, 4, 3
    basis, _ = torch.linalg.qr(torch.randn(channels * p * p, rank, dtype=torch.float64, generator=generator))
    scales = torch.tensor([5.0, 3.0, 2.0], dtype=torch.float64)
    coefficients = torch.randn(dim, rank, dtype=torch.float64, generator=generator) * scales
    noise = torch.randn(dim, channels * p * p, dtype=torch.float64, generator=generator)
    filters = coefficients @ basis.T + 1e-3 * noise
    weight = filters.reshape(dim, channels, p, p).float()

    components, ratio = analysis.patch_embedding_pca(weight, num_components=5)
    assert components.shape == (5, channels, p, p) and ratio.shape == (5,)
    top = components[:rank].reshape(rank, -1).double()
    # The top components span the planted patterns: projecting them onto the basis loses nothing.
    np.testing.assert_allclose(torch.linalg.norm(top @ basis, dim=1).numpy(), np.ones(rank), atol=1e-4)
    assert float(ratio[:rank].sum()) > 0.999 and float(ratio[rank:].sum()) < 1e-3
    # Same axes and variance shares as scikit-learn's PCA (up to each axis's sign).
    reference = PCA(n_components=5).fit(filters.float().numpy())
    cosines = np.abs(np.sum(top.numpy() * reference.components_[:rank], axis=1))
    np.testing.assert_allclose(cosines, np.ones(rank), atol=1e-4)
    np.testing.assert_allclose(ratio.numpy(), reference.explained_variance_ratio_, rtol=1e-3, atol=1e-6)


def test_pca_clamps_to_the_available_components_and_hybrids_get_a_clear_error(tmp_path):
    components, _ = analysis.patch_embedding_pca(torch.randn(8, 1, 2, 2), num_components=28)
    assert components.shape[0] == 4  # min(D=8, P*P*C=4)
    backbone = dict(depths=[1, 1, 1], hidden_sizes=[32, 64, 128], embedding_size=16, num_groups=8)
    hybrid = ViTReproModel(ViTReproConfig(**tiny_kwargs(image_size=64, patch_size=1, backbone_config=backbone)))
    with pytest.raises(ValueError, match="plain ViTs only"):
        analysis.plot_embedding_filters(hybrid, tmp_path / "f.png")


# ----------------------------------------------------------------------------- depth trend


def test_attention_distance_trend_against_scipy():
    from scipy import stats

    growing = np.array([[2.0, 4.0], [5.0, 5.0], [9.0, 12.0]])
    trend = analysis.attention_distance_trend(growing)
    assert trend["grows_with_depth"] is True and trend["spearman_rho"] == pytest.approx(1.0)
    assert analysis.attention_distance_trend(growing[::-1])["grows_with_depth"] is False
    assert analysis.attention_distance_trend(growing[:1])["grows_with_depth"] is None

    distances = np.random.default_rng(0).random((8, 4))
    distances[5] = distances[2]  # a tie between two layers' means
    trend = analysis.attention_distance_trend(distances)
    depth, means = np.arange(1, 9), distances.mean(axis=1)
    assert trend["spearman_rho"] == pytest.approx(stats.spearmanr(depth, means).statistic)
    assert trend["slope_pixels_per_layer"] == pytest.approx(stats.linregress(depth, means).slope)
    assert trend["grows_with_depth"] == (stats.spearmanr(depth, means).statistic > 0)


def test_attention_distance_trend_reports_rho_layers_and_p_value():
    """rho = 0.4 over 4 layers is not evidence of growth: the trend reports the statistic, its
    value, the number of layers and a one-sided permutation p-value (issue 14, item 19), checked
    against scipy's exact permutation test."""
    from scipy import stats

    def scipy_p(means):
        depth = np.arange(1, len(means) + 1)
        statistic = lambda y: stats.spearmanr(depth, y).statistic  # noqa: E731
        return stats.permutation_test((means,), statistic, permutation_type="pairings", alternative="greater").pvalue

    weak = np.array([[1.0], [3.0], [2.0], [2.5]])  # rho = 0.4 over 4 layers
    trend = analysis.attention_distance_trend(weak)
    assert trend["spearman_rho"] == pytest.approx(0.4) and trend["num_layers"] == 4
    assert trend["spearman_p_value"] == pytest.approx(9 / 24) == pytest.approx(scipy_p(weak[:, 0]))
    assert trend["summary"] == "Spearman's rho = 0.40 over 4 layers (one-sided permutation p = 0.38)"
    assert "True" not in trend["summary"]
    six = np.random.default_rng(1).random((6, 3))
    assert analysis.attention_distance_trend(six)["spearman_p_value"] == pytest.approx(scipy_p(six.mean(1)))
    # 12 layers (ViT-B): a fixed-seed sample of orderings, close to the exact share
    twelve = np.random.default_rng(2).random((12, 2)).cumsum(axis=0)
    twelve[[3, 7]] = twelve[[7, 3]]
    p_twelve = analysis.attention_distance_trend(twelve)["spearman_p_value"]
    assert p_twelve == analysis.attention_distance_trend(twelve)["spearman_p_value"]  # reproducible
    assert p_twelve == pytest.approx(scipy_p(twelve.mean(1)), abs=0.01) and 0 < p_twelve < 0.01
    assert analysis.attention_distance_trend(np.ones((3, 2)))["summary"].startswith("Spearman's rho undefined over 3 layers")


# ----------------------------------------------------------------------------- image sources


def test_images_from_a_png_folder_and_from_a_local_dataset(tmp_path):
    import datasets

    images = digit_images(5)
    folder = write_png_folder(tmp_path / "pngs" / "class_a", images)
    read = list(analysis.iter_images(tmp_path / "pngs"))
    assert [np.asarray(i).tolist() for i in read] == [np.asarray(i).tolist() for i in images]

    # A folder in a Hub dataset's layout goes through datasets.load_dataset, as a Hub id would.
    data = tmp_path / "dataset"
    (data / "data").mkdir(parents=True)
    table = datasets.Dataset.from_dict({"img": images, "label": list(range(5))}).cast_column("img", datasets.Image())
    table.to_parquet(str(data / "data" / "test-00000-of-00001.parquet"))
    read = list(analysis.iter_images(data, image_column="img"))
    assert len(read) == 5 and np.array_equal(np.asarray(read[3]), np.asarray(images[3]))
    with pytest.raises(ValueError, match=r"no column 'image'.*\['img', 'label'\]"):
        analysis.iter_images(data)
    with pytest.raises(ValueError, match="not a folder of image files"):
        analysis.iter_images(tmp_path / "missing-folder")
    with pytest.raises(ValueError, match="got the file"):
        analysis.iter_images(folder / "000.png")


def test_analyze_model_on_greyscale_digits_with_gap_pooling(tmp_path):
    config = ViTReproConfig(**tiny_kwargs(num_channels=1, pooling="gap", image_size=16, patch_size=4))
    model = randomize_(ViTReproModel(config))
    result = analysis.analyze_model(model, digit_images(6), tmp_path, batch_size=4, rollout_images=2, progress=False)
    assert result["images"]["num_images"] == 6 and result["model"]["token_grid"] == [4, 4]
    assert np.array(result["mean_attention_distance"]["pixels"]).shape == (2, 4)
    assert result["embedding_filters"]["num_components"] == 16  # P * P * C = 16 < 28
    assert json.loads((tmp_path / "analysis.json").read_text()) == json.loads(json.dumps(result))
    for name in FIGURES:
        assert_png(tmp_path / name)


def test_analyze_model_on_a_hybrid(tmp_path):
    backbone = dict(depths=[1, 1, 1], hidden_sizes=[32, 64, 128], embedding_size=16, num_groups=8)
    config = ViTReproConfig(**tiny_kwargs(image_size=64, patch_size=1, backbone_config=backbone))
    model = randomize_(ViTReproModel(config))
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    result = analysis.analyze_model(model, pixels, tmp_path, rollout_images=2, progress=False)
    assert "skipped" in result["embedding_filters"] and not (tmp_path / "embedding_filters.png").exists()
    assert result["model"]["token_stride_pixels"] == [16, 16] and result["model"]["token_grid"] == [4, 4]
    # The ViT's kernel is restored and the CNN's config is left as it was.
    assert model.config._attn_implementation == "sdpa" and model.config.backbone_config._attn_implementation == "eager"
    # Same numbers as from the attentions the model returns, on 16-pixel token centres.
    with torch.no_grad():
        attentions = model(pixels, output_attentions=True).attentions
    centers = torch.tensor([[8.0 + 16 * r, 8.0 + 16 * c] for r in range(4) for c in range(4)])
    expected = [analysis.mean_attention_distance(a, centers, 1).mean(0).tolist() for a in attentions]
    np.testing.assert_allclose(result["mean_attention_distance"]["pixels"], expected, rtol=1e-5)
    assert_png(tmp_path / "attention_rollout.png")


def test_one_call_per_figure(tmp_path):
    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())))
    folder = write_png_folder(tmp_path / "pngs", [i.convert("RGB") for i in digit_images(4)])
    paths = [
        analysis.plot_embedding_filters(model, tmp_path / "a.png", num_components=6),
        analysis.plot_position_embedding_similarity(model, tmp_path / "b.png"),
        analysis.plot_mean_attention_distance(model, folder, tmp_path / "c.png", num_images=3, progress=False),
        analysis.plot_attention_rollout(model, digit_images(5), tmp_path / "d.png", num_images=2, progress=False),
    ]
    for path in paths:
        assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png", "d.png", "pngs"]


# ----------------------------------------------------------------------------- the command


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from transformers import ViTImageProcessor

    model = randomize_(ViTReproForImageClassification(ViTReproConfig(**tiny_kwargs())))
    path = tmp_path / "run" / "final"
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


def test_analyze_command_writes_valid_pngs_and_json(tmp_path, tiny_checkpoint, capsys):
    images = write_png_folder(tmp_path / "digits", [i.convert("RGB") for i in digit_images(6)])
    out = tmp_path / "figures"
    code = main(
        ["analyze", str(tiny_checkpoint), "--images", str(images), "--output-dir", str(out), "--num-images", "5",
         "--batch-size", "2", "--rollout-images", "3"]
    )
    assert code == 0
    assert "grows with depth" in capsys.readouterr().out
    sizes = {name: assert_png(out / name) for name in FIGURES}
    assert sizes["attention_rollout.png"][0] > sizes["mean_attention_distance.png"][0] / 2
    result = json.loads((out / "analysis.json").read_text())
    assert result["images"]["num_images"] == 5 and result["attention_rollout"]["num_images"] == 3
    assert np.array(result["mean_attention_distance"]["pixels"]).shape == (2, 4)
    assert isinstance(result["mean_attention_distance"]["trend"]["grows_with_depth"], bool)
    uniform = result["mean_attention_distance"]["uniform_attention_pixels"]
    assert uniform == pytest.approx(hand_mean_distance(4, 4, 8, 8))

    # A run folder: the model is RUN/final and the figures go to RUN/analysis by default.
    run = tiny_checkpoint.parent
    assert main(["analyze", str(run), "--images", str(images), "--num-images", "2", "--rollout-images", "1"]) == 0
    assert (run / "analysis" / "analysis.json").is_file()


def test_analyze_command_help_and_errors(tmp_path, tiny_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--help"])
    assert exit_info.value.code == 0 and "--images" in capsys.readouterr().out
    missing = str(tmp_path / "nothing-here")
    assert main(["analyze", str(tiny_checkpoint), "--images", missing]) == 2
    assert "Say where to write" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "no-checkpoint"), "--images", missing, "--output-dir", str(tmp_path / "o")]) == 2
    assert "Cannot load a model from" in capsys.readouterr().err
    code = main(["analyze", str(tiny_checkpoint), "--images", missing, "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "not a folder of image files" in capsys.readouterr().err


def test_analyze_reads_registry_tasks_like_the_other_commands(tmp_path, tiny_checkpoint, capsys):
    """`--images digits` (a registry task, as `evaluate` and `fewshot` take it) reads the task's
    test split through `data.load_task` (issue 14, item 16)."""
    out = tmp_path / "from-task"
    argv = ["analyze", str(tiny_checkpoint), "--images", "digits", "--output-dir", str(out), "--num-images", "3",
            "--rollout-images", "1", "--no-progress"]
    assert main(argv) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert result["images"]["source"] == "digits" and result["images"]["num_images"] == 3
    from hf_vit_repro.data import load_task

    first = next(iter(analysis.iter_images("digits")))
    assert np.array_equal(np.asarray(first), np.asarray(load_task("digits", "test")[0]["image"]))
    capsys.readouterr()
    assert main(["analyze", str(tiny_checkpoint), "--images", "digitz", "--output-dir", str(out)]) == 2
    assert "Did you mean the task 'digits'?" in capsys.readouterr().err  # as the other commands suggest it


def test_analyze_progress_bar_counts_images_and_honours_no_progress(tmp_path, tiny_checkpoint, capsys):
    """Two images with the default --num-images 128: the bar says 2/2, not 2/128; with
    --no-progress no bar is drawn, neither ours nor transformers' "Loading weights" (item 20)."""
    images = write_png_folder(tmp_path / "two", [i.convert("RGB") for i in digit_images(2)])
    capsys.readouterr()
    assert main(["analyze", str(tiny_checkpoint), "--images", str(images), "--output-dir", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "2/2" in err and "/128" not in err
    # the trend is printed as its statistic, value, layers and p-value (item 19)
    assert "grows with depth? Spearman's rho = " in out and "over 2 layers (one-sided permutation p = " in out
    assert main(["analyze", str(tiny_checkpoint), "--images", str(images), "--output-dir", str(tmp_path / "b"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "attention" not in err and "Loading weights" not in err and "it/s" not in err, err


def test_image_folders_are_read_upright(tmp_path):
    """A phone photo with EXIF orientation 6 is read as `datasets` and `pipeline` read it (issue 24 item 2)."""
    from .test_data_collate import _rotated_photo_jpeg

    _rotated_photo_jpeg(tmp_path / "portrait.jpg")
    (image,) = list(analysis.iter_images(tmp_path))
    assert image.size == (16, 32)
