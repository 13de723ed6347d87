"""Audio codecs that turn a mono waveform into a grid of discrete codes [T, K] and back, and the
``Codec`` protocol that says what the rest of the speech adapter needs of one.

``Codec`` lists every member the speech adapter, its command line and its bench use; ``MelCodec``
adds ``dequantize`` for codecs whose codes stand for log-mel frames. ``load_codec`` opens a codec
folder and picks the class from its config.json.

``MelRVQCodec`` is the CPU default. It is *not* a neural codec: it is a log-mel spectrogram
(80 bands, 100 frames/s at hop 160) normalised per band, quantised by a residual VQ whose K
codebooks are fitted by k-means, and decoded by de-normalising, inverting the mel filterbank
(``torchaudio.transforms.InverseMelScale``) and estimating phase with Griffin-Lim
(``torchaudio.functional.griffinlim``). It fits in seconds on a CPU and is intelligible, but
sounds phasey. ``HFCodec`` wraps a transformers codec (EnCodec, DAC, Mimi) behind the same
protocol. Codecs know nothing about token ids or models; see ``layouts`` for that.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torchaudio

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
HF_CODEC_TYPES = ("encodec", "dac", "mimi")  # the config.json model_type values HFCodec reads


@runtime_checkable
class Codec(Protocol):
    """What the speech adapter (generation), its command line and its bench need of a codec.
    Codes are frame-major: codes [T, K] long, frame t's code from codebook k in [0, codebook_size).
    ``MelRVQCodec`` and ``HFCodec`` satisfy it; ``isinstance(x, Codec)`` checks the members exist."""

    @property
    def sample_rate(self) -> int:
        """Hz of the waveforms ``decode`` returns (``encode`` resamples its input to it)."""

    @property
    def frame_rate(self) -> float:
        """Code frames per second of audio."""

    @property
    def num_codebooks(self) -> int:
        """K: codes per frame."""

    @property
    def codebook_size(self) -> int:
        """C: every code lies in [0, C)."""

    @property
    def codebooks(self) -> list[torch.Tensor]:
        """K tables [C, D], the vector each code of a level stands for (the ``neighbors``
        acceptance searches them; D may be each codec's own latent size)."""

    def encode(self, wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """wave [n] float in [-1, 1] at ``sample_rate`` -> codes [T, K] long."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [T, K] long, T >= 1 -> wave [n] float at ``self.sample_rate``."""


@runtime_checkable
class MelCodec(Codec, Protocol):
    """Optional extension: a codec whose codes stand for log-mel frames (``MelRVQCodec``; not the
    neural ``HFCodec``, whose codes stand for a learnt latent). The speech bench then measures how
    far a method's output is from plain decoding's on those log-mel frames, with no vocoder."""

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [T, K] long -> log-mel [T, n_mels]."""


CODEC_MEMBERS = tuple(name for name in vars(Codec) if not name.startswith("_"))


@dataclass(frozen=True)
class MelRVQConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 160  # 100 frames/s at 16 kHz
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    num_codebooks: int = 2  # K residual stages
    codebook_size: int = 256
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99
    log_floor: float = 1e-5  # log(max(mel, floor)); mel is a magnitude (power 1) spectrogram


def check_wave(wave: torch.Tensor, sample_rate: int, target_rate: int) -> torch.Tensor:
    """Validate a mono waveform [n] (or [1, n]) of floats and resample it to ``target_rate`` with
    ``torchaudio.functional.resample`` when ``sample_rate`` differs. Returns float32 [n]."""
    wave = torch.as_tensor(wave)
    if wave.dim() == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.dim() != 1:
        raise ValueError(f"expected a mono waveform of shape [n] or [1, n], got shape {tuple(wave.shape)}: "
                         "mix stereo/multi-channel audio down first (e.g. wave.mean(0))")
    if not wave.is_floating_point():
        raise ValueError(f"expected a float waveform in [-1, 1], got dtype {wave.dtype} (divide int16 by 32768)")
    if wave.numel() == 0:
        raise ValueError("empty waveform: nothing to encode")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    wave = wave.float()
    if sample_rate != target_rate:
        wave = torchaudio.functional.resample(wave, sample_rate, target_rate)
    return wave


def check_codes(codes: torch.Tensor, num_codebooks: int, codebook_size: int) -> torch.Tensor:
    """Validate codes [T, K] of integers in [0, codebook_size)."""
    codes = torch.as_tensor(codes)
    if codes.dim() != 2 or codes.shape[1] != num_codebooks:
        raise ValueError(f"expected codes of shape [T, {num_codebooks}], got {tuple(codes.shape)}")
    if codes.is_floating_point() or codes.is_complex():
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size}), got range [{int(codes.min())}, {int(codes.max())}]")
    return codes.long()


def _sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """x [N, D], c [C, D] -> squared distances [N, C]."""
    return (x.square().sum(1, keepdim=True) - 2 * x @ c.T + c.square().sum(1)).clamp_min_(0)


def nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """x [N, D], c [C, D] -> index of the nearest row of c for each row of x, LongTensor [N]."""
    return torch.cat([_sq_dist(x[i:i + chunk], c).argmin(1) for i in range(0, len(x), chunk)]) if len(x) \
        else torch.zeros(0, dtype=torch.long)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means on x [N, D] with k-means++-style seeding from a subsample; empty clusters
    are restarted at the points farthest from their centroid. Returns centroids [k, D]."""
    if len(x) < k:
        raise ValueError(f"k-means needs at least {k} vectors, got {len(x)}: fit on more audio")
    sub = x[torch.randperm(len(x), generator=generator)[:min(len(x), 20 * k)]]
    cent = sub[torch.randint(len(sub), (1,), generator=generator)]
    d2 = _sq_dist(sub, cent).squeeze(1)
    for _ in range(k - 1):  # k-means++ seeding
        j = torch.multinomial(d2 + 1e-12, 1, generator=generator)
        cent = torch.cat([cent, sub[j]])
        d2 = torch.minimum(d2, _sq_dist(sub, sub[j]).squeeze(1))
    for _ in range(iters):
        idx = nearest(x, cent)
        sums = torch.zeros_like(cent).index_add_(0, idx, x)
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        new = sums / counts.clamp_min(1).unsqueeze(1)
        empty = (counts == 0).nonzero().squeeze(1)
        if len(empty):
            err = (x - cent[idx]).square().sum(1)
            new[empty] = x[err.topk(len(empty)).indices]
        cent = new
    return cent


class MelRVQCodec(torch.nn.Module):
    """Log-mel + residual k-means VQ + Griffin-Lim. Buffers: ``mean``/``std`` [D] (per-band
    normalisation of the log-mel) and ``codebook`` [K, C, D] (the residual stages, D = n_mels)."""

    def __init__(self, config: MelRVQConfig, mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 codebook: torch.Tensor | None = None):
        super().__init__()
        self.config = c = config
        self.mel = torchaudio.transforms.MelSpectrogram(c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                                                        f_min=c.f_min, f_max=c.f_max, n_mels=c.n_mels, power=1.0)
        self.inverse_mel = torchaudio.transforms.InverseMelScale(c.n_fft // 2 + 1, n_mels=c.n_mels,
                                                                 sample_rate=c.sample_rate, f_min=c.f_min, f_max=c.f_max)
        self.register_buffer("window", torch.hann_window(c.n_fft), persistent=False)
        shape = (c.num_codebooks, c.codebook_size, c.n_mels)
        self.register_buffer("mean", torch.zeros(c.n_mels) if mean is None else mean.float())
        self.register_buffer("std", torch.ones(c.n_mels) if std is None else std.float())
        self.register_buffer("codebook", torch.zeros(shape) if codebook is None else codebook.float())
        if tuple(self.codebook.shape) != shape:
            raise ValueError(f"codebook shape {tuple(self.codebook.shape)} does not match the config's {shape}")

    # ---- properties -----------------------------------------------------------------------
    sample_rate = property(lambda self: self.config.sample_rate)
    frame_rate = property(lambda self: self.config.sample_rate / self.config.hop_length)
    num_codebooks = property(lambda self: self.config.num_codebooks)
    codebook_size = property(lambda self: self.config.codebook_size)
    codebooks = property(lambda self: list(self.codebook.unbind(0)), doc="K tables [C, D] in normalised log-mel space")

    # ---- features -------------------------------------------------------------------------
    @torch.no_grad()
    def log_mel(self, wave: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """wave [n] float -> log-mel [T, n_mels], T = n // hop + 1 (centred frames)."""
        wave = check_wave(wave, sample_rate or self.sample_rate, self.sample_rate)
        return self.mel(wave).clamp_min(self.config.log_floor).log().T

    @torch.no_grad()
    def mel_to_wave(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log-mel [T, n_mels] -> wave [(T - 1) * hop] by InverseMelScale + Griffin-Lim.
        Griffin-Lim starts from zero phase, so decoding is deterministic."""
        c = self.config
        spec = self.inverse_mel(log_mel.T.exp()).clamp_min(0)  # [n_fft // 2 + 1, T] magnitudes
        return torchaudio.functional.griffinlim(spec, self.window, c.n_fft, c.hop_length, c.n_fft, 1.0,
                                                c.griffin_lim_iters, c.griffin_lim_momentum,
                                                (log_mel.shape[0] - 1) * c.hop_length, False)

    # ---- codes ----------------------------------------------------------------------------
    @torch.no_grad()
    def quantize(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log-mel [T, n_mels] -> codes [T, K] (greedy residual nearest-neighbour search)."""
        residual = (log_mel - self.mean) / self.std
        codes = []
        for table in self.codebook:
            idx = nearest(residual, table)
            residual = residual - table[idx]
            codes.append(idx)
        return torch.stack(codes, 1)

    @torch.no_grad()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [T, K] -> log-mel [T, n_mels]."""
        codes = check_codes(codes, self.num_codebooks, self.codebook_size)
        z = sum(self.codebook[k][codes[:, k]] for k in range(self.num_codebooks))
        return z * self.std + self.mean

    def encode(self, wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """wave [n] float at ``sample_rate`` (resampled if it is not 16 kHz) -> codes [T, K] long,
        T = n' // hop + 1 where n' is the length after resampling."""
        return self.quantize(self.log_mel(wave, sample_rate))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [T, K] -> wave [(T - 1) * hop] float at ``sample_rate``."""
        if len(codes) == 0:
            raise ValueError("no frames to decode")
        return self.mel_to_wave(self.dequantize(codes))

    # ---- fitting and persistence ----------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def fit(cls, waves: list[torch.Tensor], config: MelRVQConfig = MelRVQConfig(), sample_rate: int | None = None,
            max_frames: int = 200_000, iters: int = 25, generator: torch.Generator | None = None) -> MelRVQCodec:
        """Fit normalisation statistics and the K codebooks (k-means on the residual of the
        previous stages) on up to ``max_frames`` log-mel frames of ``waves`` (each [n] float)."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        codec = cls(config)
        frames = torch.cat([codec.log_mel(w, sample_rate or config.sample_rate) for w in waves])
        if len(frames) > max_frames:
            frames = frames[torch.randperm(len(frames), generator=generator)[:max_frames]]
        codec.mean.copy_(frames.mean(0))
        codec.std.copy_(frames.std(0).clamp_min(1e-3))
        residual = (frames - codec.mean) / codec.std
        for k in range(config.num_codebooks):
            codec.codebook[k] = kmeans(residual, config.codebook_size, iters, generator)
            residual = residual - codec.codebook[k][nearest(residual, codec.codebook[k])]
        return codec

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps({"codec": "MelRVQCodec", **asdict(self.config)}, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items() if k in ("mean", "std", "codebook")},
                  str(folder / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> MelRVQCodec:
        from safetensors.torch import load_file
        folder = Path(folder)
        cfg = json.loads((folder / CONFIG_NAME).read_text())
        if cfg.pop("codec", "MelRVQCodec") != "MelRVQCodec":
            raise ValueError(f"{folder / CONFIG_NAME} does not describe a MelRVQCodec")
        tensors = load_file(str(folder / WEIGHTS_NAME))
        return cls(MelRVQConfig(**cfg), tensors["mean"], tensors["std"], tensors["codebook"])


class HFCodec:
    """A transformers codec model (``EncodecModel``, ``DacModel``, ``MimiModel``) as a ``Codec``:
    ``encode(wave [n], sample_rate) -> codes [T, K]``, ``decode(codes [T, K]) -> wave [n]``, using
    the first K of the model's quantisers. Not a ``MelCodec``: its codes stand for a learnt latent,
    not log-mel frames. EnCodec models that chunk the input or normalise the loudness (the 48 kHz
    one) are not supported, since their codes need per-chunk scales."""

    def __init__(self, model: torch.nn.Module, num_codebooks: int | None = None):
        from transformers import DacModel, EncodecModel, MimiModel
        self.model, cfg = model.eval(), model.config
        if isinstance(model, EncodecModel):
            if cfg.chunk_length is not None or cfg.normalize:
                raise ValueError("HFCodec supports EnCodec models without chunking and loudness normalisation")
            per_kbps = {min(model.quantizer.get_num_quantizers_for_bandwidth(b), cfg.num_quantizers): b
                        for b in cfg.target_bandwidths}
            k = num_codebooks or min(per_kbps)
            if k not in per_kbps:
                raise ValueError(f"EnCodec supports {sorted(per_kbps)} codebooks (one per bandwidth), not {k}")
            self._kind, self._bandwidth, frame_rate = "encodec", per_kbps[k], cfg.frame_rate
        elif isinstance(model, (DacModel, MimiModel)):
            self._kind = "dac" if isinstance(model, DacModel) else "mimi"
            available = cfg.n_codebooks if self._kind == "dac" else cfg.num_quantizers
            k = num_codebooks or available
            if not 1 <= k <= available:
                raise ValueError(f"this {type(model).__name__} has {available} codebooks; cannot use {k}")
            frame_rate = cfg.sampling_rate / cfg.hop_length if self._kind == "dac" else cfg.frame_rate
        else:
            raise ValueError(f"HFCodec supports EncodecModel, DacModel and MimiModel, not {type(model).__name__}")
        self.num_codebooks, self.codebook_size = k, cfg.codebook_size
        self.sample_rate, self.frame_rate = cfg.sampling_rate, float(frame_rate)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, num_codebooks: int | None = None, **kwargs) -> HFCodec:
        """A Hugging Face codec folder (or hub name) with safetensors weights; K = ``num_codebooks``
        (the model's default when None). Weights that do not match the config raise ValueError."""
        from transformers import AutoModel
        kwargs = {"dtype": torch.float32, **kwargs, "use_safetensors": True, "output_loading_info": True}
        model, info = AutoModel.from_pretrained(name_or_path, **kwargs)
        problems = {key: info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(key)}
        if problems:
            raise ValueError(f"codec {name_or_path}: weights do not match the model: {problems}")
        return cls(model, num_codebooks)

    @property
    def codebooks(self) -> list[torch.Tensor]:
        """The K code tables [C, D] (in each model's own quantiser space), detached."""
        q = self.model.quantizer
        if self._kind == "dac":
            return [layer.codebook.weight.detach() for layer in q.quantizers[:self.num_codebooks]]
        if self._kind == "mimi":
            layers = list(q.semantic_residual_vector_quantizer.layers) + list(q.acoustic_residual_vector_quantizer.layers)
        else:
            layers = list(q.layers)
        return [layer.codebook.embed.detach() for layer in layers[:self.num_codebooks]]

    @torch.no_grad()
    def encode(self, wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """wave [n] float (resampled to the model's rate) -> codes [T, K] long."""
        x = check_wave(wave, sample_rate, self.sample_rate)[None, None]  # [1, 1, n]
        if self._kind == "encodec":
            codes = self.model.encode(x, bandwidth=self._bandwidth).audio_codes[0, 0]  # [K, T]
        elif self._kind == "dac":
            codes = self.model.encode(x, n_quantizers=self.num_codebooks).audio_codes[0, :self.num_codebooks]
        else:
            codes = self.model.encode(x, num_quantizers=self.num_codebooks).audio_codes[0]
        return codes.T.long().contiguous()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [T, K] -> wave [n] float at ``sample_rate``."""
        codes = check_codes(codes, self.num_codebooks, self.codebook_size).T[None]  # [1, K, T]
        if codes.shape[-1] == 0:
            raise ValueError("no frames to decode")
        if self._kind == "encodec":
            audio = self.model.decode(codes[None], [None]).audio_values
        else:
            audio = self.model.decode(audio_codes=codes).audio_values
        return audio.reshape(-1)


def load_codec(folder: str | Path, num_codebooks: int | None = None) -> Codec:
    """The codec in ``folder``, its class picked from config.json: ``"codec": "MelRVQCodec"`` (a
    folder ``MelRVQCodec.save`` wrote) or a Hugging Face ``model_type`` of encodec, dac or mimi
    (``save_pretrained``). ``num_codebooks`` picks K for a Hugging Face codec (its default when
    None); a MelRVQ folder fixes its own K. Anything else raises ValueError naming the problem."""
    folder = Path(folder)
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise ValueError(f"{folder} has no {CONFIG_NAME}: not a codec folder (expected a MelRVQCodec folder "
                         f"or a Hugging Face {'/'.join(HF_CODEC_TYPES)} folder)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{folder} has no .safetensors weights (codec weights are loaded from safetensors only)")
    if "codec" in config:
        if config["codec"] != "MelRVQCodec":
            raise ValueError(f"{config_file} names codec {config['codec']!r}; the multispec codec is MelRVQCodec")
        return MelRVQCodec.from_pretrained(folder)
    model_type = config.get("model_type")
    if model_type in HF_CODEC_TYPES:
        return HFCodec.from_pretrained(folder, num_codebooks)
    if model_type is None:
        raise ValueError(f"{config_file} has neither \"codec\": \"MelRVQCodec\" nor a Hugging Face model_type: "
                         "not a codec folder")
    raise ValueError(f"{config_file} has model_type {model_type!r}, not a codec multispec reads "
                     f"(Hugging Face {', '.join(HF_CODEC_TYPES)}, or MelRVQCodec)")
