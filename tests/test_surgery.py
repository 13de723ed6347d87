"""Layer surgery (models.recipes.surgery): grown and layer-subset models compute what they promise,
cached decoding included."""
import copy

import pytest
import torch

import multispec

from conftest import hf_greedy, prompts, tiny_model


def test_block_expansion_starts_as_the_same_function():
    """models.recipes.surgery.grow_layers: the grown model (zeroed output projections in the new blocks) gives the
    source's logits, cached decoding included, and has the new depth."""
    from models.recipes.surgery.grow_layers import grow

    source = tiny_model("llama", layers=2)
    grown = grow(source, 6)
    assert len(grown.model.layers) == 6 and grown.config.num_hidden_layers == 6
    for ids in prompts(3, seed=2):
        assert torch.allclose(grown(ids).logits, source(ids).logits, atol=1e-5)
        assert torch.equal(multispec.generate(grown, ids, max_new_tokens=12).sequences, hf_greedy(source, ids, 12))
    with pytest.raises(ValueError, match="multiple"):
        grow(source, 3)


def test_layer_subset_skips_exactly_the_dropped_layers():
    """models.recipes.surgery.layer_subset: keeping layers 0 and 2 of 3 computes what the source computes with
    layer 1 turned into an identity (zero output projections); cached decoding agrees."""
    from models.recipes.surgery.layer_subset import keep_layers

    source = tiny_model("llama", layers=3)
    subset = keep_layers(source, [0, 2])
    skipped = copy.deepcopy(source)
    torch.nn.init.zeros_(skipped.model.layers[1].self_attn.o_proj.weight)
    torch.nn.init.zeros_(skipped.model.layers[1].mlp.down_proj.weight)
    assert len(subset.model.layers) == 2 and len(source.model.layers) == 3
    for ids in prompts(3, seed=4):
        assert torch.allclose(subset(ids).logits, skipped(ids).logits, atol=1e-5)
        assert torch.equal(multispec.generate(subset, ids, max_new_tokens=12).sequences, hf_greedy(subset, ids, 12))
    for bad in ([], [0, 0], [3]):
        with pytest.raises(ValueError, match="--keep"):
            keep_layers(source, bad)
