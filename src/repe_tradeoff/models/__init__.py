"""Models: load any causal LM (the embedded default, a hub id, a folder, a .gguf file through the GGUF
cache), find its parts (decoder blocks, final norm, unembedding), parse layer specs, and format prompts
as the model sees them. The only package that knows architecture names; imports nothing above it
(``runs`` only for atomic writes and the folder lock)."""
