"""The layers hold: recipes > adapters, command line and benches > registry > core; the command line
and benches sit above the adapters; the adapters do not import each other; the core needs only
torch and transformers. The contracts live in pyproject.toml ([tool.importlinter])."""
import pathlib

from importlinter.cli import lint_imports

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0, \
        "an import crosses a layer: run `lint-imports` for the chain"


def test_models_folder_holds_no_loose_files():
    """models/ holds the registry, the model definitions the registry loads (the feature head), their
    export to serving formats, the recipes, checkpoints, data and results; nothing else at its top."""
    top = sorted(p.name for p in (ROOT / "models").iterdir() if p.name != "__pycache__")
    assert top == ["__init__.py", "checkpoints", "data", "export.py", "feature_heads.py", "pretrained.py", "recipes",
                   "results", "token_meta.py", "zoo.py"]
