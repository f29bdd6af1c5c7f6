"""hf: extractors on tiny random transformers models saved to tmp_path (nothing is downloaded)."""
import json
import sys

import numpy as np
import pytest
import torch

from videobert.extractors import BuiltinExtractor, make_extractor
from videobert.hf_extractors import IMAGENET, OPENAI_CLIP, uniform_frames

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
TINY_TEXT = dict(TINY, vocab_size=99, max_position_embeddings=16)
TINY_VISION = dict(TINY, image_size=32, patch_size=16)


def videomae():
    return transformers.VideoMAEModel(transformers.VideoMAEConfig(num_frames=4, tubelet_size=2, **TINY_VISION))


def xclip():
    config = transformers.XCLIPConfig(
        text_config=TINY_TEXT, projection_dim=24, prompt_num_attention_heads=2,
        vision_config=dict(TINY_VISION, num_frames=4, mit_hidden_size=24, mit_intermediate_size=37,
                           mit_num_attention_heads=2))
    return transformers.XCLIPModel(config)


def clip():
    config = transformers.CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=24)
    return transformers.CLIPModel(config)


def clip_vision():
    return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TINY_VISION))


def siglip():
    config = transformers.SiglipConfig(text_config=TINY_TEXT, vision_config=TINY_VISION)
    return transformers.SiglipModel(config)


def dinov2():
    return transformers.Dinov2Model(transformers.Dinov2Config(**TINY_VISION))


# builder, expected dim, expected frames per clip (default options)
MODELS = {"videomae": (videomae, 32, 4), "xclip": (xclip, 24, 4), "clip": (clip, 24, 4),
          "clip_vision_model": (clip_vision, 32, 4), "siglip": (siglip, 32, 4), "dinov2": (dinov2, 32, 4)}


def save(build, folder):
    torch.manual_seed(0)
    build().save_pretrained(folder)
    return "hf:" + str(folder)


def random_clips(n=2, t=8, side=32, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, t, side, side, 3), dtype=np.uint8))


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_each_model_type_gives_dim_features_deterministically(model_type, tmp_path):
    build, dim, frames = MODELS[model_type]
    spec = save(build, tmp_path)
    ex = make_extractor(spec)
    assert isinstance(ex, torch.nn.Module) and ex.name == spec
    assert ex.model.config.model_type == model_type
    assert (ex.size, ex.dim, ex.frames) == (32, dim, frames)
    feats = ex(random_clips())
    assert feats.shape == (2, dim) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert torch.equal(ex(random_clips()), feats)
    assert torch.equal(make_extractor(spec)(random_clips()), feats)  # reloading gives the same numbers
    assert not torch.allclose(feats[0], feats[1])  # different clips, different features
    ex.train()
    assert not ex.model.training  # frozen: stays in eval mode
    with torch.autocast("cpu", dtype=torch.bfloat16):  # how Lightning runs "bf16-mixed"
        assert ex(random_clips()).dtype == torch.float32


def test_clip_normalises_with_preprocessor_config_values(tmp_path):
    """Output equals a manual pass: uniform frames, /255, the file's mean/std, pooled output, mean over frames."""
    spec = save(clip_vision, tmp_path)
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    clips = random_clips(t=10)
    ex = make_extractor(spec, frames_per_clip=3)
    idx = uniform_frames(10, 3)
    assert idx == [1, 5, 8]

    def manual(m, s):
        x = clips[:, idx].permute(0, 1, 4, 2, 3).float().flatten(0, 1) / 255  # (N*F, 3, S, S)
        x = (x - torch.tensor(m).view(3, 1, 1)) / torch.tensor(s).view(3, 1, 1)
        with torch.no_grad():
            return ex.model(pixel_values=x).pooler_output.view(2, 3, -1).mean(1)

    feats = ex(clips)
    torch.testing.assert_close(feats, manual(mean, std))
    assert not torch.allclose(feats, manual(*OPENAI_CLIP), atol=1e-3)  # the file's values, not the defaults


def test_videomae_defaults_to_imagenet_and_resizes_frames(tmp_path):
    """Without a preprocessor config: ImageNet mean/std; 48 px frames are resized to the model's 32."""
    ex = make_extractor(save(videomae, tmp_path))
    clips = random_clips(side=48)
    x = clips[:, uniform_frames(8, 4)].permute(0, 1, 4, 2, 3).float().flatten(0, 1) / 255
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    x = (x.view(2, 4, 3, 32, 32) - torch.tensor(IMAGENET[0]).view(3, 1, 1)) / torch.tensor(IMAGENET[1]).view(3, 1, 1)
    with torch.no_grad():
        want = ex.model(pixel_values=x).last_hidden_state.mean(1)
    torch.testing.assert_close(ex(clips), want)


def test_builtin_module_matches_numpy_path():
    ex = make_extractor("builtin")
    assert isinstance(ex, torch.nn.Module) and (ex.name, ex.size) == ("builtin", 32)
    clips = random_clips(n=3, t=20, side=32)
    want = BuiltinExtractor()(clips.numpy())
    assert isinstance(want, np.ndarray) and want.shape == (3, ex.dim)
    got = ex(clips)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert np.array_equal(got.numpy(), want)


def test_errors_name_what_was_expected(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown extractor 'resnet'.*'builtin', 'hf:"):
        make_extractor("resnet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no config.json"):
        make_extractor(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(FileNotFoundError, match=r"missing: not a model folder"):
        make_extractor(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="after 'hf:'"):
        make_extractor("hf:")
    transformers.BertConfig(**TINY).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"model_type 'bert' is not supported; supported: \[.*'videomae'"):
        make_extractor(f"hf:{tmp_path / 'bert'}")
    spec = save(videomae, tmp_path / "videomae")
    with pytest.raises(ValueError, match="num_frames=4 .* frames_per_clip=8 does not apply"):
        make_extractor(spec, frames_per_clip=8)
    with pytest.raises(ValueError, match=r"expected uint8 clips \(N, T, H, W, 3\)"):
        make_extractor(spec)(torch.zeros(2, 4, 32, 32, dtype=torch.uint8))
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install transformers"):
        make_extractor(spec)
