"""Method configs (multispec.methods): validation with clear errors, one name per rule, and command
lines whose defaults are the Python API's (modalities.method_args)."""
import pytest

from modalities.cli import build_parser
from modalities.method_args import method_from_args
from multispec.methods import (AdditiveConfig, DraftModelConfig, ExactConfig, GroupConfig, JacobiConfig,
                               LayerSkipConfig, Method, NeighborhoodConfig, PromptLookupConfig, TopKConfig,
                               method_from_names)


@pytest.mark.parametrize("make, message", [
    (lambda: DraftModelConfig(num_draft_tokens=0), "1 <= min_draft_tokens <= num_draft_tokens"),
    (lambda: DraftModelConfig(num_draft_tokens=20), "num_draft_tokens <= max_draft_tokens"),
    (lambda: DraftModelConfig(confidence_threshold=1.0), "confidence_threshold must be in"),
    (lambda: PromptLookupConfig(max_ngram=1, min_ngram=2), "1 <= min_ngram <= max_ngram"),
    (lambda: LayerSkipConfig(num_layers=0), "num_layers must be an integer >= 1"),
    (lambda: JacobiConfig(window=0), "window must be >= 1"),
    (lambda: TopKConfig(k=0), "topk k must be an integer >= 1"),
    (lambda: TopKConfig(k=(4, 0)), "topk k must be"),
    (lambda: TopKConfig(min_ratio=2.0), "min_ratio must lie in"),
    (lambda: AdditiveConfig(beta=-0.1), "additive beta must be a number >= 0"),
    (lambda: NeighborhoodConfig(delta=1.5), "delta must lie in"),
    (lambda: NeighborhoodConfig(max_ratio=0.5), "max_ratio"),
    (lambda: GroupConfig(group_size=0), "group_size must be an integer >= 1"),
    (lambda: Method(None, TopKConfig()), "plain decoding drafts nothing"),
    (lambda: Method("draft"), "drafter must be None or one of"),
    (lambda: Method(DraftModelConfig(), "exact"), "acceptance must be one of"),
    (lambda: method_from_names("hydra"), "unknown drafter 'hydra'"),
    (lambda: method_from_names("draft", "lantern"), "unknown acceptance 'lantern'"),
    (lambda: method_from_names("draft", "exact", window=4), r"settings \['window'\] do not apply"),
])
def test_bad_settings_raise_naming_the_problem(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_names_and_result_columns():
    assert Method().name == "plain" and Method().lossless
    assert Method(DraftModelConfig(), TopKConfig(k=(4, 16))).name == "draft+topk k=4/16"
    assert Method(DraftModelConfig(num_draft_tokens=8), TopKConfig(k=(4, 16))).name == "draft γ=8+topk k=4/16"
    assert Method(DraftModelConfig(adaptive=False)).name == "draft fixed γ=4"
    assert Method(DraftModelConfig(), NeighborhoodConfig(delta=0.4, max_ratio=20.0)).name == \
        "draft+neighborhood δ=0.4 λ=20"
    assert Method(JacobiConfig(), GroupConfig(group_size=8), name="mine").name == "mine"
    columns = Method(DraftModelConfig(num_draft_tokens=6), TopKConfig(k=(4, 16))).columns()
    assert columns == {"drafter": "draft", "rule": "topk", "num_draft_tokens": 6, "k": (4, 16)}
    assert method_from_names("draft", "topk", k=(4, 16), num_draft_tokens=None) == \
        Method(DraftModelConfig(), TopKConfig(k=(4, 16)))


@pytest.mark.parametrize("argv, expected", [
    (["text", "hi"], Method(DraftModelConfig())),
    (["image", "--class", "x"], Method(DraftModelConfig(), NeighborhoodConfig())),
    (["speech", "hi"], Method(DraftModelConfig(), TopKConfig())),
    (["speech", "hi", "--drafter", "plain"], Method()),  # plain decoding takes the exact rule
    (["speech", "hi", "--k", "4/256", "--num-draft-tokens", "6"],
     Method(DraftModelConfig(num_draft_tokens=6), TopKConfig(k=(4, 256)))),
    (["speech", "hi", "--drafter", "lookup", "--acceptance", "additive", "--beta", "0.1/1"],
     Method(PromptLookupConfig(), AdditiveConfig(beta=(0.1, 1.0)))),
    (["image", "--class", "x", "--drafter", "jacobi", "--acceptance", "exact", "--window", "8"],
     Method(JacobiConfig(window=8), ExactConfig())),
])
def test_command_line_defaults_are_the_api_defaults(argv, expected):
    assert method_from_args(build_parser().parse_args(argv)) == expected


def test_command_line_refuses_a_method_the_adapter_lacks(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["image", "--class", "x", "--acceptance", "topk"])
    assert "invalid choice: 'topk'" in capsys.readouterr().err
