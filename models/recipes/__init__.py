"""Recipes: data building, the shared trainer, distillation and model surgery for the bundled models.
The top layer: it may use the core, the registry and the adapters; nothing imports it but tests."""
