"""The driver's torch-free answers (fusion3d.learned.shapes, fusion3d.learned.settings) equal
the networks' classes and the training recipes: they cannot drift."""

from __future__ import annotations

import inspect

import pytest

from fusion3d.learned.models.shared import constructor_keys
from fusion3d.learned.recipes import ARCHITECTURES, recipe_for
from fusion3d.learned.settings import SETTINGS, settings_for
from fusion3d.learned.shapes import SHAPES, shape_for

#: Small configs of every network (built on the CPU in well under a second each) whose
#: size_divisor differs from the default one where the network's rule allows it.
SMALL = {
    "dcfb": [
        {"spatial_dims": 2, "patch_size": 2, "embed_dim": 4, "depths": [1, 1], "num_heads": [1, 2]},
        {"spatial_dims": 3, "patch_size": 1, "embed_dim": 4, "depths": [1, 1, 1]}
        | {"num_heads": [1, 1, 1], "window_size": 3},
    ],
    "swinfuse": [{"img_size": 16, "window_size": 4, "embed_dim": 8, "depths": [1, 1, 1]}],
    "matr": [
        {"img_size": 16, "window_size": 2, "depth": 2},
        {"img_size": 8, "patch_size": 4, "window_size": 4, "depth": 1},
        {"img_size": 16, "window_size": 4, "depth": 0},
    ],
    "dilran": [{"channels": 8, "recon_channels": [8, 4]}],
}


def test_every_architecture_has_settings_and_a_shape():
    assert set(SETTINGS) == set(SHAPES) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_shape_is_the_class_signature(arch):
    cls = recipe_for(arch).model_class
    params = inspect.signature(cls.__init__).parameters.values()
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    assert SHAPES[arch].class_name == cls.__name__
    assert dict(SHAPES[arch].keys) == constructor_keys(cls)
    assert list(SHAPES[arch].keys) == list(constructor_keys(cls))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_size_divisor_is_the_built_networks(arch):
    recipe, shape = recipe_for(arch), SHAPES[arch]
    for config in [{}, *SMALL[arch]]:
        if not config and arch == "dcfb":
            config = {"embed_dim": 6}  # the published sizes, smaller: the rule is the same
        model = recipe.build_model(config)
        assert shape.size_divisor(config) == model.size_divisor, (arch, config)
        cls_divisor = getattr(recipe.model_class, "size_divisor", None)
        if isinstance(cls_divisor, int):
            assert cls_divisor == model.size_divisor


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_each_recipe_is_its_settings(arch):
    recipe, settings = recipe_for(arch), SETTINGS[arch]
    assert isinstance(recipe, type(settings))
    assert recipe.architecture == settings.architecture == arch
    assert recipe.all_defaults() == settings.all_defaults()
    assert type(recipe).check_config is type(settings).check_config


def test_method_keys_name_their_architecture():
    for method in ("dcfb3d", "dcfb2d", "swinfuse", "matr", "dilran"):
        assert settings_for(method) is SETTINGS[recipe_for(method).architecture]
        assert shape_for(method) is SHAPES[recipe_for(method).architecture]
    with pytest.raises(ValueError, match="no training recipe for 'pca'"):
        settings_for("pca")


def test_the_settings_and_shapes_import_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; import fusion3d.config, fusion3d.preflight, fusion3d.learned.settings, "
        "fusion3d.learned.shapes; from fusion3d.learned.shapes import shape_for; "
        "from fusion3d.learned.settings import resolve_train_config, settings_for; "
        "[resolve_train_config({}, {}, settings_for(m)) for m in ('dcfb3d', 'swinfuse', 'matr', "
        "'dilran')]; [shape_for(m).size_divisor({}) for m in ('dcfb3d', 'matr')]; "
        "print(sorted(m for m in ('torch', 'monai', 'scipy', 'nibabel') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
