"""Text adapter: generation, streaming, loading errors, the CLI and the benchmark on a tiny random pair."""
import json

import pytest
import torch

import multispec
from modalities.text import generate_text, load_pair, make_drafter, stream_text
from multispec.methods import DraftModelConfig, Method, method_from_names
from modalities.text.bench import load_prompts, run_bench
from modalities.cli import main

from conftest import hf_greedy


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from models.recipes.tiny_random import save_pair
    return save_pair(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def loaded(pair):
    return load_pair(pair["target"], pair["draft"])


@pytest.mark.parametrize("method", ["plain", "draft", "lookup", "layerskip"])
def test_generate_text_matches_hf_greedy(loaded, method):
    target, draft, tokenizer = loaded
    prompt = "def parse(text):\n    return text.split("
    text, stats = generate_text(prompt, target, tokenizer, method=method_from_names(method), draft=draft, max_new_tokens=20,
                                stop_at_eos=False)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    ref = hf_greedy(target, ids, 20)[0, ids.shape[1]:]
    assert text == tokenizer.decode(ref, skip_special_tokens=True)
    assert stats.new_tokens == 20


def test_stream_pieces_join_to_the_text(loaded):
    target, draft, tokenizer = loaded
    stream = stream_text("import os\n", target, tokenizer, make_drafter(DraftModelConfig(), target, draft), max_new_tokens=24,
                         stop_at_eos=False)
    pieces = list(stream)
    assert "".join(pieces) == tokenizer.decode(stream.token_ids, skip_special_tokens=True)
    assert stream.stats.new_tokens == 24 and len(pieces) >= 1


def test_chat_template_is_used_when_present(loaded):
    target, _, tokenizer = loaded
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}"
    from modalities.text import encode_prompt
    assert tokenizer.decode(encode_prompt("hi", tokenizer)[0]) == "<hi>"
    assert tokenizer.decode(encode_prompt("hi", tokenizer, chat=False)[0]) == "hi"


def test_loading_errors(pair, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_pair(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_pair(tmp_path / "empty")
    with pytest.raises(ValueError, match="prompt must be"):
        generate_text("", *[load_pair(pair["target"])[i] for i in (0, 2)])


def test_mismatched_tokenizers_are_refused(pair, tmp_path):
    from models.recipes.tiny_random import build_tokenizer
    other = tmp_path / "draft"
    target, _, _ = load_pair(pair["draft"])
    target.save_pretrained(other)
    build_tokenizer(vocab_size=400).save_pretrained(other)
    with pytest.raises(ValueError, match="draft tokenizer differs"):
        load_pair(pair["target"], other)


def test_cli_streams_text_and_stats(pair, capsys):
    code = main(["text", "def f(", "--target", str(pair["target"]), "--draft", str(pair["draft"]),
                 "--drafter", "draft", "--max-new-tokens", "8", "--temperature", "0.8", "--top-p", "0.9",
                 "--seed", "3"])
    out = capsys.readouterr()
    assert code == 0 and out.out.startswith("def f(") and "τ=" in out.err and "tok/s" in out.err


def test_cli_reports_bad_paths(tmp_path, capsys):
    assert main(["text", "x", "--target", str(tmp_path / "nope")]) == 2
    assert "neither a folder nor a model name" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["text", "x", "--target", str(tmp_path / "empty")]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_bench_reports_every_method(loaded, tmp_path):
    target, draft, tokenizer = loaded
    prompts_file = tmp_path / "p.jsonl"
    prompts_file.write_text('{"prompt": "def f(x):", "category": "code"}\n{"turns": ["Tell me a story."]}\n')
    report = run_bench(target, draft, tokenizer, load_prompts(prompts_file), max_new_tokens=12, progress=False)
    rows = {r["method"]: r for r in report["rows"]}
    assert set(report["by_category"]) == {"code", "all"}
    assert set(rows) == {"plain", "hf-plain", "draft", "draft-fixed", "draft-tree", "hf-assisted", "lookup", "lookup-tree", "hf-lookup",
                         "layerskip", "hf-early-exit", "jacobi"}
    for row in rows.values():  # greedy everywhere: every method reproduces plain decoding
        assert row["identical_to_plain"] == "2/2" and row["new_tokens"] == 24 and row["tau"] >= 1.0
    assert rows["plain"]["speedup"] == 1.0 and json.dumps(report)


def test_method_or_drafter_not_both(loaded):
    target, draft, tokenizer = loaded
    with pytest.raises(ValueError, match="not both"):
        stream_text("x", target, tokenizer, make_drafter(DraftModelConfig(), target, draft), method=Method())
    with pytest.raises(ValueError, match="the text adapter has no 'neighborhood' acceptance; it supports exact, typical"):
        generate_text("x", target, tokenizer, method=method_from_names("draft", "neighborhood"), draft=draft)


def test_cli_flags_that_do_not_apply_are_refused(pair, capsys):
    assert main(["text", "x", "--target", str(pair["target"]), "--drafter", "lookup", "--window", "4"]) == 2
    assert "settings ['window'] do not apply to drafter 'lookup'" in capsys.readouterr().err


def test_a_bf16_draft_for_an_fp32_target_stays_exact(pair, tmp_path, capsys):
    target, draft, tokenizer = load_pair(pair["target"], pair["draft"], draft_dtype=torch.bfloat16)
    assert target.dtype == torch.float32 and draft.dtype == torch.bfloat16
    prompt = "def parse(text):\n    return text.split("
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    ref = tokenizer.decode(hf_greedy(target, ids, 20)[0, ids.shape[1]:], skip_special_tokens=True)
    for name in ("draft", "draft-tree"):
        text, stats = generate_text(prompt, target, tokenizer, method=method_from_names(name), draft=draft,
                                    max_new_tokens=20, stop_at_eos=False)
        assert text == ref and stats.drafted > 0
    prompts_file = tmp_path / "p.jsonl"
    prompts_file.write_text('{"prompt": "def f(x):", "category": "code"}\n')
    assert main(["bench", "text", "--target", str(pair["target"]), "--draft", str(pair["draft"]), "--draft-dtype",
                 "bfloat16", "--prompts", str(prompts_file), "--methods", "plain", "draft", "draft-tree",
                 "--max-new-tokens", "8", "--out", str(tmp_path / "bench")]) == 0
    out = capsys.readouterr().out
    assert "target torch.float32, draft model torch.bfloat16" in out and "| draft | " in out
    report = json.loads(next((tmp_path / "bench").glob("*.json")).read_text())
    assert report["draft_dtype"] == "torch.bfloat16" and {r["identical_to_plain"] for r in report["rows"]} == {"1/1"}
