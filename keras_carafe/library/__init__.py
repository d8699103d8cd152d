"""Building, caching and loading the compiled reassembly op."""
