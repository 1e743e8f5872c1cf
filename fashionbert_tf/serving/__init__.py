"""SavedModel export for TF Serving: `export.export_saved_model`, the serving signatures, warm-up
requests and the op allowlist; the search click model's export is `search_export.py` (docs/serving.md)."""
