"""Model surgery: grow a model by repeating layers, or cut a drafter from some of the target's layers."""
