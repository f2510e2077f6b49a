"""Shared glue of RLHF Studio: paths, model loading and the `rlhf-studio` command."""
