"""Speech recipes: flite-synthesised data, the codec fit and the phone-aligned token dump."""
