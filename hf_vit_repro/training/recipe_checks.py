"""Checks of a recipe that need more than a range, kept out of recipe.py (`Recipe.validate` calls
`recipe_problem`). Each returns the one-line message `RecipeError` shows (what is wrong, how to fix
it), or None.
"""

from __future__ import annotations


def recipe_problem(recipe) -> str | None:
    """The first problem of `data_problem` and of `train.fewshot_eval` (`fewshot_curve.fewshot_problem`)."""
    from .fewshot_curve import fewshot_problem

    return data_problem(recipe.data, recipe.model.image_size) or fewshot_problem(recipe.train.fewshot_eval)


def data_problem(data, image_size: int) -> str | None:
    """What is wrong with `data` (a `DataRecipe`) for a model at `image_size`, or None.

    - `max_train_examples`, `max_eval_examples`, `subset`, `resize_size`: null or > 0;
    - `mean` and `std`: three values each, every std > 0;
    - `subset`: a fraction in (0, 1] or a whole number of images;
    - `classes`: null or at least 2 distinct label ids >= 0;
    - `resize_size` (the square the `finetune` augmentation resizes to before its random crop, BiT's
      "precrop"): only with `augmentation: finetune`, and at least `model.image_size`.
    """
    for key in ("max_train_examples", "max_eval_examples", "subset", "resize_size"):
        if (value := getattr(data, key)) is not None and value <= 0:
            return f"`data.{key}` must be > 0, got {value!r}."
    if len(data.mean) != 3 or len(data.std) != 3 or any(s <= 0 for s in data.std):
        return f"`data.mean` and `data.std` need 3 values (std > 0), got {data.mean} / {data.std}."
    if data.subset is not None and data.subset > 1 and data.subset != int(data.subset):
        return f"`data.subset` is a fraction in (0, 1] or a whole number of images, got {data.subset}."
    from ..data import classes_problem

    if data.classes is not None and (problem := classes_problem(data.classes)):
        return f"`data.classes` {problem}"
    if data.resize_size is not None:
        if data.augmentation != "finetune":
            return (f"`data.resize_size` sets the square `augmentation: finetune` resizes to before its random crop; "
                    f"`augmentation: {data.augmentation}` does not use it: set it to null.")
        if data.resize_size < image_size:
            return (f"`data.resize_size` ({data.resize_size}) must be at least `model.image_size` ({image_size}): "
                    "the random crop is taken from the resized image.")
    return None
