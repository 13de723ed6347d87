"""Check an EAGLE-3 export with the format's own code: PyPI ``speculators`` loads the exported
checkpoint, and its forward's logits must equal multispec's head on the same target features.

speculators 0.9.0 pins transformers <= 5.19, so run this in a separate environment that also holds
this repository's requirements (torch, transformers >= 5.17, safetensors):

    python -m venv /work/venv-spec && /work/venv-spec/bin/pip install speculators==0.9.0
    PYTHONPATH=. /work/venv-spec/bin/python -m models.recipes.serving.speculators_check \\
        --target smollm2-135m-instruct --head models/checkpoints/smollm2-135m-instruct-eagle3 --out runs/export

It exports the head twice (EAGLE-3 for vLLM/SGLang, and the speculators format), loads the
speculators one with ``Eagle3DraftModel.from_pretrained`` (eager attention), runs one TTT step over
the target's own features of a held-out text and compares the logits of speculators' LM head with
the head's draft logits; it writes ``speculators_check.json`` beside the exports.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--head", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--text", default="Speculative decoding drafts several tokens with a small model and lets "
                                      "the large model check them all in one forward pass, so that")
    args = ap.parse_args(argv)
    import speculators
    from speculators.models.eagle3 import Eagle3DraftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers

    from models import export, zoo
    from models.feature_heads import load_head

    target_folder = zoo.resolve(args.target)
    target = AutoModelForCausalLM.from_pretrained(target_folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(target_folder)
    head = load_head(zoo.resolve(args.head), target).eval()
    eagle3_dir = export.export_eagle3(head, target, args.out / "eagle3", str(target_folder), dtype=torch.float32)
    spec_dir = export.export_eagle3(head, target, args.out / "speculators", str(target_folder), speculators=True,
                                    dtype=torch.float32)

    ids = tokenizer(args.text, return_tensors="pt").input_ids  # [1, T]
    with torch.no_grad():
        states = target(ids, output_hidden_states=True).hidden_states
        aux = torch.cat([states[i] for i in head.feature_layers], dim=-1)  # [1, T, 3H]
        n = ids.shape[1] - 1  # position i pairs the feature at i with token i + 1
        ours, _ = head.step(ids[:, 1:], head.fuse(aux[:, :n]), head.new_cache(), torch.arange(n)[None])

        model = Eagle3DraftModel.from_pretrained(spec_dir, attn_implementation="eager").eval()
        exported = json.loads((spec_dir / "config.json").read_text())
        captured = {}
        model.lm_head.register_forward_hook(lambda _m, _i, out: captured.setdefault("logits", out))
        model(hidden_states=aux[:, :n], input_ids=ids[:, 1:], document_ids=torch.zeros(1, n, dtype=torch.long),
              position_ids=torch.arange(n)[None], ttt_steps=1)
    theirs = captured["logits"]
    from safetensors.torch import load_file
    written = load_file(str(spec_dir / "model.safetensors"))
    report = {
        "speculators": speculators.__version__ if hasattr(speculators, "__version__") else "0.9.0",
        "transformers": transformers.__version__, "target": str(target_folder), "head": str(args.head),
        "positions": n, "feature_layers": list(head.feature_layers),
        "aux_layer_ids_after_load": list(model.config.eagle_aux_hidden_state_layer_ids or []),
        "lm_head_as_written": bool(torch.equal(model.lm_head.weight.float(), written["lm_head.weight"].float())),
        "max_abs_logit_diff": float((theirs - ours).abs().max()),
        "max_abs_logit": float(ours.abs().max()),
        "argmax_agreement": float((theirs.argmax(-1) == ours.argmax(-1)).float().mean()),
        "config_keys": sorted(exported), "eagle3_dir": str(eagle3_dir), "speculators_dir": str(spec_dir),
    }
    (args.out / "speculators_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if report["argmax_agreement"] == 1.0 and report["max_abs_logit_diff"] < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
