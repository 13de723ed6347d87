"""The adapters (text, VQ image tokens, speech codec tokens), the `multispec` command line and the
benchmark bookkeeping. Built on the core (``multispec``) and the registry (``models.zoo``); knows
nothing about the training recipes."""
