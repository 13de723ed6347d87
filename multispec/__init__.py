"""multispec: draft-then-verify (speculative) decoding on one modality-agnostic core.

The core needs only torch and transformers and knows nothing about the adapters (``modalities``),
the registry or the recipes (``models``).

    result = multispec.generate(target, input_ids, drafter=DraftModel(small), max_new_tokens=64)
"""
from . import acceptance, drafters
from .acceptance import (AdditiveTolerance, GroupAcceptance, Greedy, NeighborhoodRelaxation,
                         SpeculativeSampling, TopKTolerance, TypicalAcceptance)
from .decoding import GenerationResult, Step, generate, stream
from .drafters import Drafter, DraftModel, Jacobi, LayerSkip, PromptLookup
from .guidance import GuidedLM
from .lm import CachedLM, Verifier
from .methods import Method
from .stats import DecodingStats

__all__ = [
    "generate", "stream", "GenerationResult", "Step", "DecodingStats", "CachedLM", "Verifier",
    "GuidedLM", "Method", "acceptance", "drafters", "Drafter", "DraftModel", "PromptLookup", "LayerSkip", "Jacobi", "Greedy",
    "SpeculativeSampling", "TypicalAcceptance", "TopKTolerance", "NeighborhoodRelaxation", "GroupAcceptance",
    "AdditiveTolerance",
]
__version__ = "0.1.0"
