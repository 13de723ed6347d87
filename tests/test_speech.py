"""Speech adapter: exact methods equal plain greedy, zero tolerance is exact, drafts respect slots."""
import functools

import pytest
import torch
import transformers

from modalities.speech.codec import MelRVQCodec, MelRVQConfig
from modalities.speech.generation import SpeechModels, generate_codes, generate_speech, make_acceptance, make_drafter
from modalities.speech.vocab import (CODE_OFFSET, EOS, INDEX_OFFSET, PHONE_CODE_OFFSET, PHONES, encode_phones,
                                     encode_text, text_to_phones)
from multispec.guidance import GuidedLM
from multispec.methods import (AdditiveConfig, DraftModelConfig, ExactConfig, JacobiConfig, Method, NeighborhoodConfig,
                               PromptLookupConfig, TopKConfig)

C = 16
PLAIN, DRAFT = Method(), DraftModelConfig()
DRAFTERS = {"draft": DRAFT, "jacobi": JacobiConfig(), "lookup": PromptLookupConfig()}


def tiny_lm(vocab, layers, hidden, seed):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                                      max_position_embeddings=256, bos_token_id=1, eos_token_id=EOS, pad_token_id=0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)
    return model.eval()


@functools.lru_cache(maxsize=None)
def models(layout: str = "flattened", k: int = 2) -> SpeechModels:
    g = torch.Generator().manual_seed(0)
    codec = MelRVQCodec(MelRVQConfig(num_codebooks=k, codebook_size=C, griffin_lim_iters=4),
                        codebook=torch.randn(k, C, 80, generator=g) * 0.5)
    meta = {"layout": layout, "num_codebooks": k, "codebook_size": C, "frame_rate": 100.0, "sample_rate": 16000}
    if layout == "aligned":
        meta.update(code_offset=PHONE_CODE_OFFSET, text_units="phones")
    vocab = meta.get("code_offset", CODE_OFFSET) + k * C + (1 if layout == "delay" else 0)
    meta["vocab_size"] = vocab
    return SpeechModels(tiny_lm(vocab, 2, 32, 0), codec, meta, tiny_lm(vocab, 1, 16, 1))


TEXTS = ["hello there.", "a short test, of speech!"]


@pytest.mark.parametrize("layout", ["flattened", "delay", "aligned"])
@pytest.mark.parametrize("drafter", ["draft", "jacobi", "lookup"])
def test_exact_methods_equal_plain_greedy(layout, drafter):
    m = models(layout)
    for text in TEXTS:
        plain = generate_codes(m, text, PLAIN, max_seconds=0.3)
        fast = generate_codes(m, text, Method(DRAFTERS[drafter]), max_seconds=0.3)
        assert torch.equal(plain.tokens, fast.tokens)
        assert plain.frames.shape[1] == 2


@pytest.mark.parametrize("layout", ["flattened", "delay", "aligned"])
def test_every_audio_token_sits_in_its_slot(layout):
    m = models(layout)
    for acceptance in (TopKConfig(k=50), AdditiveConfig(beta=0.5), NeighborhoodConfig(delta=0.5, neighbors=64)):
        for temperature in (0.0, 1.0):
            sample = generate_codes(m, TEXTS[1], Method(DRAFT, acceptance), max_seconds=0.3,
                                    temperature=temperature, generator=torch.Generator().manual_seed(0))
            tokens = sample.tokens
            allowed = m.layout.allowed_masks(torch.arange(tokens.shape[0]), m.vocab_size)
            assert allowed[torch.arange(tokens.shape[0]), tokens].all(), (acceptance, temperature)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_zero_tolerance_is_exact(temperature):
    m = models()
    cases = (AdditiveConfig(beta=0.0), AdditiveConfig(beta=(0.0, 0.0)), NeighborhoodConfig(delta=0.0, neighbors=64),
             TopKConfig(k=1), TopKConfig(k=(1, 1)), TopKConfig(k=8, min_ratio=1.0))
    for acceptance in cases:
        if isinstance(acceptance, TopKConfig) and temperature:
            continue  # top-1 tolerance (or the floor ρ = 1) is the greedy rule only
        exact = generate_codes(m, TEXTS[0], Method(DRAFT, ExactConfig()), max_seconds=0.3, temperature=temperature,
                               generator=torch.Generator().manual_seed(2))
        tolerant = generate_codes(m, TEXTS[0], Method(DRAFT, acceptance), max_seconds=0.3, temperature=temperature,
                                  generator=torch.Generator().manual_seed(2))
        assert torch.equal(exact.tokens, tolerant.tokens), acceptance


def test_tolerance_per_level_and_speech_output():
    m = models()
    with pytest.raises(ValueError, match="one β per codebook level"):
        generate_codes(m, TEXTS[0], Method(DRAFT, AdditiveConfig(beta=(0.1, 0.2, 0.3))))
    sample = generate_codes(m, TEXTS[0], Method(DRAFT, AdditiveConfig(beta=(0.0, 0.5))), max_seconds=0.3)
    assert sample.frames.shape[1] == 2
    with pytest.raises(ValueError, match="one k per codebook level"):
        generate_codes(m, TEXTS[0], Method(DRAFT, TopKConfig(k=(2,))))
    loose_residual = make_acceptance(m, TopKConfig(k=(1, C)))  # level 0 greedy-exact, level 1 any code
    level0, level1 = m.layout.offset, m.layout.offset + C
    ramp = torch.linspace(1, 2, C)
    p = torch.zeros(3, m.vocab_size)  # each position allows its own level's codes only (the slot mask)
    p[:2, level1:level1 + C] = p[2, level0:level0 + C] = ramp / ramp.sum()
    x = torch.tensor([level1, level1 + 1, level0])  # each its level's least likely code: only level 1's pass
    assert loose_residual(x, None, p, greedy=True).num_accepted == 2
    assert make_acceptance(m, TopKConfig(k=(1, 1)))(x, None, p, greedy=True).num_accepted == 0
    assert make_acceptance(m, ExactConfig()) is None
    wave, stats = generate_speech(m, TEXTS[0], method=Method(DRAFT), max_seconds=0.2)
    assert wave.ndim == 1 and stats.new_tokens > 0


def test_configs_the_speech_adapter_does_not_build_are_refused():
    from multispec.methods import LayerSkipConfig, TypicalConfig
    m = models()
    with pytest.raises(ValueError, match="no 'layerskip' drafter; it supports plain, draft, jacobi, lookup"):
        make_drafter(m, LayerSkipConfig(), m.encode(TEXTS[0]))
    with pytest.raises(ValueError, match="no 'typical' acceptance"):
        make_acceptance(m, TypicalConfig())
    assert make_drafter(m, None, m.encode(TEXTS[0])) is None


def test_text_errors():
    with pytest.raises(ValueError, match="empty"):
        encode_text("   ")
    with pytest.raises(ValueError, match="spell numbers out"):
        encode_text("call 911")
    with pytest.raises(ValueError, match="cannot read"):
        encode_text("naïve café")
    assert encode_text("Hi!")[0].tolist()[0] == 1 and encode_text("Hi!")[0].tolist()[-1] == 2


def test_phone_prompts_and_aligned_decoding():
    phones = text_to_phones("Hello there.")
    assert phones[0] == "pau" and "hh" in phones and phones[-1] == "pau"
    prompt = encode_phones(phones)[0].tolist()
    assert prompt[0] == 1 and prompt[-1] == 2 and len(prompt) == 2 * len(phones) + 2
    assert prompt[1::2][:len(phones)] == [INDEX_OFFSET + i for i in range(len(phones))]
    with pytest.raises(ValueError, match="unknown phones"):
        encode_phones(["hh", "xx"])
    with pytest.raises(ValueError, match="at most"):
        encode_phones(["ah"] * 1000)
    m = models("aligned")
    for temperature in (0.0, 1.0):  # index and phone slots only name the prompt's phones; tolerance never moves them
        sample = generate_codes(m, TEXTS[1], Method(DRAFT, TopKConfig(k=50)), max_seconds=0.3,
                                temperature=temperature, generator=torch.Generator().manual_seed(0))
        index, named = m.layout.phone_index(sample.tokens), m.layout.phones(sample.tokens)
        assert index.numel() == named.numel() == sample.frames.shape[0] > 0
        assert index.max() < len(text_to_phones(TEXTS[1]))
        prompt_phones = [PHONES.index(p) for p in text_to_phones(TEXTS[1])]
        assert named.tolist() == [prompt_phones[i] for i in index.tolist()]  # the mask does the lookup


def test_forced_token_hook_agrees_with_the_mask():
    """The aligned layout's fast forced-token answer equals the one derived from the mask, at every
    slot and after every index token (prompt phones, indices past the prompt, other tokens)."""
    m = models("aligned")
    prompt = m.encode(TEXTS[0])
    fast, slow = m.guided(m.target, prompt), GuidedLM(m.target, allowed_tokens=m.allowed(prompt))
    n = prompt.shape[1]
    for position in range(n - 2, n + 9):
        for previous in list(range(INDEX_OFFSET, INDEX_OFFSET + 24)) + [EOS, PHONE_CODE_OFFSET + 3]:
            assert fast.forced_token(position, previous) == slow.forced_token(position, previous)
    assert fast.forced_token(n + 1, INDEX_OFFSET) == prompt[0, 2]


def test_bench_report_has_every_method_and_writes_files(tmp_path):
    from modalities.speech import bench
    report = bench.run_report(models(), ["hello there.", "good day."], tmp_path, quick=True, wer=False)
    rows = report["rows"]
    assert [r["method"] for r in rows] == [m.name for m in bench.QUICK_METHODS]
    assert rows[1]["identical_to_plain"] == 2 and rows[1]["log_mel_l1_vs_plain"] == 0.0  # exact = plain
    for name in ("results.json", "results.md", "sweep.png", "spectrograms.png"):
        assert (tmp_path / name).is_file()
    assert any((tmp_path / "wav").glob("*.wav"))


def test_bench_method_selection():
    from modalities.speech import bench
    assert [m.name for m in bench.select_methods("draft+topk k=4, draft")] == ["plain", "draft+topk k=4", "draft"]
    assert bench.select_methods("draft+additive β=0.1/1, draft+neighborhood δ=0.2")[1:] == (
        Method(DRAFT, AdditiveConfig(beta=(0.1, 1.0))), Method(DRAFT, NeighborhoodConfig(delta=0.2)))
    with pytest.raises(ValueError, match="unknown methods"):
        bench.select_methods("draft,fastest")


def test_bench_draft_length_reaches_the_drafter(monkeypatch):
    from modalities.speech import bench, generation
    seen = []
    make_drafter = generation.make_drafter

    def spy(models, config, prompt):
        drafter = make_drafter(models, config, prompt)
        seen.append(None if config is None else (config.num_draft_tokens, drafter.length.initial))
        return drafter
    monkeypatch.setattr(generation, "make_drafter", spy)
    methods = bench.select_methods("draft, draft γ=8+topk k=4/16")
    (plain, exact, tolerant) = bench.run(models(), ["hello there."], methods, max_seconds=0.2, progress=False)
    assert seen == [None, (4, 4), (8, 8)]  # plain (no drafter), draft (γ 4 by default), γ=8
    assert max(tolerant.outputs[0].stats.accepted_per_step) <= 8


def test_cli_reads_one_value_per_codebook_level(capsys):
    from modalities.cli import build_parser
    from modalities.method_args import method_from_args
    args = build_parser().parse_args(["speech", "hi", "--k", "4/256", "--beta", "0.1/1"])
    assert args.k == (4, 256) and args.beta == (0.1, 1.0)
    assert build_parser().parse_args(["speech", "hi", "--k", "4"]).k == 4
    args = build_parser().parse_args(["speech", "hi", "--acceptance", "topk", "--k", "4/256"])
    assert method_from_args(args) == Method(DRAFT, TopKConfig(k=(4, 256)))
    args = build_parser().parse_args(["speech", "hi", "--acceptance", "additive", "--beta", "0.1/1"])
    assert method_from_args(args) == Method(DRAFT, AdditiveConfig(beta=(0.1, 1.0)))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["speech", "hi", "--k", "4/x"])
    assert "'4/x'" in capsys.readouterr().err


def test_cli_draft_flag_alone_replaces_the_bundled_drafter(monkeypatch, tmp_path):
    """--draft without --target keeps the bundled target and codec and loads the given drafter."""
    from models import zoo
    from modalities.speech.cli import load_models
    from modalities.cli import build_parser
    seen = []
    monkeypatch.setattr(SpeechModels, "from_folders", classmethod(lambda cls, *folders: seen.append(folders)))
    load_models(build_parser().parse_args(["bench", "speech", "--draft", str(tmp_path)]))
    bundled = (zoo.path("speech-target"), zoo.path("speech-codec"))
    assert [tuple(map(str, f)) for f in seen] == [tuple(map(str, bundled + (tmp_path,)))]
    with pytest.raises(ValueError, match="--codec"):
        load_models(build_parser().parse_args(["bench", "speech", "--target", str(tmp_path)]))
