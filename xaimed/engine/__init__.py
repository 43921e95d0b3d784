"""Running the model: pass counting, precision, batch sizing under a memory budget."""
