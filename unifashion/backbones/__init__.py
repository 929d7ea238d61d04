"""Offline loaders of the pretrained parts, with a local cache.

``vision``: frozen image encoders; ``text``: MiniLM and Q-Former initialisation;
``llm``: causal LMs; ``diffusion``: Stable Diffusion parts for ``paper``;
``cache``: where converted weights live (``$UNIFASHION_HOME``).
"""
