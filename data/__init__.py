"""DuckDB storage of prompts, responses and rankings; import and export. The only place SQL lives."""

from data.store import Store, StoreError

__all__ = ["Store", "StoreError"]
