"""Model formats beyond a single TorchScript file or architecture + weights.

One module per format (``nnunet``: nnU-Net v2 results folders), the ensemble wrapper every
multi-member format shares (``ensemble``), safe checkpoint loading (``checkpoint``) and the config
schema of these sections (``schema``, imported by :mod:`xaimed.config`, so it imports nothing of
xaimed). :func:`xaimed.model.load_model` dispatches here; nothing here imports :mod:`xaimed.model`.
"""
