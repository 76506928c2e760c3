"""The built-in DADA presets: the four policies published with the paper, as JSON files."""
