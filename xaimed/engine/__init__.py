"""Running the model: pass counting, precision, batch sizing under a memory budget.

Also the model's composition for methods (tiled inference, segmentation target reduction) and
batched evaluation of perturbed inputs.
"""
