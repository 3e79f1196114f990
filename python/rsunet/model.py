"""The U-Net and its losses (Keras 3)."""

from __future__ import annotations


def custom_objects() -> dict:
    """rsunet's serialisable losses and metrics, by name, for loading saved models."""
    return {}
