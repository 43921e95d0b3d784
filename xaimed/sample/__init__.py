"""Sample study: phantom generator and the tiny 3D CNN it trains."""
