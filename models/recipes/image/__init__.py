"""Image recipes: the emoji data set, the VQ tokenizer, the token dump and the in-domain classifier."""
