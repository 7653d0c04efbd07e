"""The concept-erasure track's text-to-image model: a small diffusers UNet conditioned on MiniLM token states
(trained here on Fashion-MNIST captions), or a real Stable Diffusion pipeline from a local diffusers folder."""

CONCEPT_TRACK = "concept-erasure"
MODALITY = "text-to-image"
