"""The five DVC stage entry points, one module each: python -m pipeline.stages.<stage>."""
