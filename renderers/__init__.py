"""Rendering email images: a RenderPlan of layers in, PNG/JPEG/GIF bytes out."""
